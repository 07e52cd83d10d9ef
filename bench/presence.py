"""What presence costs: the CPU of one stream's join and leave in a web process's tally
(`pushsvc.core.presence`), and what 100,000 streams cost — the tally's memory, a topic's read,
and on a real Redis (`pushsvc.broker.redis.presence`) the first flush of that tally, a steady
second's flush under churn, and a read of a topic's presence over two processes' entries.

Joins and leaves are driven against the tally directly, as a stream's view calls it (the
`Watch` built from its selectors included), not through HTTP: 100,000 real streams do not fit
on a small machine, and what presence adds per stream is this. Times are this process's CPU
time (`process_time`), so that what else runs on a shared machine counts less; Redis's CPU is
its own `INFO cpu` (user + sys) over the same calls.

    python -m bench.presence                      # 100,000 streams over 10,000 topics
    python -m bench.presence --streams 1000 --topics 100 --json     # what the smoke test runs
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from typing import Any

import orjson
import redis
from harness.redis_server import RedisServer

from bench.common import machine, redis_cpu_s
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.presence import RedisPresence
from pushsvc.core.presence import PresenceRegistry, Watch
from pushsvc.core.topics import TopicMatcher

PATTERNS = ("sensors.*", "*")
"""A few pattern streams beside the named ones, as a dashboard's `*` stream would be."""


def _watches(streams: int, topics: int) -> list[Watch]:
    """`streams` watches, each of one topic named outright (topic i % topics), but one in a
    hundred of a pattern, with a subject."""
    watches = []
    for i in range(streams):
        if i % 100 == 99:
            watches.append(Watch.of(TopicMatcher([PATTERNS[i % 2]]), None, f"user-{i % 1000}"))
        else:
            matcher = TopicMatcher([f"sensors.t{i % topics}"])
            watches.append(Watch.of(matcher, None, f"user-{i % 1000}"))
    return watches


def join_leave(streams: int, topics: int, keep_subs: bool) -> dict[str, Any]:
    """CPU ns to build the Watch a stream's view builds, and per join and per leave, over
    `streams` of each."""
    # The matchers the streams' views made already: presence reuses them.
    matchers = [
        TopicMatcher([PATTERNS[i % 2]] if i % 100 == 99 else [f"sensors.t{i % topics}"])
        for i in range(streams)
    ]
    subjects = [f"user-{i % 1000}" for i in range(streams)]
    registry = PresenceRegistry(keep_subs=keep_subs)
    start = time.process_time_ns()
    watches = [Watch.of(m, None, sub) for m, sub in zip(matchers, subjects, strict=True)]
    watch_ns = (time.process_time_ns() - start) / streams
    start = time.process_time_ns()
    for watch in watches:
        registry.join(watch)
    join_ns = (time.process_time_ns() - start) / streams
    start = time.process_time_ns()
    for watch in watches:
        registry.leave(watch)
    leave_ns = (time.process_time_ns() - start) / streams
    assert registry.streams == 0 and not registry.names.counts and not registry.patterns.counts
    return {
        "row": "join_leave",
        "keep_subs": keep_subs,
        "streams": streams,
        "watch_ns": round(watch_ns),
        "join_ns": round(join_ns),
        "leave_ns": round(leave_ns),
    }


def held(streams: int, topics: int, keep_subs: bool) -> tuple[PresenceRegistry, dict[str, Any]]:
    """The tally holding `streams` streams: its memory, and one topic's read."""
    # What the streams' views and tokens hold anyway: their matchers and subjects.
    matchers = [TopicMatcher([f"sensors.t{i % topics}"]) for i in range(streams)]
    subjects = [f"user-{i}" for i in range(1000)]
    tracemalloc.start()
    registry = PresenceRegistry(keep_subs=keep_subs)
    before = tracemalloc.get_traced_memory()[0]
    # What presence holds per stream: its Watch (kept until it leaves) and the tally's share.
    watches = [
        Watch.of(TopicMatcher([PATTERNS[i % 2]]), None, subjects[i % 1000])
        if i % 100 == 99
        else Watch.of(matchers[i], None, subjects[i % 1000])
        for i in range(streams)
    ]
    for watch in watches:
        registry.join(watch)
    tally_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    reads = 10_000
    start = time.process_time_ns()
    for i in range(reads):
        registry.presence(f"sensors.t{i % topics}")
    read_ns = (time.process_time_ns() - start) / reads
    expected = streams // topics  # about: the named ones of topic 0, and every pattern stream
    got = registry.presence("sensors.t0").watching
    assert got >= expected * 0.9, (got, expected)
    return registry, {
        "row": "held",
        "keep_subs": keep_subs,
        "streams": streams,
        "topics": topics,
        "bytes_per_stream": round(tally_bytes / streams, 1),
        "read_local_us": round(read_ns / 1000, 2),
    }


def on_redis(
    registry: PresenceRegistry, streams: int, topics: int, churn: int, partitions: int
) -> dict[str, Any]:
    """The tally's flushes and a read of a topic on a real Redis, beside a second process's
    entry (a copy of the same tally under another id)."""
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        keys = Keys("bench:", partitions)
        expiry_us = 5_000_000
        # No read cache: each read measured goes to Redis.
        mine = RedisPresence(
            server.url, keys, registry, expiry_us=expiry_us, client=client, read_cache_s=0
        )
        # The other process: the same streams, so every topic's count doubles.
        other_registry = PresenceRegistry(keep_subs=registry.keep_subs)
        for watch in _watches(streams, topics):
            other_registry.join(watch)
        other = RedisPresence(server.url, keys, other_registry, expiry_us=expiry_us, client=client)
        cpu, redis_cpu = time.process_time(), redis_cpu_s(client)
        mine.flush()
        first_ms = (time.process_time() - cpu) * 1000
        first_redis_ms = (redis_cpu_s(client) - redis_cpu) * 1000
        other.flush()
        # A steady second: `churn` streams leave and as many join, then the flush.
        watches = _watches(churn, topics)
        for watch in watches:
            registry.join(watch)
        mine.flush()
        cpu, redis_cpu = time.process_time(), redis_cpu_s(client)
        start = time.process_time_ns()
        for watch in watches:
            registry.leave(watch)
        churn_ns = (time.process_time_ns() - start) / churn
        flush_cpu = time.process_time()
        mine.flush()
        steady_ms = (time.process_time() - flush_cpu) * 1000
        steady_redis_ms = (redis_cpu_s(client) - redis_cpu) * 1000
        # Idle: nothing changed, only the expiries are pushed forward.
        cpu, redis_cpu = time.process_time(), redis_cpu_s(client)
        mine.flush()
        idle_ms = (time.process_time() - cpu) * 1000
        idle_redis_ms = (redis_cpu_s(client) - redis_cpu) * 1000
        reads = 200
        cpu, redis_cpu = time.process_time(), redis_cpu_s(client)
        wall = time.perf_counter()
        for i in range(reads):
            answer = mine.read([f"sensors.t{i % topics}"])
        read_us = (time.process_time() - cpu) / reads * 1e6
        read_wall_us = (time.perf_counter() - wall) / reads * 1e6
        read_redis_us = (redis_cpu_s(client) - redis_cpu) / reads * 1e6
        for topic in ("sensors.t0", f"sensors.t{(reads - 1) % topics}"):
            local = registry.presence(topic).watching + other_registry.presence(topic).watching
            assert mine.read([topic])[topic].watching == local, (topic, answer, local)
        memory = int(client.info("memory")["used_memory"])
        return {
            "row": "redis",
            "streams": streams,
            "topics": topics,
            "partitions": partitions,
            "churn_per_s": churn,
            "first_flush_ms": round(first_ms, 1),
            "first_flush_redis_ms": round(first_redis_ms, 1),
            "churn_leave_ns": round(churn_ns),
            "steady_flush_ms": round(steady_ms, 2),
            "steady_flush_redis_ms": round(steady_redis_ms, 2),
            "idle_flush_ms": round(idle_ms, 2),
            "idle_flush_redis_ms": round(idle_redis_ms, 2),
            "read_us": round(read_us),
            "read_wall_us": round(read_wall_us),
            "read_redis_us": round(read_redis_us),
            "redis_used_memory_mb": round(memory / 2**20, 1),
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--topics", type=int, default=10_000)
    parser.add_argument("--churn", type=int, default=1_000, help="joins and leaves a second")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = [{"machine": machine("redis", "gevent")}]
    rows.append(join_leave(args.streams, args.topics, keep_subs=False))
    rows.append(join_leave(args.streams, args.topics, keep_subs=True))
    held(args.streams, args.topics, keep_subs=False)  # warm: the pattern matchers' cache
    _, plain = held(args.streams, args.topics, keep_subs=False)
    registry, with_subs = held(args.streams, args.topics, keep_subs=True)
    rows += [plain, with_subs]
    if not args.no_redis:
        rows.append(on_redis(registry, args.streams, args.topics, args.churn, args.partitions))
    for row in rows:
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        else:
            print(" ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
