"""Elastic aggregators in process: partition pools on a real Redis, stepped by hand.

Each pool is what one `pushsvc aggregate` process runs (`pushsvc.aggregate.partition_pool`),
with its own broker and connections, stepped in turn by the test (its rebuilds inline), so a
sequence of pools starting, stopping (gracefully: publish, release, leave) and dying (their
connections closed, nothing released: the leases and the membership lapse) is played
exactly. Against a small model: once the pools settle, every partition has exactly one
owner among the live ones, the shares differ by at most one, and every logged event yielded
exactly one update, equal to an uninterrupted aggregator's (the history holds them all).
The same with real processes and kill -9: tests/system/faults/test_elastic_moments.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
import redis
from harness.redis_server import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.partition_pool import PartitionPool, quota
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.shared_log import position
from pushsvc.core.event import Event
from pushsvc.core.partitions import partition_of
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.stats import STAT_KEYS

pytestmark = pytest.mark.redis

S = 1_000_000
LEASE_US = 600_000  # rounds every 200 ms; a dead pool's partitions move within ~0.8 s
LATENESS = 3600 * S


def _aggregator() -> Aggregator:
    return Aggregator(
        rules=Rules((), default_rule([10 * S, 60 * S], STAT_KEYS)), wall_clock=lambda: 0
    )


@dataclass
class Deployment:
    """One prefix on the suite's Redis: pools made on demand and a producer's broker."""

    url: str
    prefix: str
    partitions: int
    producer: RedisBroker = field(init=False)
    pools: list[PartitionPool] = field(default_factory=list)
    brokers: list[RedisBroker] = field(default_factory=list)
    logged: list[tuple[str, Event]] = field(default_factory=list)
    _next: int = 0

    def __post_init__(self) -> None:
        self.producer = self._broker()
        self.topics = [f"t{i}" for i in range(3 * self.partitions)]

    def _broker(self) -> RedisBroker:
        broker = RedisBroker(
            self.url, prefix=self.prefix, history=100_000, partitions=self.partitions
        )
        self.brokers.append(broker)
        return broker

    def start(self) -> PartitionPool:
        pool = PartitionPool(
            self._broker(),
            _aggregator,
            lease_us=LEASE_US,
            tick_us=0,
            spawn=lambda rebuild: rebuild(),
            max_block_s=0.002,
        )
        self.pools.append(pool)
        return pool

    def stop(self, pool: PartitionPool) -> None:
        """Gracefully: what was applied is published, the leases released, the member gone."""
        self.pools.remove(pool)
        pool.leave()

    def kill(self, pool: PartitionPool) -> None:
        """Dies: its connections close, nothing is released, nothing more is published."""
        self.pools.remove(pool)
        pool.close()

    def post(self, count: int) -> None:
        """`count` events, one per batch, over the topics in turn (every partition gets some)."""
        base = 1_763_700_000 * S
        for _ in range(count):
            n = self._next
            self._next += 1
            topic = self.topics[n % len(self.topics)]
            event = Event(float(n), base + n * 1000, None)
            self.producer.append_events(topic, [event], lateness_us=LATENESS)
            self.logged.append((topic, event))

    def step(self, seconds: float = 0.0) -> None:
        """Every live pool steps in turn, for `seconds` (once at least)."""
        until = time.monotonic() + seconds
        while True:
            for pool in self.pools:
                pool.step()
            if time.monotonic() >= until:
                return

    def step_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
            self.step()

    # -- the model ---------------------------------------------------------------------------

    def owners(self) -> dict[int, list[int]]:
        """Partition -> the live pools (by index) that hold it."""
        held: dict[int, list[int]] = {i: [] for i in range(self.partitions)}
        for index, pool in enumerate(self.pools):
            for shard in pool.owned:
                held[shard[0]].append(index)
        return held

    def balanced(self) -> bool:
        """Every partition has exactly one owner; the shares differ by at most one, and each
        pool has rebuilt what it holds."""
        if not self.pools:
            return False
        if any(len(owners) != 1 for owners in self.owners().values()):
            return False
        shares = [len(pool.owned) for pool in self.pools]
        return max(shares) - min(shares) <= 1 and all(
            len(pool.runners) == len(pool.owned) for pool in self.pools
        )

    def history(self) -> list[dict[str, object]]:
        client = redis.Redis.from_url(self.url)
        try:
            # Every partition's history; one Redis numbers them all by its one clock.
            entries = sorted(
                (
                    entry
                    for part in Keys(self.prefix, self.partitions)
                    for entry in client.xrange(part.history)
                ),
                key=lambda entry: position(entry[0].decode()),
            )
        finally:
            client.close()
        return [orjson.loads(fields[b"b"]) for _, fields in entries]

    def all_published(self) -> bool:
        return len(self.history()) >= len(self.logged)

    def check_exactly_once(self) -> None:
        """Every logged event yielded one update, in order per topic, each equal to what an
        uninterrupted aggregator publishes."""
        reference = _aggregator()
        expected: dict[float, dict[str, object]] = {}
        for topic, event in self.logged:
            for draft in reference.apply_events(topic, [event]):
                body = orjson.loads(draft.body)
                expected[body["event"]["value"]] = body
        got = self.history()
        values = [u["event"]["value"] for u in got]  # type: ignore[index]
        assert len(values) == len(set(values)), "an event yielded two updates"
        assert sorted(values) == sorted(expected), "an event yielded no update"
        for topic in self.topics:
            mine = [u for u in got if u["topic"] == topic]
            want = [e.value for t, e in self.logged if t == topic]
            assert [u["event"]["value"] for u in mine] == want, topic  # type: ignore[index]
        for update in got:
            assert update == expected[update["event"]["value"]]  # type: ignore[index]

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
        for broker in self.brokers:
            broker.close()


@pytest.fixture
def deployment(redis_server: RedisServer, prefix: str) -> Iterator[Deployment]:
    made = Deployment(redis_server.url, prefix, partitions=6)
    yield made
    made.close()


def _settle(deployment: Deployment) -> None:
    deployment.step_until(deployment.balanced, 10, "every partition owned once, shares even")
    deployment.step_until(deployment.all_published, 10, "everything logged published")


def test_one_pool_takes_every_partition(deployment: Deployment) -> None:
    pool = deployment.start()
    deployment.post(20)
    _settle(deployment)
    assert pool.owned == [(i, 6) for i in range(6)]
    assert pool.members == 1
    deployment.check_exactly_once()


def test_a_pool_that_starts_takes_its_share_within_a_lease_period(
    deployment: Deployment,
) -> None:
    deployment.start()
    deployment.post(30)
    _settle(deployment)
    started = time.monotonic()
    deployment.start()
    deployment.post(30)
    deployment.step_until(deployment.balanced, 10, "the new pool has its share")
    # A round to see it, one to take (and room for a loaded machine).
    assert time.monotonic() - started < 4 * LEASE_US / S
    deployment.post(30)
    _settle(deployment)
    assert sorted(len(p.owned) for p in deployment.pools) == [3, 3]
    deployment.check_exactly_once()


def test_the_partitions_of_a_pool_that_dies_move_to_the_others(deployment: Deployment) -> None:
    first, second, third = deployment.start(), deployment.start(), deployment.start()
    deployment.post(30)
    _settle(deployment)
    assert sorted(len(p.owned) for p in (first, second, third)) == [2, 2, 2]
    deployment.post(10)
    deployment.step(0.05)  # some published, some not: the successor publishes the rest
    deployment.kill(second)
    deployment.post(20)
    killed = time.monotonic()
    deployment.step_until(deployment.balanced, 10, "the survivors hold everything")
    assert time.monotonic() - killed < 4 * LEASE_US / S  # the lease lapses, a round sees it
    assert sorted(len(p.owned) for p in deployment.pools) == [3, 3]
    _settle(deployment)
    deployment.check_exactly_once()


def test_a_pool_that_stops_hands_over_at_once(deployment: Deployment) -> None:
    first, second = deployment.start(), deployment.start()
    deployment.post(30)
    _settle(deployment)
    deployment.post(10)
    deployment.stop(first)  # publishes what it applied, releases its leases, leaves
    deployment.step_until(deployment.balanced, 10, "the other holds everything")
    assert second.owned == [(i, 6) for i in range(6)]
    _settle(deployment)
    deployment.check_exactly_once()


@dataclass(frozen=True)
class Op:
    kind: str  # start, stop, kill
    which: int  # the pool's index among the live ones (mod their count)
    events: int  # posted before it
    steps_s: float  # stepped after it, before the next: mid-handover or settled


_OPS = st.builds(
    Op,
    st.sampled_from(["start", "start", "stop", "kill"]),
    st.integers(0, 3),
    st.integers(0, 15),
    st.sampled_from([0.0, 0.05, 0.3]),
)


@settings(
    max_examples=6,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_OPS, min_size=2, max_size=6), partitions=st.sampled_from([1, 4, 7]))
def test_any_sequence_of_pools_coming_and_going_keeps_the_promise(
    redis_server: RedisServer, ops: list[Op], partitions: int
) -> None:
    """Whatever pools start, stop or die, and whenever: once they settle, each partition has
    one owner, the shares differ by at most one, every event yielded one update."""
    prefix = f"pp{time.monotonic_ns()}:"
    deployment = Deployment(redis_server.url, prefix, partitions=partitions)
    try:
        deployment.start()
        for op in ops:
            deployment.post(op.events)
            if op.kind == "start":
                deployment.start()
            elif len(deployment.pools) > 1:  # one stays, or nothing would ever publish
                pool = deployment.pools[op.which % len(deployment.pools)]
                (deployment.stop if op.kind == "stop" else deployment.kill)(pool)
            deployment.step(op.steps_s)
        deployment.post(5)
        _settle(deployment)
        deployment.check_exactly_once()
    finally:
        deployment.close()


@given(partitions=st.integers(1, 1024), members=st.sets(st.text(min_size=1), max_size=40))
def test_the_shares_add_up_and_differ_by_at_most_one(partitions: int, members: set[str]) -> None:
    me = "me"
    everyone = sorted(members | {me})
    shares = [quota(everyone, m, partitions) for m in everyone]
    assert sum(shares) == partitions
    assert max(shares) - min(shares) <= 1
    assert quota(sorted(members), me, partitions) == quota(everyone, me, partitions)


def test_a_topic_belongs_to_the_pool_holding_its_partition(deployment: Deployment) -> None:
    first, second = deployment.start(), deployment.start()
    _settle(deployment)
    for topic in deployment.topics:
        shard = (partition_of(topic, 6), 6)
        assert first.owns(topic) == (shard in first.owned)
        assert first.owns(topic) != second.owns(topic)


def _two_pools_then_redis_empty(
    deployment: Deployment, redis_server: RedisServer
) -> tuple[PartitionPool, PartitionPool, list[list[tuple[int, int]]], list[list[str]]]:
    """Two pools settled over posted topics, then Redis emptied (FLUSHALL, as a restart that
    kept nothing): the pools, and what each owned and applied before."""
    first, second = deployment.start(), deployment.start()
    deployment.post(30)
    _settle(deployment)
    owned = [first.owned, second.owned]
    topics = [sorted(first.topics()), sorted(second.topics())]
    control = redis.Redis(port=redis_server.port)
    control.flushall()
    control.close()
    deployment.logged.clear()  # what was logged is gone; what comes next is checked
    return first, second, owned, topics


def test_after_redis_lost_everything_each_pool_takes_its_own_partitions_back(
    own_redis: RedisServer, prefix: str
) -> None:
    """Redis restarted empty: the membership and the leases are gone with the log. Each pool
    still holds its partitions' windows, which the log can no longer rebuild, so each takes
    its own leases back, and nobody takes another's (a round takes only when it sees the
    members the round before saw)."""
    deployment = Deployment(own_redis.url, prefix, partitions=6)
    try:
        first, second, owned, topics = _two_pools_then_redis_empty(deployment, own_redis)
        deployment.step(3 * LEASE_US / S)
        assert [first.owned, second.owned] == owned
        assert [sorted(first.topics()), sorted(second.topics())] == topics
        assert deployment.balanced()
    finally:
        deployment.close()


def test_after_redis_lost_everything_a_pool_slow_to_rejoin_keeps_its_partitions(
    own_redis: RedisServer, prefix: str
) -> None:
    """Redis restarted empty, and one pool's rounds go on alone for most of a lease before the
    other's first (an aggregator whose reads failed while Redis was away waits 0.5 s between
    tries, another with nothing to read rounds every ttl/3): they see the same lone member
    twice, and must take nothing yet. A pool that finds it has to join again waits a lease,
    the time every live member has to renew its membership, before it takes a partition."""
    deployment = Deployment(own_redis.url, prefix, partitions=6)
    try:
        first, second, owned, topics = _two_pools_then_redis_empty(deployment, own_redis)
        alone_until = time.monotonic() + 0.8 * LEASE_US / S  # rounds every ttl/3: three
        while time.monotonic() < alone_until:
            second.step()
        assert second.owned == owned[1], "it took partitions before the others re-joined"
        deployment.step(3 * LEASE_US / S)
        assert [first.owned, second.owned] == owned
        assert [sorted(first.topics()), sorted(second.topics())] == topics
        assert deployment.balanced()
    finally:
        deployment.close()
