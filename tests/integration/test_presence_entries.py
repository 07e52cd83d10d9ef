"""Presence's entries on a real Redis (`pushsvc.broker.redis.presence`), driven flush by flush:
what a read adds up over two processes, only what changed is written, entries lost from Redis
(restarted empty) are written whole again, and a process that stops refreshing drops out at
its expiry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from harness.live import wait_until
from harness.redis_server import RedisServer

from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.presence import RedisPresence
from pushsvc.core.presence import NOBODY, Presence, PresenceRegistry, Watch
from pushsvc.core.topics import TopicMatcher


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(redis_server.url)
    yield made
    made.close()


def _process(
    redis_server: RedisServer, prefix: str, *, expiry_us: int = 5_000_000
) -> RedisPresence:
    registry = PresenceRegistry(keep_subs=True)
    # No read cache: each read here follows a flush, and must see it.
    return RedisPresence(
        redis_server.url, Keys(prefix, 4), registry, expiry_us=expiry_us, read_cache_s=0
    )


def _watch(*selectors: str, sub: str | None = None) -> Watch:
    return Watch.of(TopicMatcher(list(selectors)), None, sub)


def test_a_read_adds_every_process_up(redis_server: RedisServer, prefix: str) -> None:
    one, two = _process(redis_server, prefix), _process(redis_server, prefix)
    try:
        one.registry.join(_watch("orders", sub="alice"))
        one.registry.join(_watch("orders", "payments"))
        two.registry.join(_watch("orders", sub="bob"))
        two.registry.join(_watch("*", sub="alice"))
        for process in (one, two):
            process.flush()
        assert one.read(["orders", "payments", "other"]) == {
            "orders": Presence(4, ("alice", "bob")),
            "payments": Presence(2, ("alice",)),
            "other": Presence(1, ("alice",)),
        }
        assert two.read(["orders"]) == one.read(["orders"])
        leaving = _watch("orders", sub="bob")
        two.registry.leave(leaving)
        two.flush()
        assert one.read(["orders"]) == {"orders": Presence(3, ("alice",))}
    finally:
        one.remove()
        two.remove()


def test_only_what_changed_is_written(
    redis_server: RedisServer, prefix: str, client: redis.Redis
) -> None:
    process = _process(redis_server, prefix)
    try:
        process.registry.join(_watch("orders"))
        process.flush()
        # Written behind the process's back: a flush that wrote everything would put it right.
        entry = next(k for k in client.keys(f"{prefix}*presence:*") if b"patterns" not in k)
        client.hset(entry, "planted", "[9,[]]")
        process.registry.join(_watch("payments"))
        process.flush()
        assert client.hget(entry, "planted") == b"[9,[]]"
    finally:
        process.remove()


def test_entries_lost_from_redis_are_written_whole_again(
    redis_server: RedisServer, prefix: str, client: redis.Redis
) -> None:
    process = _process(redis_server, prefix)
    try:
        for topic in ("a", "b", "c", "d", "e"):
            process.registry.join(_watch(topic))
        process.registry.join(_watch("x.*"))
        process.flush()
        for key in client.keys(f"{prefix}*"):
            client.delete(key)  # as if Redis had restarted empty
        process.registry.join(_watch("a"))  # one change: the rest is missing
        process.flush()  # notices the entries were gone
        process.flush()  # writes them whole
        expected = {topic: 1 for topic in "bcde"} | {"a": 2, "x.y": 1}
        answer = process.read(list(expected))
        assert {topic: p.watching for topic, p in answer.items()} == expected
    finally:
        process.remove()


def test_a_read_is_answered_again_for_a_moment_without_redis(
    redis_server: RedisServer, prefix: str
) -> None:
    registry = PresenceRegistry()
    cached = RedisPresence(
        redis_server.url, Keys(prefix, 4), registry, expiry_us=5_000_000, read_cache_s=3600
    )
    try:
        cached.registry.join(_watch("orders"))
        cached.flush()
        assert cached.read(["orders"])["orders"].watching == 1
        cached.registry.join(_watch("orders"))
        cached.flush()
        # Within the cache's time the answer stands; another topic is read from Redis.
        assert cached.read(["orders"])["orders"].watching == 1
        assert cached.read(["orders", "other"]) == {"orders": Presence(1), "other": NOBODY}
    finally:
        cached.remove()


def test_a_process_that_stops_refreshing_drops_out_at_its_expiry(
    redis_server: RedisServer, prefix: str
) -> None:
    alive = _process(redis_server, prefix, expiry_us=2_000_000)
    dead = _process(redis_server, prefix, expiry_us=2_000_000)
    try:
        alive.registry.join(_watch("orders"))
        dead.registry.join(_watch("orders"))
        dead.registry.join(_watch("*"))
        alive.flush()
        dead.flush()  # its last: then nothing, as a process killed with SIGKILL
        assert alive.read(["orders"])["orders"].watching == 3

        def alone() -> bool:
            alive.flush()
            return alive.read(["orders"])["orders"].watching == 1

        wait_until(alone, timeout=10, what="the silent process's entries expire")
    finally:
        alive.remove()
