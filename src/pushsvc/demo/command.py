"""`pushsvc demo` and `python -m pushsvc.demo`: one click command, two names.

It waits for the server (connection errors, 5xx and 429 are retried with a backoff and a log
line, `Retry-After` honoured), which is what a freshly started docker-compose stack needs, and
exits 0 after `--count` events, after `--duration`, or on SIGTERM/SIGINT. A 4xx other than 429
means the demo itself is wrong (bad token, bad URL path) and ends it with status 1.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import click

from pushsvc.core.lists import comma_list
from pushsvc.core.topics import validate_topic
from pushsvc.errors import InvalidTopic

log = logging.getLogger("pushsvc.demo")


class Terminated(Exception):
    """SIGTERM arrived; raised from the handler so that a sleep or a request ends at once."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _walk_topics(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = comma_list(value)
    if not names:
        raise click.BadParameter("give at least one topic")
    try:
        return tuple(validate_topic(name) for name in names)
    except InvalidTopic as exc:
        raise click.BadParameter(exc.message) from None


def _prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from pushsvc.demo.scenario import topic_names

    try:
        for name in topic_names(value):
            validate_topic(name)
    except InvalidTopic as exc:
        raise click.BadParameter(exc.message) from None
    return value


def _start(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from pushsvc.demo.clock import parse_time_of_day

    if value is None:
        return None  # now
    try:
        return parse_time_of_day(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from pushsvc.core.durations import parse_duration_us

    if value is None:
        return None
    try:
        seconds = parse_duration_us(value) / 1e6
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("must be longer than 0")
    return seconds


SCENARIO_ONLY = ("speed", "start", "prefix", "backfill")


@click.command("demo")
@click.option(
    "--url",
    envvar=["PUSHSVC_DEMO_URL", "PUSHSVC_URL"],
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Base URL of a pushsvc server [env PUSHSVC_DEMO_URL, PUSHSVC_URL].",
)
@click.option(
    "--token",
    envvar="PUSHSVC_TOKEN",
    help="A token allowed to publish the demo's topics, sent as Authorization: Bearer "
    "[env PUSHSVC_TOKEN].",
)
@click.option(
    "--speed",
    envvar="PUSHSVC_DEMO_SPEED",
    type=click.FloatRange(min=1, max=86_400),
    default=1.0,
    show_default=True,
    help="Simulated seconds per second, 1 or more: 60 runs an hour a minute, 1440 a day a "
    "minute. Events carry their simulated time, so above 1 it runs ahead of the clock "
    "[env PUSHSVC_DEMO_SPEED].",
)
@click.option(
    "--start",
    envvar="PUSHSVC_DEMO_START",
    callback=_start,
    help="Simulated time of day to begin at, HH:MM, e.g. 11:45 to begin before lunch: the "
    "latest time the local clock (TZ) showed it, today or yesterday (default: now) "
    "[env PUSHSVC_DEMO_START].",
)
@click.option(
    "--rate",
    envvar="PUSHSVC_DEMO_RATE",
    type=click.FloatRange(min=0, min_open=True, max=100_000),
    default=20.0,
    show_default=True,
    help="Events per second at most, over all topics (reached at the busiest hours) "
    "[env PUSHSVC_DEMO_RATE].",
)
@click.option(
    "--count",
    envvar="PUSHSVC_DEMO_COUNT",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many events, once live (after a backfill) [env PUSHSVC_DEMO_COUNT].",
)
@click.option(
    "--duration",
    envvar="PUSHSVC_DEMO_DURATION",
    callback=_duration,
    help="Stop after this long live (after a backfill), e.g. 30s, 10m (default: run until "
    "SIGTERM or Ctrl-C) [env PUSHSVC_DEMO_DURATION].",
)
@click.option(
    "--seed",
    envvar="PUSHSVC_DEMO_SEED",
    type=int,
    default=None,
    help="Random seed: the same seed, --start, --speed, --rate and --backfill post the same "
    "events [env PUSHSVC_DEMO_SEED].",
)
@click.option(
    "--prefix",
    envvar="PUSHSVC_DEMO_PREFIX",
    default="",
    callback=_prefix,
    help="Put before every topic name, e.g. 'demo.' [env PUSHSVC_DEMO_PREFIX].",
)
@click.option(
    "--topics",
    envvar="PUSHSVC_DEMO_TOPICS",
    default=None,
    callback=_walk_topics,
    help="Instead of the restaurant and the shop: a random walk on each of these "
    "comma-separated topics, posted to in turn, one event per request, stamped by the "
    "server (a plain smoke-test producer) [env PUSHSVC_DEMO_TOPICS].",
)
@click.option(
    "--backfill",
    envvar="PUSHSVC_DEMO_BACKFILL",
    callback=_duration,
    help="First post this much simulated time before --start, e.g. 6h: six hours of event "
    "time, at --speed and --rate as if the demo had run then, posted as fast as the server "
    "takes it (so charts of hours show it at once), then go live. Into topics without newer "
    "events: a fresh server, or another --prefix [env PUSHSVC_DEMO_BACKFILL].",
)
@click.pass_context
def demo(
    ctx: click.Context,
    url: str,
    token: str | None,
    speed: float,
    start: float | None,
    rate: float,
    count: int | None,
    duration: float | None,
    seed: int | None,
    prefix: str,
    topics: tuple[str, ...] | None,
    backfill: float | None,
) -> None:
    """Post a live, realistic workload: a restaurant's order latencies per kitchen station
    (lunch and dinner rushes), ratings per dish (slow drift, the odd bad batch), and a web
    shop's page views, session lengths and checkout values (flash-sale bursts), on a simulated
    day that runs --speed times faster than the machine's clock. Each event carries its
    simulated time on the local clock (TZ): a dashboard in that time zone shows the lunch rush
    at 12:45."""
    from pushsvc.demo.publisher import Publisher, Rejected
    from pushsvc.demo.runner import RunLimits, run_scenario, run_walk

    if topics is not None:
        given = [
            name for name in SCENARIO_ONLY
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]  # fmt: skip
        if given:
            raise click.UsageError(f"--{given[0]} is for the scenario: not with --topics")
    from pushsvc.ops.logs import configure

    configure("text")  # as the server logs: credentials redacted, no line per POST
    signal.signal(signal.SIGTERM, _terminate)
    publisher = Publisher(url, token)
    limits = RunLimits(count, duration)
    try:
        if topics is not None:
            log.warning("posting %g events/s to %s on %s", rate, url, ", ".join(topics))
            posted = run_walk(publisher, topics, rate, limits, seed)
        else:
            from pushsvc.core.durations import duration_label as format_duration
            from pushsvc.demo.clock import SimClock, day_anchor
            from pushsvc.demo.scenario import Scenario, topic_names

            start_s, epoch_s = day_anchor(time.time(), start)
            newest = publisher.newest(topic_names(prefix))
            if newest is not None and newest >= epoch_s and backfill is None:
                # Run before (a restart): a topic's clock never goes back, so earlier events
                # would be refused as late. The day goes on from where it stands.
                start_s, epoch_s = day_anchor(newest, None)
                log.warning(
                    "the demo's topics already have events up to %s: the day goes on from there",
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(newest)),
                )
            began = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch_s))
            log.warning(
                "posting up to %g events/s to %s: the restaurant and the shop from %s, "
                "%gx real time, on %d topics (%s…)",
                rate, url, began, speed, len(topic_names()), topic_names(prefix)[0],
            )  # fmt: skip
            behind = backfill or 0.0
            if behind:
                span = format_duration(round(behind * 1e6))
                log.warning("backfilling the %s of simulated time before that", span)
            clock = SimClock(start_s - behind, speed, epoch_s - behind)
            scenario = Scenario(clock, rate, seed, prefix)
            posted = run_scenario(publisher, scenario, limits, behind_s=behind / speed)
    except (Terminated, KeyboardInterrupt):
        log.warning("stopped by signal")
    except Rejected as exc:
        raise click.ClickException(str(exc)) from None
    else:
        log.warning("posted %d events", posted)
    finally:
        publisher.close()
