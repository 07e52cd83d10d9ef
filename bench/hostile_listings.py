"""A legitimate producer's POST latency while anonymous callers list the topics.

One `pushsvc serve` (embedded broker, auth off: every caller may list everything), or with
`--redis` a `pushsvc web` beside a `pushsvc aggregate` on a redis-server of its own, holds
`--topics` topics, one event each. A producer POSTs one event at a time to its own topic on
a keep-alive connection, first alone (`baseline`), then while `--callers` processes crawl
`GET /topics` as fast as they can: each follows `next` from the first page to the last at
the largest `?limit=`, then starts again (on a server without pages, each call answers every
topic). The figure is the producer's p50/p99 in each phase, and how many listing calls the
callers made.

    python -m bench.hostile_listings                          # 100,000 topics, 8 callers
    python -m bench.hostile_listings --topics 20000 --seconds 10 --json
    python -m bench.hostile_listings --src /tmp/old/src       # another tree's pushsvc
    python -m bench.hostile_listings --redis                  # a web process on Redis

Stand-alone on purpose: it starts its server and callers with the standard library only
(nothing from tests/), so it runs against any tree's `src/`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from bench.standalone import SRC, latency_summary, serving

PAGE = 1000  # GET /topics' largest ?limit=, the callers' default
BODY = b'{"value": 1.5}'
HEADERS = {"Content-Type": "application/json"}


def post(conn: http.client.HTTPConnection, topic: str) -> None:
    conn.request("POST", f"/topics/{quote(topic, safe='')}/events", BODY, HEADERS)
    answer = conn.getresponse()
    answer.read()
    if answer.status != 202:
        raise RuntimeError(f"POST {topic}: {answer.status}")


def create(port: int, names: Sequence[str]) -> None:
    """One event each, on one keep-alive connection (run in a worker process)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for name in names:
        post(conn, name)
    conn.close()


def crawl(port: int, page: int, until: float, calls: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    """List every topic again and again, a page of `page` at a time (run in a caller
    process)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    after: str | None = None
    made = 0
    while time.monotonic() < until:
        path = f"/topics?limit={page}" + ("" if after is None else f"&after={quote(after)}")
        conn.request("GET", path)
        answer = conn.getresponse()
        body = answer.read()
        made += 1
        # `next` is the answer's last field: read from its end, not by parsing the page, so
        # that the callers spend their CPU asking, not on the cores the server needs.
        after = json.loads(body[body.rindex(b'"next":') + 7 : -1]) if answer.status == 200 else None
    with calls.get_lock():
        calls.value += made


def produce(port: int, seconds: float) -> list[float]:
    """POST latencies (s) of one producer for `seconds`, one request at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    took = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.perf_counter()
        post(conn, "producer")
        took.append(time.perf_counter() - started)
    conn.close()
    return took


def run(
    src: Path, topics: int, callers: int, seconds: float, page: int, redis: bool = False
) -> dict[str, object]:
    ctx = multiprocessing.get_context("spawn")
    room = str(topics + 10)  # the web's limit, and the aggregator's on Redis
    limit = {"PUSHSVC_MAX_TOPICS": room}
    with serving(src, redis=redis, args=["--max-topics", room], settings=limit) as (_, port):
        names = [f"t{n:06d}" for n in range(topics)]
        started = time.monotonic()
        makers = [ctx.Process(target=create, args=(port, names[i::4])) for i in range(4)]
        for maker in makers:
            maker.start()
        for maker in makers:
            maker.join()
            if maker.exitcode != 0:
                raise RuntimeError("creating the topics failed")
        created_s = round(time.monotonic() - started, 1)
        baseline = latency_summary(produce(port, seconds))
        calls = ctx.Value("i", 0)
        until = time.monotonic() + seconds + 2
        crawlers = [
            ctx.Process(target=crawl, args=(port, page, until, calls)) for _ in range(callers)
        ]
        for crawler in crawlers:
            crawler.start()
        time.sleep(1)  # every caller under way
        attacked = latency_summary(produce(port, seconds))
        for crawler in crawlers:
            crawler.join()
        return {
            "server": "web on Redis" if redis else "serve",
            "topics": topics,
            "callers": callers,
            "page": page,
            "seconds": seconds,
            "created_s": created_s,
            "baseline": baseline,
            "attacked": attacked,
            "listing_calls": calls.value,
        }


def main(argv: Sequence[str] | None = None) -> None:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--topics", type=int, default=100_000)
    cli.add_argument("--callers", type=int, default=8)
    cli.add_argument("--page", type=int, default=PAGE, help="the callers' ?limit=")
    cli.add_argument("--seconds", type=float, default=15.0, help="per phase")
    cli.add_argument("--redis", action="store_true", help="pushsvc web + aggregate on Redis")
    cli.add_argument("--src", type=Path, default=SRC, help="the src/ of the pushsvc to run")
    cli.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = cli.parse_args(argv)
    result = run(args.src, args.topics, args.callers, args.seconds, args.page, args.redis)
    result["src"] = str(args.src)
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['topics']} topics (created in {result['created_s']} s), src {args.src}")
    for phase in ("baseline", "attacked"):
        print(f"  {phase:<9} {result[phase]}")
    print(f"  {args.callers} callers made {result['listing_calls']} listing calls")


if __name__ == "__main__":
    main()
