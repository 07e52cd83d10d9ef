"""A demo producer: random-walk values posted to a pushsvc server, round-robin over topics.

Run as `python -m pushsvc.demo --url http://127.0.0.1:8000 --rate 5 --topics demo.orders`.
It waits for the server (connection errors, 5xx and 429 are retried with a short
backoff and a log line), which is what a freshly started docker-compose stack needs,
and exits 0 after `--count` events or on SIGTERM/SIGINT. A 4xx other than 429 means
the demo itself is wrong (bad topic, bad URL path) and ends it with status 1.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from types import FrameType
from urllib.parse import quote

import click

from pushsvc.errors import InvalidTopic
from pushsvc.lists import comma_list
from pushsvc.topics import validate_topic

log = logging.getLogger("pushsvc.demo")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
REQUEST_TIMEOUT_S = 5.0


class NotReady(Exception):
    """The server is not up yet (or briefly unable to accept events): worth retrying."""


class Rejected(Exception):
    """The server refused the event for good (a 4xx): retrying would not help."""


class Terminated(Exception):
    """SIGTERM arrived; raised from the handler so that a sleep or a request ends at once."""


def random_walks(topics: Sequence[str], rng: random.Random) -> Iterator[tuple[str, float]]:
    """(topic, value) forever, round-robin over topics; each topic walks on its own."""
    values = dict.fromkeys(topics, 100.0)
    while True:
        for topic in topics:
            values[topic] += rng.gauss(0.0, 1.0)
            yield topic, round(values[topic], 3)


def post_event(base_url: str, topic: str, value: float) -> None:
    """POST one event; raises NotReady or Rejected unless the server answers 202."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/topics/{quote(topic, safe='')}/events",
        data=json.dumps({"value": value}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        if exc.code >= 500 or exc.code == 429:
            raise NotReady(f"HTTP {exc.code}: {detail}") from None
        raise Rejected(f"HTTP {exc.code} for topic {topic!r}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        # URLError wraps refused connections and unknown hosts; OSError covers timeouts.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise NotReady(str(reason)) from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason


def run(
    base_url: str,
    topics: Sequence[str],
    rate: float,
    count: int | None = None,
    seed: int | None = None,
) -> int:
    """Post `count` events (forever when None) at `rate` per second; returns how many were posted.

    Raises Rejected when the server refuses an event for good.
    """
    interval = 1.0 / rate
    walks = random_walks(topics, random.Random(seed))
    posted = 0
    backoff = FIRST_BACKOFF_S
    next_at = time.monotonic()
    while count is None or posted < count:
        topic, value = next(walks)
        while True:
            try:
                post_event(base_url, topic, value)
                break
            except NotReady as exc:
                log.warning("%s not ready (%s); retrying in %.1fs", base_url, exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        if backoff != FIRST_BACKOFF_S:
            log.warning("%s is up; posting", base_url)
            backoff = FIRST_BACKOFF_S
        posted += 1
        # Keep the rate without a burst to catch up after a wait for the server.
        next_at = max(next_at + interval, time.monotonic())
        if count is None or posted < count:
            time.sleep(max(0.0, next_at - time.monotonic()))
    return posted


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _topics(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = comma_list(value)
    if not names:
        raise click.BadParameter("give at least one topic")
    try:
        return tuple(validate_topic(name) for name in names)
    except InvalidTopic as exc:
        raise click.BadParameter(exc.message) from None


@click.command()
@click.option(
    "--url",
    envvar="PUSHSVC_DEMO_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Base URL of a pushsvc server [env PUSHSVC_DEMO_URL].",
)
@click.option(
    "--rate",
    envvar="PUSHSVC_DEMO_RATE",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Events per second, over all topics [env PUSHSVC_DEMO_RATE].",
)
@click.option(
    "--topics",
    envvar="PUSHSVC_DEMO_TOPICS",
    default="demo.orders,demo.latency",
    show_default=True,
    callback=_topics,
    help="Comma-separated topics, posted to in turn [env PUSHSVC_DEMO_TOPICS].",
)
@click.option(
    "--count",
    envvar="PUSHSVC_DEMO_COUNT",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many events (default: run until SIGTERM) [env PUSHSVC_DEMO_COUNT].",
)
@click.option(
    "--seed",
    envvar="PUSHSVC_DEMO_SEED",
    type=int,
    default=None,
    help="Random seed, for a repeatable walk [env PUSHSVC_DEMO_SEED].",
)
def main(
    url: str, rate: float, topics: tuple[str, ...], count: int | None, seed: int | None
) -> None:
    """Post random-walk values to a pushsvc server, e.g. the docker-compose stack's web1."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        log.warning("posting %g events/s to %s on %s", rate, url, ", ".join(topics))
        posted = run(url, topics, rate, count, seed)
    except (Terminated, KeyboardInterrupt):
        log.warning("stopped by signal")
    except Rejected as exc:
        raise click.ClickException(str(exc)) from None
    else:
        log.warning("posted %d events", posted)


if __name__ == "__main__":
    main(prog_name="python -m pushsvc.demo")
