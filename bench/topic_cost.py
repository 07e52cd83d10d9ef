"""What a topic costs the aggregator: bytes and CPU per topic that carries only messages, the
shape of a channel per user.

    python -m bench.topic_cost                  # 10,000 topics, one message each, a table
    python -m bench.topic_cost --topics 100000 --json
    python -m bench.topic_cost --http [--pushsvc-src DIR]  # RSS of a `pushsvc serve`
    python -m bench.topic_cost --redis --topics 2000 --day-topics 200 [--pushsvc-src DIR]

`--http`: a `pushsvc serve` (memory broker, this interpreter, `--pushsvc-src`'s tree first on
the path for a before/after) given one message a topic by single POSTs on one keep-alive
connection after 200 topics of warm-up; its RSS delta per topic, two seconds after the last.

`--redis`: the same on a `pushsvc serve --redis-url` of a redis-server of its own: Redis's
`used_memory` delta per topic (and `MEMORY USAGE` of its keys by kind) after one message a
topic, then after a simulated day (`--day-topics` more topics given 1,440 messages each, a
minute apart in event time, one POST each, minute by minute: what a day of a message a minute
leaves in Redis, whose history is bounded by partition, not by topic); the server's RSS per
topic beside.

The aggregator alone (`Aggregator` with the server's default rules: `Settings.load({}, {})`),
a wall clock injected. One pass makes each topic `u{i}` with one message; a second gives each a
second message; another aggregator's topics get a message with a value (their windows of
values and series tiers besides). Bytes are `tracemalloc`'s after the drafts are dropped (as a
broker drops them once published) and a collection, per topic, with the files holding the
most; CPU is `time.process_time()` over a pass without tracemalloc. Method and figures:
docs/performance.md, "A topic's cost: messages only, statistics, series tiers". What a topic
costs the aggregator over a day is a test's bound (tests/unit/test_channel_memory.py), not a
benchmark's.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import re
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


def _pass(aggregator: Aggregator, topics: int, value: float | None = None) -> None:
    for i in range(topics):
        aggregator.apply_events(f"u{i}", [Event(value, NOW_US, None, MESSAGE)])


def _valued_bytes(topics: int) -> int:
    """Bytes per topic whose first message carries a value: windows of values and series."""
    aggregator = _aggregator()
    _pass(aggregator, 1, 1.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _pass(aggregator, topics, 1.0)
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return round(size / topics)


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
        "bytes_per_valued_topic": _valued_bytes(topics),
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


def measure_redis(topics: int, day_topics: int, src: str | None) -> dict[str, Any]:
    """Redis bytes per topic (`INFO memory`, and `MEMORY USAGE` by key kind) and the server's
    RSS per topic: one message a topic, then a day of a message a minute a topic."""
    import redis
    from harness.redis_server import RedisServer

    server = RedisServer().start()
    admin = redis.Redis(port=server.port)
    port = free_port()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (src, env.get("PYTHONPATH"))))
    command = [sys.executable, "-m", "pushsvc", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--redis-url", server.url, "--prefix", "cost:"]
    serve = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        connection = _connected(port)

        def post(topic: str, body: bytes) -> None:
            connection.request(
                "POST", f"/topics/{topic}/events", body=body,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            answer = connection.getresponse()
            text = answer.read()
            if answer.status != 202:
                raise SystemExit(f"POST /topics/{topic}/events: {answer.status} {text!r}")

        def settled(last: str) -> tuple[int, int]:
            """Redis's used memory and the server's RSS (bytes) once `last` is published."""
            deadline = time.monotonic() + 120
            while True:
                connection.request("GET", f"/topics/{last}/stats")
                answer = connection.getresponse()
                answer.read()
                if answer.status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            time.sleep(2)  # the other partitions' publishing, and the log's trimming
            return int(admin.info("memory")["used_memory"]), rss_kb([serve.pid]) * 1024

        message = b'{"type":"shipped","data":{"order":4711}}'
        for i in range(200):
            post(f"warm{i}", message)
        redis_before, rss_before = settled("warm199")
        keys_before = _key_bytes(admin)
        for i in range(topics):
            post(f"u{i}", message)
        redis_one, rss_one = settled(f"u{topics - 1}")
        keys_one = _key_bytes(admin)
        now = time.time()
        for m in range(1440):  # minute by minute, one POST a message, as a day would
            ts = round(now - 86_400 + 60 * m, 3)
            body = b'{"type":"shipped","data":{"order":%d},"ts":%.3f}' % (m, ts)
            for i in range(day_topics):
                post(f"d{i}", body)
        redis_day, rss_day = settled(f"d{day_topics - 1}")
        keys_day = _key_bytes(admin)
    finally:
        serve.terminate()
        serve.wait()
        server.stop()
    return {
        "topics": topics,
        "redis_bytes_per_topic": round((redis_one - redis_before) / topics),
        "redis_key_bytes_per_topic": {
            kind: round((keys_one.get(kind, 0) - keys_before.get(kind, 0)) / topics)
            for kind in sorted(keys_one)
        },
        "rss_bytes_per_topic": round((rss_one - rss_before) / topics),
        "day_topics": day_topics,
        "day_redis_bytes_per_topic": round((redis_day - redis_one) / day_topics),
        "day_redis_key_bytes_per_topic": {
            kind: round((keys_day.get(kind, 0) - keys_one.get(kind, 0)) / day_topics)
            for kind in sorted(keys_day)
        },
        "day_rss_bytes_per_topic": round((rss_day - rss_one) / day_topics),
    }


def _key_bytes(admin: Any) -> dict[str, int]:
    """`MEMORY USAGE` of every key, summed by kind (its name without prefix, partition and
    this bench's topic: `series:1m`, `checkpoint`, `history`)."""
    kinds: dict[str, int] = {}
    for key in admin.scan_iter(count=1000):
        name = key.decode(errors="replace")
        kind = re.sub(r"^cost:|\{\d+\}:?|:(?:warm|u|d)?\d+$", "", name) or "?"
        kinds[kind] = kinds.get(kind, 0) + int(admin.memory_usage(key, samples=0) or 0)
    return kinds


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
    parser.add_argument("--pushsvc-src", help="with --http, --redis: run pushsvc from this src/")
    parser.add_argument("--redis", action="store_true", help="Redis memory per topic instead")
    parser.add_argument("--day-topics", type=int, default=200, help="with --redis")
    args = parser.parse_args()
    if args.redis:
        result = measure_redis(args.topics, args.day_topics, args.pushsvc_src)
        if args.json:
            print(orjson.dumps({"machine": machine(), **result}).decode())
            return
        print(f"{args.topics:,} topics, one message each (pushsvc serve on Redis)")
        print(f"  Redis used_memory per topic    {result['redis_bytes_per_topic']:>8,} B")
        for kind, size in result["redis_key_bytes_per_topic"].items():
            print(f"    {kind:<28} {size:>8,}")
        print(f"  server RSS per topic           {result['rss_bytes_per_topic']:>8,} B")
        print(f"{args.day_topics:,} topics, a day of a message a minute each")
        print(f"  Redis used_memory per topic    {result['day_redis_bytes_per_topic']:>8,} B")
        for kind, size in result["day_redis_key_bytes_per_topic"].items():
            print(f"    {kind:<28} {size:>8,}")
        print(f"  server RSS per topic           {result['day_rss_bytes_per_topic']:>8,} B")
        return
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
    print(f"  the same with a value          {result['bytes_per_valued_topic']:>8,}")
    print(f"  CPU per new topic + message    {result['new_topic_us']:>8} µs")
    print(f"  CPU per further message        {result['further_message_us']:>8} µs")


if __name__ == "__main__":
    main()
