"""The Redis broker's appends of many topics at once (`RedisBroker.append_many`), on one
redis-server and on a Redis Cluster: what a cross-topic request costs in round trips, and that
each topic's append stays its own, answering alone.

Round trips are read off Redis itself: `INFO stats` `total_writes_processed` counts the times
it wrote replies to a client, once per batch of commands it read together, so appends sent one
by one cost one each and a pipeline of them a few.

All of this module's cluster cases share one `redis_cluster` (a module runs on one worker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.broker.base import Appended, TopicAppend
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.errors import BrokerUnavailable, ReplicasUnconfirmed

T0 = 1_763_700_000_000_000
TOPICS = 1000

BACKENDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


class Deployment:
    def __init__(self, url: str, primaries: list[redis.Redis], commands: redis.Redis) -> None:
        self.url = url
        self.primaries = primaries
        self.commands = commands
        """A client whose commands reach any key (a cluster client on a cluster)."""

    def writes(self) -> int:
        """Replies Redis wrote to clients so far, summed over the primaries."""
        return sum(int(p.info("stats")["total_writes_processed"]) for p in self.primaries)


@pytest.fixture(params=BACKENDS)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        primaries = [redis.Redis.from_url(server.url)]
        url, commands = server.url, primaries[0]
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        primaries = [cluster.client(node) for node in cluster.primaries()]
        url = cluster.url
        commands = redis.RedisCluster(host="127.0.0.1", port=cluster.primaries()[0].port)
    yield Deployment(url, primaries, commands)
    for client in [*primaries, commands]:
        client.close()


@pytest.fixture
def broker(deployment: Deployment) -> Iterator[RedisBroker]:
    made = RedisBroker(deployment.url, prefix=f"t{uuid.uuid4().hex[:8]}:", partitions=16)
    yield made
    made.close()


def _appends(stem: str, count: int, value: float = 1.0) -> list[TopicAppend]:
    return [
        TopicAppend(f"{stem}{i}", [Event(value, T0 + i)], lateness_us=1_000_000)
        for i in range(count)
    ]


def test_a_thousand_topics_cost_a_few_round_trips_where_one_by_one_cost_one_each(
    deployment: Deployment, broker: RedisBroker
) -> None:
    stem = f"u{uuid.uuid4().hex[:6]}-"
    appends = _appends(stem, TOPICS)
    # New topics: a pipeline, their admission under one lock, a pipeline again.
    assert broker.append_many(appends) == [Appended(1)] * TOPICS
    before = deployment.writes()
    assert broker.append_many(_appends(stem, TOPICS, 2.0)) == [Appended(1)] * TOPICS
    together = deployment.writes() - before
    before = deployment.writes()
    for append in _appends(stem, TOPICS, 3.0):
        assert broker.append_events(append.topic, append.events, lateness_us=1_000_000)
    alone = deployment.writes() - before
    assert alone >= TOPICS  # the counter counts round trips
    assert together <= TOPICS // 10, together  # bytes read, not appends, set the count


def test_one_topic_whose_script_fails_answers_its_error_and_the_others_are_logged(
    deployment: Deployment, broker: RedisBroker
) -> None:
    stem = f"f{uuid.uuid4().hex[:6]}-"
    key = Idempotency("k1", "d" * 32, 60_000)
    appends = [a._replace(idempotency=key) for a in _appends(stem, 50)]
    broken = appends[17].topic
    # The topic's idempotency key is a hash: its script's GET fails (WRONGTYPE), after
    # nothing was written, in its own partition among others' appends.
    part = broker.keys.of(broken)
    deployment.commands.hset(part.idempotency(broken, key.key), "x", "y")
    results = broker.append_many(appends)
    assert isinstance(results[17], BrokerUnavailable)
    assert [r for i, r in enumerate(results) if i != 17] == [Appended(1)] * 49
    assert not broker.keeps_topic(broken)
    # The others remember the key: the same request again replays them.
    again = broker.append_many(appends)
    assert [r for i, r in enumerate(again) if i != 17] == [Appended(1, replayed=True)] * 49


def test_a_redis_that_forgot_the_script_is_sent_it_and_each_append_is_logged_once(
    deployment: Deployment, broker: RedisBroker
) -> None:
    stem = f"s{uuid.uuid4().hex[:6]}-"
    assert broker.append_many(_appends(stem, 200)) == [Appended(1)] * 200
    for primary in deployment.primaries:
        primary.script_flush()
    assert broker.append_many(_appends(stem, 200, 2.0)) == [Appended(1)] * 200
    entries = sum(int(deployment.commands.xlen(part.log)) for part in broker.keys)
    assert entries == 400


@pytest.mark.redis
def test_a_connection_lost_mid_pipeline_sends_nothing_twice(own_redis: RedisServer) -> None:
    """Redis closes the connection at a command it cannot read (a bulk past
    `proto-max-bulk-len`), having run some of the appends before it: an answer that arrived
    stands (whether any did depends on when Redis closed), the rest are unavailable and none
    is sent again; the request again with its key replays the ones logged and logs the rest,
    each once."""
    with redis.Redis.from_url(own_redis.url) as admin:
        admin.config_set("proto-max-bulk-len", 1024 * 1024)
        broker = RedisBroker(own_redis.url, prefix="lost:", partitions=16)
        try:
            key = Idempotency("k2", "e" * 32, 60_000)
            appends = [a._replace(idempotency=key) for a in _appends("lost-", 40)]
            broker.append_many(appends[:1])  # the script known, the partition's keys made
            huge = Event(1.0, T0, {"big": "x" * (1024 * 1024 + 1)})
            appends[25] = appends[25]._replace(events=[huge])
            results = broker.append_many(appends)
            # Redis ran the first `ran` of them, in order (how many it read before it closed
            # the connection): the answers that arrived are theirs.
            ran = sum(int(admin.xlen(part.log)) for part in broker.keys)
            assert 1 <= ran <= 25
            arrived = [Appended(1, replayed=True)] + [Appended(1)] * (ran - 1)
            for result, answer in zip(results[:ran], arrived, strict=True):
                assert result == answer or isinstance(result, BrokerUnavailable), results
            assert all(isinstance(r, BrokerUnavailable) for r in results[ran:]), results
            admin.config_set("proto-max-bulk-len", 512 * 1024 * 1024)
            again = broker.append_many(appends)
            assert again[:ran] == [Appended(1, replayed=True)] * ran
            assert again[ran:] == [Appended(1)] * (40 - ran)
            assert sum(int(admin.xlen(part.log)) for part in broker.keys) == 40
        finally:
            broker.close()


@pytest.mark.redis
@pytest.mark.cluster
def test_a_slot_moved_since_the_slot_map_was_read_is_followed_and_each_append_logged_once(
    redis_cluster: RedisClusterServers,
) -> None:
    """The pipeline to the slot's old owner is answered MOVED for that partition's appends,
    which ran nothing there: each goes again alone to the new owner, once."""
    broker = RedisBroker(redis_cluster.url, prefix=f"m{uuid.uuid4().hex[:8]}:", partitions=16)
    slot = partition_slot(0, 16)
    source = redis_cluster.owner_of(slot)
    target = next(p for p in redis_cluster.primaries() if p is not source)
    counter = redis.RedisCluster(host="127.0.0.1", port=source.port)
    try:
        stem = f"m{uuid.uuid4().hex[:6]}-"
        moved = [a.topic for a in _appends(stem, 200) if broker.partition_of(a.topic) == 0]
        assert moved  # some of the topics are in the partition moved
        assert broker.append_many(_appends(stem, 200)) == [Appended(1)] * 200
        redis_cluster.move_slot(slot, target)
        assert broker.append_many(_appends(stem, 200, 2.0)) == [Appended(1)] * 200
        assert sum(int(counter.xlen(part.log)) for part in broker.keys) == 400
    finally:
        redis_cluster.move_slot(slot, source)
        counter.close()
        broker.close()


def test_with_min_replicas_each_append_answers_what_its_pipelines_wait_counted(
    deployment: Deployment,
) -> None:
    """One WAIT ends each pipeline: on one redis-server (no replica) every append logged is
    unconfirmed, on the Cluster (a replica each) confirmed; a replay is answered whatever."""
    broker = RedisBroker(
        deployment.url,
        prefix=f"w{uuid.uuid4().hex[:8]}:",
        partitions=16,
        min_replicas=1,
        replica_timeout_ms=2000 if len(deployment.primaries) > 1 else 50,
    )
    try:
        key = Idempotency("k3", "f" * 32, 60_000)
        appends = [a._replace(idempotency=key) for a in _appends("w-", 30)]
        results = broker.append_many(appends)
        if len(deployment.primaries) > 1:
            assert results == [Appended(1)] * 30
        else:
            assert all(isinstance(r, ReplicasUnconfirmed) for r in results), results
        assert broker.append_many(appends) == [Appended(1, replayed=True)] * 30
    finally:
        broker.close()
