"""What a topic costs the aggregator: bytes and CPU per topic that carries only messages, the
shape of a channel per user.

    python -m bench.topic_cost                  # 10,000 topics, one message each, a table
    python -m bench.topic_cost --topics 100000 --json
    python -m bench.topic_cost --http [--pushsvc-src DIR]  # RSS of a `pushsvc serve`

`--http`: a `pushsvc serve` (memory broker, this interpreter, `--pushsvc-src`'s tree first on
the path for a before/after) given one message a topic by single POSTs on one keep-alive
connection after 200 topics of warm-up; its RSS delta per topic, two seconds after the last.

The aggregator alone (`Aggregator` with the server's default rules: `Settings.load({}, {})`),
a wall clock injected. One pass makes each topic `u{i}` with one message; a second gives each a
second message. Bytes are `tracemalloc`'s after the drafts are dropped (as a broker drops them
once published) and a collection, per topic, with the files holding the most; CPU is
`time.process_time()` over a pass without tracemalloc. Method and figures: docs/performance.md,
"A topic's cost: messages only, statistics, series tiers". What a topic costs over a day is a
test's bound (tests/unit/test_channel_memory.py), not a benchmark's.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import orjson
from harness.net import free_port
from harness.procfs import rss_kb

from bench.common import machine
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.config import Settings
from pushsvc.core.event import Event, Message

S = 1_000_000
NOW_US = 1_795_000_000 * S
MESSAGE = Message("shipped", b'{"order":4711}')


def _aggregator() -> Aggregator:
    return Aggregator(rules=Settings.load({}, {}).rules, wall_clock=lambda: NOW_US)


def _pass(aggregator: Aggregator, topics: int) -> None:
    for i in range(topics):
        aggregator.apply_events(f"u{i}", [Event(None, NOW_US, None, MESSAGE)])


def measure(topics: int) -> dict[str, Any]:
    """Bytes per topic (total and by file) and CPU µs per new topic and per further message."""
    aggregator = _aggregator()
    _pass(aggregator, 1)  # what the aggregator makes once for every topic (compiled paths)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _pass(aggregator, topics)
    gc.collect()
    per_topic = (tracemalloc.get_traced_memory()[0] - before) / topics
    by_file = {
        stat.traceback[0].filename.rsplit("/", 2)[-1]: round(stat.size / topics)
        for stat in tracemalloc.take_snapshot().statistics("filename")[:8]
    }
    tracemalloc.stop()
    del aggregator
    aggregator = _aggregator()
    _pass(aggregator, 1)
    start = time.process_time()
    _pass(aggregator, topics)
    created = time.process_time() - start
    start = time.process_time()
    _pass(aggregator, topics)
    further = time.process_time() - start
    return {
        "topics": topics,
        "bytes_per_topic": round(per_topic),
        "bytes_by_file": by_file,
        "new_topic_us": round(created / topics * S, 1),
        "further_message_us": round(further / topics * S, 1),
    }


def measure_http(topics: int, src: str | None) -> dict[str, Any]:
    """RSS bytes per topic of a `pushsvc serve` given one message a topic over HTTP."""
    port = free_port()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (src, env.get("PYTHONPATH"))))
    command = [sys.executable, "-m", "pushsvc", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        connection = _connected(port)

        def post(topic: str) -> None:
            connection.request(
                "POST",
                f"/topics/{topic}/events",
                body=b'{"type":"shipped","data":{"order":4711}}',
                headers={"Content-Type": "application/json"},
            )
            answer = connection.getresponse()
            body = answer.read()
            if answer.status != 202:
                raise SystemExit(f"POST /topics/{topic}/events: {answer.status} {body!r}")

        for i in range(200):
            post(f"warm{i}")
        time.sleep(1)
        before = rss_kb([server.pid])
        for i in range(topics):
            post(f"u{i}")
        time.sleep(2)  # what the server does after the answers (updates published)
        after = rss_kb([server.pid])
    finally:
        server.terminate()
        server.wait()
    return {"topics": topics, "rss_bytes_per_topic": round((after - before) * 1024 / topics)}


def _connected(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return connection
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--http", action="store_true", help="RSS of a `pushsvc serve` instead")
    parser.add_argument("--pushsvc-src", help="with --http: run pushsvc from this src/")
    args = parser.parse_args()
    if args.http:
        served = measure_http(args.topics, args.pushsvc_src)
        if args.json:
            print(orjson.dumps({"machine": machine(), **served}).decode())
        else:
            print(f"{served['topics']:,} topics, one message each over HTTP (pushsvc serve)")
            print(f"  RSS per topic                  {served['rss_bytes_per_topic']:>8,} B")
        return
    result = measure(args.topics)
    if args.json:
        print(orjson.dumps({"machine": machine(), **result}).decode())
        return
    print(f"{result['topics']:,} message-only topics, default rule")
    print(f"  aggregator bytes per topic     {result['bytes_per_topic']:>8,}")
    for name, size in result["bytes_by_file"].items():
        print(f"    {name:<28} {size:>8,}")
    print(f"  CPU per new topic + message    {result['new_topic_us']:>8} µs")
    print(f"  CPU per further message        {result['further_message_us']:>8} µs")


if __name__ == "__main__":
    main()
