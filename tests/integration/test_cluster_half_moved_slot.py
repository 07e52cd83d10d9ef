"""The aggregator's scripts meet their partition's slot half moved on a Redis Cluster (a
reshard: MIGRATING on the owner, some of the slot's keys on the importing primary already).

A Lua script is not rolled back when a command in it fails, and a Cluster refuses, mid-run,
a command on a key that has left the node ("Script attempted to access a non local key").
A script that wrote before meeting such a key would stop partway: a publish would have
recorded its position and some of its updates, its retry would be refused as published
already, and the rest of the batch (a point, a correction, an update) would never reach a
subscriber. So every script declares every key it touches, and the Cluster judges them all
before the script starts: `TRYAGAIN` (nothing ran; the broker says unavailable and the
aggregator tries again), never a partial run. Each case moves one key of a kind the scripts
name from a prefix (a tier's stream, its corrections, the topic's set of series keys, its
groups, its checkpoint) ahead of the rest, and checks that the script wrote nothing, then
that once the slot has moved the same call does everything, once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from harness.fenced_publish import covering_tick, publish_partition
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.broker.redis.broker import RedisBroker
from pushsvc.broker.redis.keys import PartitionKeys
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event
from pushsvc.core.partitions import partition_of
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import (
    SeriesWrite,
    UpdateDraft,
    alert_draft,
    deletion_draft,
    point_draft,
)
from pushsvc.errors import BrokerUnavailable

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

P = 16
MOVING = 5
S = 1_000_000
BASE_US = 1_763_700_000 * S
TIER = "1s"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """Of this module's own (its tests move a slot), without replicas: nothing fails over."""
    with RedisClusterServers(replicas_per_primary=0) as made:
        yield made


@pytest.fixture
def broker(cluster: RedisClusterServers, prefix: str) -> Iterator[RedisBroker]:
    """A short history and alert retention: the partition soon has every key the publish
    script knows (a trimmed history, a trimmed alert change)."""
    made = RedisBroker(
        cluster.url,
        prefix=prefix,
        partitions=P,
        socket_timeout=2.0,
        history=3,
        alert_retention_us=1000,
    )
    yield made
    made.close()


FIXED_KEYS = (
    "epoch",
    "history",
    "latest",
    "trimmed",
    "applied",
    "lease",
    "alerts",
    "alerts_head",
    "checkpoints",
    "alert_changes",
    "alert_changes_trimmed",
    "names",
    "alert_keys",
    "holds",
    "history_start",
)
"""The keys the publish script always declares (`PublishScript`)."""


def with_every_fixed_key(cluster: RedisClusterServers, broker: RedisBroker, topic: str) -> None:
    """Give the partition every key the publish script always declares, as a long-running
    deployment's has (alerts, a trimmed history, checkpoints, a sessionizer's hold): a Cluster
    runs a script on a half-moved slot only when every key it declares is on the node."""
    part = broker.keys.partition(MOVING)
    node = cluster.client(cluster.owner_of(partition_slot(MOVING, P)))
    shard = (MOVING, P)
    lease: Any = broker.lease(shard, ttl_us=60 * S)
    log = broker.event_log(shard)
    try:
        n = 0
        # Alert changes a millisecond apart or more trim the older (a 1 ms retention); a firing
        # one stays active. The history (3 entries) is trimmed on the way.
        while node.exists(part.alert_changes_trimmed, part.trimmed) < 2:
            n += 1
            body = orjson.dumps({"alert": "a", "state": "firing", "n": n})
            publish_partition(broker, MOVING, [alert_draft(ALERTS, BASE_US + n, body, "a", True)])
        publish_partition(broker, MOVING, [update(topic, 0, "g0")])
        assert lease.renew()
        assert log.save_checkpoints(lease.token, [Checkpoint(topic, (1, 0), BASE_US, 0, b"", ())])
        until_ms = int(time.time() * 1000) + 600_000
        node.hset(part.holds, "sessionizer", f"* 0-0 {until_ms}")  # as `hold_history` writes
        missing = [name for name in FIXED_KEYS if not node.exists(getattr(part, name))]
        assert missing == []
    finally:
        lease.release()
        lease.close()
        log.close()
        node.close()


def topic_of(partition: int) -> str:
    n = 0
    while partition_of(f"t{n}", P) != partition:
        n += 1
    return f"t{n}"


def update(topic: str, n: int, group: str) -> UpdateDraft:
    body = orjson.dumps({"topic": topic, "n": n, "windows": {}})
    return UpdateDraft(topic, BASE_US + n * S, body, ((group, orjson.dumps({"g": group})),))


def point(topic: str, n: int, bucket_s: int, revision: int = 0) -> UpdateDraft:
    packed = b"bucket %d revision %d" % (bucket_s, revision)
    write = SeriesWrite(TIER, "", BASE_US + bucket_s * S, packed, BASE_US, revision)
    return point_draft(topic, BASE_US + n * S, write, {"count": n})


MOVED_FIRST = ("series", "corrected", "series-keys", "groups")
"""The kinds of key the publish script names from its payload, of which one leaves first."""
OTHER_TIER = "10s"


def first_key(part: PartitionKeys, topic: str, moved: str) -> str:
    return {
        "series": part.series(TIER, topic),
        "corrected": part.corrected(TIER, topic),
        "series-keys": part.series_keys(topic),
        "groups": part.groups(topic),
        "another-tier": part.series(OTHER_TIER, topic),
    }[moved]


def state(cluster: RedisClusterServers, node: RedisServer, part: PartitionKeys) -> tuple[Any, ...]:
    """What a publish changes in the partition, read from `node`, which holds those keys."""
    client = cluster.client(node)
    try:
        return (
            client.hgetall(part.applied),
            client.xlen(part.history),
            client.hgetall(part.latest),
        )
    finally:
        client.close()


@pytest.mark.parametrize(
    ("moved", "deleted"),
    [
        *((moved, deleted) for moved in MOVED_FIRST for deleted in (False, True)),
        # A tier the batch has no point of, whose stream only the deletion drops.
        ("another-tier", True),
    ],
    ids=lambda v: {True: "deleted", False: "amended"}.get(v, v),
)
def test_a_publish_that_meets_its_slot_half_moved_runs_whole_or_not_at_all(
    cluster: RedisClusterServers, broker: RedisBroker, moved: str, deleted: bool
) -> None:
    """A batch with an update (and its groups), a new bucket's point and a correction of a
    published one (and, `deleted`, the topic's deletion), published while one of its keys has
    left for the importing primary: unavailable, and nothing of it written (the position, the
    history, the latest update); published whole, once, when retried after the move."""
    topic, part = topic_of(MOVING), broker.keys.partition(MOVING)
    with_every_fixed_key(cluster, broker, topic)
    other = point(topic, 2, 1)
    assert other.series is not None
    other = point_draft(topic, other.clock_us, other.series._replace(resolution=OTHER_TIER), {})
    publish_partition(broker, MOVING, [update(topic, 1, "g1"), point(topic, 2, 1), other])
    publish_partition(broker, MOVING, [point(topic, 3, 1, revision=1)])  # its corrections set
    batch = [update(topic, 4, "g2"), point(topic, 5, 2), point(topic, 5, 1, revision=2)]
    if deleted:
        batch.append(deletion_draft(topic, BASE_US + 6 * S))
    shard = (MOVING, P)
    lease: Any = broker.lease(shard, ttl_us=60 * S)
    assert lease.renew()
    applied = covering_tick(broker, shard, lease.token)
    slot = partition_slot(MOVING, P)
    target = next(p for p in cluster.primaries() if p is not cluster.owner_of(slot))
    source = cluster.start_moving(slot, target)
    before = state(cluster, source, part)
    try:
        cluster.migrate(source, target, [first_key(part, topic, moved).encode()])
        with pytest.raises(BrokerUnavailable):
            broker.publish_updates(batch, applied=applied, fence=lease.token)
        assert state(cluster, source, part) == before  # nothing of the batch written
    finally:
        cluster.finish_moving(slot, source, target)
    published = broker.publish_updates(batch, applied=applied, fence=lease.token)
    lease.release()
    lease.close()
    got = [{k: v for k, v in orjson.loads(u.data).items() if k != "id"} for u in published]
    assert got == [orjson.loads(d.body) for d in batch]  # every draft published, once
    applied_hash, history_length, _ = state(cluster, target, part)
    assert applied_hash[b"id"].decode() == applied.entry_id
    assert history_length == before[1] + len(batch)
    page = broker.series(
        topic,
        resolution=TIER,
        since_us=BASE_US,
        until_us=BASE_US + 10 * S,
        retention_us=3600 * S,
        limit=10,
    )
    groups = broker.latest_groups([topic])
    if deleted:
        assert (page.points, groups) == ([], {})
    else:
        assert page.points == [
            (BASE_US + 1 * S, b"bucket 1 revision 2"),
            (BASE_US + 2 * S, b"bucket 2 revision 0"),
        ]
        assert sorted(groups[topic]) == [b'{"g":"g0"}', b'{"g":"g1"}', b'{"g":"g2"}']


def checkpoint(topic: str, n: int) -> Checkpoint:
    return Checkpoint(topic, (n, 0), BASE_US + n * S, 0, b"", ())


def topics_of_moving(count: int) -> list[str]:
    """`count` topics of the moving partition."""
    found = [f"t{n}" for n in range(10_000) if partition_of(f"t{n}", P) == MOVING]
    return found[:count]


def test_checkpoints_saved_while_one_has_left_the_node_are_saved_all_or_none(
    cluster: RedisClusterServers, broker: RedisBroker
) -> None:
    """Two topics' checkpoints, one of whose has left for the importing primary: neither is
    saved (unavailable); after the move, both."""
    first, second = topics_of_moving(2)
    shard = (MOVING, P)
    lease: Any = broker.lease(shard, ttl_us=60 * S)
    assert lease.renew()
    log = broker.event_log(shard)
    try:
        assert log.save_checkpoints(lease.token, [checkpoint(first, 1), checkpoint(second, 1)])
        slot = partition_slot(MOVING, P)
        target = next(p for p in cluster.primaries() if p is not cluster.owner_of(slot))
        source = cluster.start_moving(slot, target)
        try:
            cluster.migrate(
                source, target, [broker.keys.partition(MOVING).checkpoint(second).encode()]
            )
            with pytest.raises(BrokerUnavailable):
                log.save_checkpoints(lease.token, [checkpoint(first, 2), checkpoint(second, 2)])
        finally:
            cluster.finish_moving(slot, source, target)
        assert {c.topic: c.position for c in log.checkpoints()} == {first: (1, 0), second: (1, 0)}
        assert log.save_checkpoints(lease.token, [checkpoint(first, 2), checkpoint(second, 2)]) == 2
        assert {c.topic: c.position for c in log.checkpoints()} == {first: (2, 0), second: (2, 0)}
    finally:
        lease.release()
        lease.close()
        log.close()


def logged(cluster: RedisClusterServers, node: RedisServer, part: PartitionKeys) -> tuple[Any, ...]:
    """The partition's log length and topic clocks, read from `node`."""
    client = cluster.client(node)
    try:
        return client.xlen(part.log), client.hgetall(part.clocks)
    finally:
        client.close()


def test_a_forget_while_a_topics_groups_have_left_the_node_forgets_all_or_none(
    cluster: RedisClusterServers, broker: RedisBroker
) -> None:
    """Two idle topics proposed for forgetting, one of whose groups have left for the
    importing primary: neither is forgotten (their clocks stay; no forget entry is logged);
    after the move, both."""
    earlier, *topics = topics_of_moving(3)
    shard = (MOVING, P)
    for topic in (earlier, *topics):
        broker.append_events(topic, [Event(1.0, BASE_US, None)], lateness_us=0)
    publish_partition(broker, MOVING, [update(t, 1, "g1") for t in (earlier, *topics)])
    part = broker.keys.partition(MOVING)
    lease: Any = broker.lease(shard, ttl_us=60 * S)
    assert lease.renew()
    log = broker.event_log(shard)
    try:
        # Every key the script always declares exists (its count of topics forgotten too), so
        # a Cluster lets it run on a half-moved slot.
        assert log.save_checkpoints(lease.token, [checkpoint(topics[0], 1)])
        after = [e.id for e in log.read(FIRST, count=100)][-1]
        assert log.forget(lease.token, after, {earlier: BASE_US}) == [earlier]
        after = [e.id for e in log.read(FIRST, count=100)][-1]
        clocks = {topic: BASE_US for topic in topics}
        slot = partition_slot(MOVING, P)
        target = next(p for p in cluster.primaries() if p is not cluster.owner_of(slot))
        source = cluster.start_moving(slot, target)
        before = logged(cluster, source, part)
        try:
            cluster.migrate(source, target, [part.groups(topics[1]).encode()])
            with pytest.raises(BrokerUnavailable):
                log.forget(lease.token, after, clocks)
            assert logged(cluster, source, part) == before  # nothing forgotten
        finally:
            cluster.finish_moving(slot, source, target)
        assert sorted(log.forget(lease.token, after, clocks)) == sorted(topics)
        assert logged(cluster, target, part)[1] == {}
        assert broker.latest_groups(list(topics)) == {}
    finally:
        lease.release()
        lease.close()
        log.close()
