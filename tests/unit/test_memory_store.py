"""The memory twin's own behaviour beyond the shared contract (test_log_contract.py): store
errors injected by its test subclass (`support.memory_core.FaultyStore`), and what the tenure
rule makes of them, on a manual clock; and that the shipped store takes no such hook."""

from __future__ import annotations

import pytest

from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.tenure import CLOCK_MARGIN
from pushsvc.core.event import Event
from pushsvc.core.partitions import Partition
from pushsvc.errors import BrokerUnavailable
from support.memory_core import Fate, FaultyStore, ManualClock

S = 1_000_000
TTL_US = 600_000
SHARD: Partition = (0, 1)


class OneFault:
    """The next call of `operation` meets `fate`."""

    def __init__(self) -> None:
        self.armed: dict[str, Fate] = {}

    def __call__(self, operation: str, shard: object) -> Fate:
        return self.armed.pop(operation, Fate.OK)


@pytest.fixture
def world() -> tuple[ManualClock, Store, OneFault]:
    clock = ManualClock()
    faults = OneFault()
    return clock, FaultyStore(1, clock=clock, faults=faults), faults


def test_a_failed_renewal_keeps_the_lease_until_its_confirmed_expiry(
    world: tuple[ManualClock, Store, OneFault],
) -> None:
    clock, store, faults = world
    group = MemoryBroker(store).lease_group(ttl_us=TTL_US)
    group.round()
    lease = group.take([SHARD])[SHARD]
    confirmed = clock() + TTL_US / S * (1 - CLOCK_MARGIN)
    clock.advance(0.2)
    faults.armed["renew"] = Fate.FAIL
    group.round()
    assert lease.holding  # one failed renewal says nothing about the lease
    clock.advance(confirmed - clock())
    faults.armed["round"] = Fate.FAIL
    with pytest.raises(BrokerUnavailable):
        group.round()
    assert not lease.holding  # no renewal confirmed before it expired


def test_a_renewal_whose_reply_is_lost_still_renewed_the_lease(
    world: tuple[ManualClock, Store, OneFault],
) -> None:
    clock, store, faults = world
    group = MemoryBroker(store).lease_group(ttl_us=TTL_US)
    group.round()
    lease = group.take([SHARD])[SHARD]
    token = lease.token
    clock.advance(0.2)
    faults.armed["renew"] = Fate.LOST
    group.round()
    clock.advance(0.5)  # past the expiry of the renewal before, not of the lost one
    assert store.holder(0) == token
    group.round()
    assert lease.holding and lease.token == token


def test_an_append_whose_reply_is_lost_is_in_the_log(
    world: tuple[ManualClock, Store, OneFault],
) -> None:
    _, store, faults = world
    broker = MemoryBroker(store)
    faults.armed["append"] = Fate.LOST
    with pytest.raises(BrokerUnavailable):
        broker.append_events("t", [Event(1.0, 5 * S, None)], lateness_us=S)
    faults.armed["append"] = Fate.FAIL
    with pytest.raises(BrokerUnavailable):
        broker.append_events("t", [Event(2.0, 6 * S, None)], lateness_us=S)
    entries = broker.event_log(SHARD).read("0-0", count=10)
    assert [e.events[0].value for e in entries if e.events] == [1.0]


def test_a_deletion_trimmed_from_the_history_is_no_longer_remembered() -> None:
    """A topic's reads start after its newest deletion while the history holds it; once
    trimmed, nothing of the topic before it is left to skip, and the store forgets it (a
    deleted topic never read again would be kept for ever)."""
    from pushsvc.broker.memory.published import Published
    from pushsvc.core.updates import UpdateDraft, deletion_draft

    published = Published(0, history=2, alert_retention_ms=1000)

    def no_point(draft: UpdateDraft) -> bool:
        raise AssertionError("no point here")

    def publish(*drafts: UpdateDraft) -> None:
        published.publish(drafts, 1_000, no_point, lambda topic: None)

    publish(UpdateDraft("a", 1, b"{}"), deletion_draft("a", 2))
    assert "a" in published.deletions
    assert published.topic_history("a", after=None, since_us=0, limit=10).updates == []
    publish(UpdateDraft("b", 3, b"{}"))
    assert "a" in published.deletions  # still in the history: reads start after it
    publish(UpdateDraft("b", 4, b"{}"))
    assert "a" not in published.deletions
    assert [u.topic for u in published.history] == ["b", "b"]


def test_the_log_keeps_events_the_garbage_collector_no_longer_tracks() -> None:
    """The events of the widest window live in the log for minutes: kept as objects, every
    full pass of the collector walked them all. Kept packed, the passes of the younger
    generations untrack them, and a read gives the same events back, the first one the very
    events appended (no unpacking on the aggregator's way)."""
    import gc

    from pushsvc.broker.memory.log import MemoryEventLog
    from pushsvc.broker.shared_log import FIRST

    clock = ManualClock()
    store = Store(1, clock=clock)
    events = [
        Event(float(i), 10 * S + i, {"site": f"s{i % 3}"} if i % 2 else None) for i in range(50)
    ]
    store.append("t", events, 60 * S, None)
    gc.collect()  # the tags' tuples; then, as a younger generation's next pass does, the events'
    gc.collect()
    [logged] = store.parts[0].entries
    assert not any(gc.is_tracked(packed) for packed in logged.packed)  # type: ignore[union-attr]
    log = MemoryEventLog(store, SHARD)
    [entry] = log.read(FIRST, count=10)
    assert entry.events == events and entry.events[1] is events[1]
    # The first read takes the events as appended; then the log holds only the packed ones,
    # and a read unpacks them.
    assert logged.fresh is None  # type: ignore[union-attr]
    [again] = log.read(FIRST, count=10)
    assert again.events == events and again.events[1] is not events[1]


def test_a_read_stops_at_the_entry_that_brings_enough_events() -> None:
    """A reader far behind gets a few big batches at a time, not 512 of them."""
    from pushsvc.broker.memory.log import READ_EVENTS, MemoryEventLog
    from pushsvc.broker.shared_log import FIRST

    clock = ManualClock()
    batch = [Event(1.0, 10 * S + i) for i in range(READ_EVENTS // 3 + 1)]
    store = Store(1, clock=clock)
    store.entry_events = len(batch)  # a batch an entry
    for _ in range(6):
        store.append("t", batch, 60 * S, None)
    log = MemoryEventLog(store, SHARD)
    first = log.read(FIRST, count=512)
    assert len(first) == 3  # the third brings it past READ_EVENTS
    rest = log.read(first[-1].id, count=512)
    assert len(rest) == 3
    assert [len(e.events or ()) for e in first + rest] == [len(batch)] * 6


def test_the_shipped_store_takes_no_test_hook() -> None:
    """Faults, journals, manual clocks and a waiter that never waits live in tests/support,
    as subclasses and wrappers of the product's classes; the product carries none of them."""
    import inspect

    import pushsvc.broker.memory as memory

    hooks = {"faults", "journal", "blocking", "entry_events"}
    assert not hooks & set(inspect.signature(Store).parameters)
    assert not {"ManualClock", "Fate", "Faults", "no_faults"} & set(dir(memory))
