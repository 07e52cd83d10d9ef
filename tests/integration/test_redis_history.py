"""A topic's history on Redis costs that topic's entries, not everyone's, and a history
written before entries named their topic's previous one still reads whole.

(What a history page holds is the broker contract's, for both brokers:
tests/integration/test_broker_contract.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis
from harness.fenced_publish import publish as publish_fenced
from harness.redis_server import RedisServer

from pushsvc.broker.redis import RedisBroker
from pushsvc.core.cursor import Cursor
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft

pytestmark = pytest.mark.redis


@pytest.fixture
def broker(own_redis: RedisServer) -> Iterator[RedisBroker]:
    made = RedisBroker(own_redis.url, history=5_000)
    yield made
    made.close()


def draft(topic: str, n: int) -> UpdateDraft:
    return UpdateDraft(topic, n, orjson.dumps({"topic": topic, "n": n}))


def values(updates: list[Update]) -> list[int]:
    return [orjson.loads(u.data)["n"] for u in updates]


def cost(client: redis.Redis) -> tuple[int, int]:
    """Since the counts were reset: stream reads (XRANGE/XREVRANGE calls, from Python or from
    a script) and bytes sent to clients."""
    stats = client.info("commandstats")
    reads = sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("xrange", "xrevrange"))
    return reads, int(client.info("stats")["total_net_output_bytes"])


def test_a_rare_topics_history_reads_its_own_entries_only(
    broker: RedisBroker, own_redis: RedisServer
) -> None:
    for n in range(4_000):
        publish_fenced(broker, [draft("busy", n)] + ([draft("rare", n)] if n % 1000 == 0 else []))
    client = redis.Redis.from_url(own_redis.url)
    try:
        client.config_resetstat()
        page = broker.history("rare", limit=100)
        assert values(page.updates) == [0, 1000, 2000, 3000]
        # Its four entries and the head, not the 4,000 others (~200 KB) read and dropped.
        reads, sent = cost(client)
        assert reads <= 4 + 1 and sent < 4_000, (reads, sent)
        client.config_resetstat()
        assert broker.history("never-seen", limit=100).updates == []
        reads, sent = cost(client)
        assert reads <= 1 and sent < 1_000, (reads, sent)
    finally:
        client.close()


def test_a_history_written_before_the_chain_still_reads_whole(
    broker: RedisBroker, own_redis: RedisServer
) -> None:
    """Entries as the publish script wrote them before `p` (the topic's previous entry)
    existed: older pushsvc versions, kept across an upgrade."""
    (first,) = publish_fenced(broker, [draft("a", 0)])
    client = redis.Redis.from_url(own_redis.url)
    try:
        keys = broker.keys.of("a")
        epoch = first.id.epoch
        for n in range(1, 4):  # what the old script did for each: XADD without p, HSET latest
            body = orjson.dumps({"topic": "a", "n": n})
            stream_id = client.xadd(keys.history, {"t": "a", "c": str(n), "b": body}).decode()
            client.hset(keys.latest, "a", f"{epoch}:{stream_id} {n} ".encode() + body)
            client.xadd(keys.history, {"t": "b", "c": str(n), "b": b"{}"})
    finally:
        client.close()
    publish_fenced(broker, [draft("a", 4), draft("a", 5)])  # the upgraded publisher

    assert values(broker.history("a", limit=100).updates) == [0, 1, 2, 3, 4, 5]
    assert values(broker.history("a", limit=4).updates) == [2, 3, 4, 5]
    assert values(broker.history("a", since_us=2, limit=100).updates) == [2, 3, 4, 5]


def test_a_history_written_before_entries_named_their_predecessor_trims_exactly(
    own_redis: RedisServer,
) -> None:
    """Entries as the publish script wrote them before `g` (the history's previous entry)
    existed, kept across an upgrade: the upgraded script, trimming them, still records the
    newest trimmed id, so a replay from each id is whole exactly when nothing after it went."""
    broker = RedisBroker(own_redis.url, history=4, prefix="pushsvc:old-trim:")
    try:
        updates = publish_fenced(broker, [draft("a", n) for n in range(3)])
        keys = broker.keys.of("a")
        client = redis.Redis.from_url(own_redis.url)
        try:  # the same entries, under the same ids, without `g`
            entries = client.xrange(keys.history)
            client.delete(keys.history)
            for stream_id, fields in entries:
                client.xadd(keys.history, {k: v for k, v in fields.items() if k != b"g"}, stream_id)
            assert all(b"g" not in fields for _, fields in client.xrange(keys.history))
        finally:
            client.close()
        for size in (2, 1, 3):  # trims two old entries, the last old one, then new ones
            updates += publish_fenced(broker, [draft("a", len(updates) + k) for k in range(size)])
            for i, update in enumerate(updates):
                replayed = broker.replay(Cursor([update.id]), TopicMatcher(["*"]))
                whole = len(updates) - (i + 1) <= 4
                assert (replayed.updates == updates[i + 1 :]) == whole, (size, i)
                assert bool(replayed.lost) != whole, (size, i)
    finally:
        broker.close()
