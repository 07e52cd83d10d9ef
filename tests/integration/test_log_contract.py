"""The shared-log contract (pushsvc.broker.shared_log): one suite, three implementations.

The memory twin (`pushsvc.broker.memory`, on a manual clock), one real redis-server and a real
Redis Cluster must all pass it: leases and their tenures, fences, applied positions recorded
with the updates, the waiter, the lease group's rounds and the log itself. What the
simulation (tests/simulation/) finds on the twin holds for Redis only as far as this suite
holds them to the same behaviour.

Time: the twin's clock is moved (`lapse`); on Redis a lease or a membership lapses in real
time, awaited (short ttls), never slept for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from harness.live import wait_until

from pushsvc.broker.base import Applied
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.shared_log import FIRST, Lease, LeaseGroup, LogBroker, position
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event
from pushsvc.core.partitions import Partition, partition_of
from pushsvc.core.updates import Update, UpdateDraft
from pushsvc.errors import Fenced, LateEvent, PublishedAlready
from support.memory_core import ManualClock

S = 1_000_000
PARTITIONS = 2
TTL_US = 30 * S
"""Long enough to hold through a test on a loaded machine."""
SHORT_TTL_US = 400_000
"""Of a lease a test lets lapse: on Redis it takes well under a second."""
LATENESS_US = 3600 * S
BASE_US = 1_763_700_000 * S


@dataclass
class Deployment:
    """Processes (brokers) on one store: the twin's, or one Redis prefix."""

    kind: str
    url: str = ""
    prefix: str = ""
    clock: ManualClock = field(default_factory=ManualClock)
    made: list[LogBroker] = field(default_factory=list)
    groups: list[LeaseGroup] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = Store(PARTITIONS, clock=self.clock)

    def broker(self) -> LogBroker:
        made: LogBroker = (
            MemoryBroker(self.store)
            if self.kind == "twin"
            else RedisBroker(self.url, prefix=self.prefix, partitions=PARTITIONS)
        )
        self.made.append(made)
        return made

    def group(self, ttl_us: int = TTL_US) -> LeaseGroup:
        made = self.broker().lease_group(ttl_us=ttl_us)
        self.groups.append(made)
        return made

    def lapse(self, shard: Partition) -> None:
        """Until the shard's lease, taken with SHORT_TTL_US, has expired (nobody renewing
        it)."""
        if self.kind == "twin":
            self.clock.advance(SHORT_TTL_US / S)
            return
        client = single_client(self.url, socket_timeout=5.0)
        key = Keys(self.prefix, PARTITIONS).shard(shard).lease
        try:
            wait_until(lambda: not client.exists(key), timeout=5, what="the lease lapsed")
        finally:
            client.close()

    def until_gone(self, watcher: LeaseGroup, member: str) -> None:
        """Until `watcher`'s rounds no longer see `member` (which joined with SHORT_TTL_US and
        stopped renewing)."""
        if self.kind == "twin":
            self.clock.advance(SHORT_TTL_US / S)
        wait_until(lambda: member not in watcher.round().members, timeout=5, what="gone")

    def close(self) -> None:
        for group in self.groups:
            group.close()
        for broker in self.made:
            broker.close()


@pytest.fixture(
    params=[
        "twin",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    if request.param == "twin":
        made = Deployment("twin")
    else:
        server = request.getfixturevalue(
            "redis_server" if request.param == "redis" else "redis_cluster"
        )
        made = Deployment(request.param, server.url, request.getfixturevalue("prefix"))
    yield made
    made.close()


SHARD: Partition = (0, PARTITIONS)


def topic_of(shard: Partition, n: int = 0) -> str:
    """The `n`th topic name that falls in `shard`."""
    found = [f"topic-{i}" for i in range(200) if partition_of(f"topic-{i}", shard[1]) == shard[0]]
    return found[n]


def draft(topic: str, n: int) -> UpdateDraft:
    return UpdateDraft(topic, BASE_US + n, orjson.dumps({"topic": topic, "n": n}))


def post(broker: LogBroker, topic: str, n: int) -> None:
    broker.append_events(topic, [Event(float(n), BASE_US + n * S, None)], lateness_us=LATENESS_US)


def holder(deployment: Deployment, ttl_us: int = TTL_US) -> tuple[LeaseGroup, Lease]:
    """A process holding SHARD's lease, and the lease."""
    group = deployment.group(ttl_us)
    group.round()
    lease = group.take([SHARD])[SHARD]
    assert lease.holding
    return group, lease


# -- leases and tenures -------------------------------------------------------------------


def test_a_free_lease_is_taken_and_renewed_under_one_token(deployment: Deployment) -> None:
    group = deployment.group()
    roster = group.round()
    assert SHARD in roster.free
    lease = group.take([SHARD])[SHARD]
    token = lease.token
    assert lease.holding
    assert SHARD not in group.round().free
    assert lease.holding and lease.token == token


def test_a_lease_held_by_another_process_cannot_be_taken(deployment: Deployment) -> None:
    holder(deployment)
    second = deployment.group()
    assert SHARD not in second.round().free
    assert second.take([SHARD]) == {}


def test_a_lapsed_lease_nobody_took_resumes_its_tenure(deployment: Deployment) -> None:
    group = deployment.group(SHORT_TTL_US)
    group.round()
    lease = group.take([SHARD])[SHARD]
    token = lease.token
    deployment.lapse(SHARD)
    group.round()  # RESUMED: nothing was written under another token meanwhile
    assert lease.holding and lease.token == token


def test_a_lease_taken_by_another_meanwhile_is_a_new_tenure(deployment: Deployment) -> None:
    first = deployment.group(SHORT_TTL_US)
    first.round()
    lease = first.take([SHARD])[SHARD]
    old = lease.token
    deployment.lapse(SHARD)
    second = deployment.group()
    second.round()
    successor = second.take([SHARD])[SHARD]
    assert successor.token != old
    second.release(successor)
    first.round()  # free again, but taken since: a tenure of its own, under a fresh token
    assert lease.holding
    assert lease.token not in (old, successor.token)


def test_a_released_lease_is_free_at_once(deployment: Deployment) -> None:
    first, lease = holder(deployment)
    first.release(lease)
    assert not lease.holding
    second = deployment.group()
    assert SHARD in second.round().free
    assert second.take([SHARD])[SHARD].holding


# -- fences -------------------------------------------------------------------------------


def test_a_former_holders_writes_are_refused_and_change_nothing(deployment: Deployment) -> None:
    topic = topic_of(SHARD)
    first = deployment.group(SHORT_TTL_US)
    first.round()
    old = first.take([SHARD])[SHARD].token
    deployment.lapse(SHARD)
    second = deployment.group()
    second.round()
    new = second.take([SHARD])[SHARD].token
    broker = deployment.broker()
    post(broker, topic, 1)
    log = broker.event_log(SHARD)
    entry = log.read(FIRST, count=10)[0].id
    with pytest.raises(Fenced):
        broker.publish_updates(
            [draft(topic, 1)], applied=Applied(SHARD, entry, 1, FIRST), fence=old
        )
    with pytest.raises(Fenced):
        log.append_ticks(old, {topic: BASE_US + 5 * S}, entry)
    with pytest.raises(Fenced):
        log.forget(old, entry, {topic: BASE_US + S})
    checkpoint = Checkpoint(topic, position(entry), BASE_US + S, 0, b"", ())
    with pytest.raises(Fenced):
        log.save_checkpoints(old, [checkpoint])
    assert log.applied() == FIRST
    assert broker.latest_groups([topic]) == {}
    assert [e.id for e in log.read(FIRST, count=10)] == [entry]
    assert log.checkpoints() == []
    assert log.save_checkpoints(new, [checkpoint]) == 1


# -- applied positions --------------------------------------------------------------------


def test_the_applied_position_moves_with_the_updates(deployment: Deployment) -> None:
    topic = topic_of(SHARD)
    token = holder(deployment)[1].token
    broker = deployment.broker()
    got: list[Update] = []
    broker.consume_updates(got.extend).watch([topic])
    for n in range(3):
        post(broker, topic, n)
    log = broker.event_log(SHARD)
    entries = log.read(FIRST, count=10)
    published = broker.publish_updates(
        [draft(topic, 0), draft(topic, 1)],
        applied=Applied(SHARD, entries[1].id, 2, FIRST),
        fence=token,
    )
    assert [u.topic for u in published] == [topic, topic]
    assert published[0].id.seq < published[1].id.seq or published[0].id.ms < published[1].id.ms
    assert log.applied() == entries[1].id
    state = log.state()
    assert (state.applied, state.applied_count) == (entries[1].id, 2)
    assert state.clocks == {topic: BASE_US + 1}
    wait_until(lambda: len(got) == 2, timeout=5, what="both updates delivered")
    assert [u.id for u in got] == [u.id for u in published]


def test_a_batch_published_already_is_refused_whole(deployment: Deployment) -> None:
    topic = topic_of(SHARD)
    token = holder(deployment)[1].token
    broker = deployment.broker()
    for n in range(2):
        post(broker, topic, n)
    log = broker.event_log(SHARD)
    first, second = (e.id for e in log.read(FIRST, count=10))
    broker.publish_updates([draft(topic, 0)], applied=Applied(SHARD, first, 1, FIRST), fence=token)
    # An attempt whose answer was lost, tried again from where its caller last knew.
    with pytest.raises(PublishedAlready):
        broker.publish_updates(
            [draft(topic, 0), draft(topic, 1)],
            applied=Applied(SHARD, second, 2, FIRST),
            fence=token,
        )
    assert log.state().applied_count == 1
    broker.publish_updates([draft(topic, 1)], applied=Applied(SHARD, second, 1, first), fence=token)
    assert log.state().applied == second and log.state().applied_count == 2


def test_a_recorded_position_behind_the_batch_lets_it_through(deployment: Deployment) -> None:
    """A failover lost the last publishes: the batch continues from further on."""
    topic = topic_of(SHARD)
    token = holder(deployment)[1].token
    broker = deployment.broker()
    for n in range(2):
        post(broker, topic, n)
    log = broker.event_log(SHARD)
    first, second = (e.id for e in log.read(FIRST, count=10))
    broker.publish_updates([draft(topic, 1)], applied=Applied(SHARD, second, 1, first), fence=token)
    assert log.applied() == second


# -- the log ------------------------------------------------------------------------------


def test_the_log_reads_after_a_position_and_up_to_one(deployment: Deployment) -> None:
    topic = topic_of(SHARD)
    broker = deployment.broker()
    for n in range(5):
        post(broker, topic, n)
    log = broker.event_log(SHARD)
    entries = log.read(FIRST, count=10)
    assert [e.events[0].value for e in entries if e.events] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [position(e.id) for e in entries] == sorted(position(e.id) for e in entries)
    assert log.read(entries[1].id, count=2) == entries[2:4]
    assert log.upto(entries[0].id, entries[3].id, count=10) == entries[1:4]
    assert log.upto(FIRST, entries[3].id, count=2) == entries[:2]
    log.trim(entries[2].id)
    assert log.read(FIRST, count=10) == entries[2:]


def test_ticks_are_logged_by_the_holder_and_move_the_clock(deployment: Deployment) -> None:
    topic = topic_of(SHARD)
    token = holder(deployment)[1].token
    broker = deployment.broker()
    post(broker, topic, 10)
    log = broker.event_log(SHARD)
    log.append_ticks(token, {topic: BASE_US + 20 * S}, FIRST)
    assert log.read(FIRST, count=10)[-1].ticks == {topic: BASE_US + 20 * S}
    with pytest.raises(LateEvent):
        post(broker, topic, 20 - 3600 - 1)  # late against the ticked clock, not the event's


def test_a_topic_is_forgotten_only_if_nothing_was_logged_for_it_since(
    deployment: Deployment,
) -> None:
    quiet, busy = topic_of(SHARD, 0), topic_of(SHARD, 1)
    token = holder(deployment)[1].token
    broker = deployment.broker()
    post(broker, quiet, 1)
    post(broker, busy, 1)
    log = broker.event_log(SHARD)
    seen = log.read(FIRST, count=10)[-1].id
    post(broker, busy, 1)  # within the lateness: the clock stays, the entry tells
    clocks = {quiet: BASE_US + S, busy: BASE_US + S}
    assert log.forget(token, seen, clocks) == [quiet]
    assert log.read(FIRST, count=10)[-1].forgotten == [quiet]


def test_a_checkpoint_is_replaced_by_a_newer_one_only(deployment: Deployment) -> None:
    topic = topic_of(SHARD)
    token = holder(deployment)[1].token
    log = deployment.broker().event_log(SHARD)
    newer = Checkpoint(topic, (5, 0), BASE_US + 5, 0, b"new", ())
    older = Checkpoint(topic, (4, 0), BASE_US + 4, 0, b"old", ())
    assert log.save_checkpoints(token, [newer]) == 1
    assert log.save_checkpoints(token, [older]) == 0
    [kept] = log.checkpoints()
    assert (kept.position, kept.state) == ((5, 0), b"new")


# -- the waiter ---------------------------------------------------------------------------


def test_the_waiter_answers_the_partitions_with_entries(deployment: Deployment) -> None:
    other: Partition = (1, PARTITIONS)
    broker = deployment.broker()
    waiter = broker.log_waiter()
    try:
        assert waiter.wait({SHARD: FIRST, other: FIRST}, count=10, block_ms=20) == {}
        post(broker, topic_of(SHARD), 1)
        post(broker, topic_of(SHARD), 2)
        found = waiter.wait({SHARD: FIRST, other: FIRST}, count=1, block_ms=1000)
        assert list(found) == [SHARD] and len(found[SHARD]) == 1
        after = found[SHARD][0].id
        found = waiter.wait({SHARD: after, other: FIRST}, count=10, block_ms=1000)
        assert [e.events[0].value for e in found[SHARD] if e.events] == [2.0]
    finally:
        waiter.close()


# -- the group's rounds -------------------------------------------------------------------


def test_rounds_list_the_live_members_in_the_order_they_joined(deployment: Deployment) -> None:
    first = deployment.group()
    assert first.round().settled  # a first round is
    deployment.clock.advance(0.002)  # the twin's; on Redis, time passes anyway
    second = deployment.group()
    roster = second.round()
    assert set(roster.members) == {first.member, second.member}
    if first.member[:13] != second.member[:13]:  # ids start with the joining time (ms)
        assert roster.members[0] == first.member
    assert not first.round().settled  # a member joined since its last round
    assert first.round().settled


def test_a_member_that_stops_renewing_drops_out_and_its_leases_come_free(
    deployment: Deployment,
) -> None:
    # The watcher first: joining a cluster takes a while on a busy machine, and the short-lived
    # member must still be alive at the watcher's first round.
    watcher = deployment.group()
    gone, _ = holder(deployment, SHORT_TTL_US)
    assert gone.member in watcher.round().members
    deployment.until_gone(watcher, gone.member)
    deployment.lapse(SHARD)  # taken a moment after it joined: it lapses a moment later
    assert SHARD in watcher.round().free


def test_a_member_that_leaves_frees_its_leases_at_once(deployment: Deployment) -> None:
    leaving, _ = holder(deployment)
    watcher = deployment.group()
    watcher.round()
    leaving.leave()
    roster = watcher.round()
    assert leaving.member not in roster.members
    assert SHARD in roster.free
