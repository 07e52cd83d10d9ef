"""kill -9 of the lease-holding aggregator at chosen moments, with a 1 s lease (and 2 s with
`TEST_PUSHSVC_EVERY_LEASE=1`) on one redis-server, and those of `CLUSTER_MOMENTS` once
(lease 1 s) on a Redis Cluster (backends.py).

Each case runs two web processes, three aggregators (the holder and two standbys), the six
streams of `moments.subscribers` and a producer posting 60 events a second over three
topics with an Idempotency-Key; it kills at its moment, keeps posting until a successor
publishes again, and checks the delivery promise per stream (`moments.check_exactly_once`):

* `read-not-published` — the holder, frozen once it has published everything (so it waits in
  its blocking read), has that read answered by a 20-event batch and is killed before it can
  publish it;
* `between-publishes` — the holder is killed between two publishes of one read: three
  batches of 1,700 events (six entries, more drafts than one publish takes) go out in several,
  and the kill comes with the first bytes of the first (checked from the applied position:
  past the read's start, short of its end; on a busy machine it may come after all of them,
  and the case tries again, three rounds at most);
* `standby-at-expiry-{offset}` — the holder is killed, then a standby at the moment the dead
  holder's lease expires (read from Redis), plus the offset: the other standby takes over;
* `successor-after-takeover-{offset}` — the holder is killed, then the standby that took its
  lease over, that long after it took it: the last standby takes over from where it stopped.

The kinds with offsets run at one by default (`OTHER_OFFSETS`: `TEST_PUSHSVC_EVERY_MOMENT=1`
runs the others).

A holder whose view of what it published goes stale is in test_stale_holder.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness.live import PushsvcProcess, wait_until

from faults.backends import Store, on_both
from faults.moments import (
    LEASES,
    Case,
    KeyedProducer,
    KillOnFirstMessage,
    check_exactly_once,
    freeze,
    paused,
    report,
    settle,
    sleep_until,
    subscribers,
    thaw,
    truth_checks,
    wait_renewed,
)
from pushsvc.broker.shared_log import position

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BIG_BATCH = 1700  # each logged as two entries (1,000 and 700), each published on its own

Moment = Callable[[Case, KeyedProducer, PushsvcProcess], dict[str, object]]


def read_not_published(case: Case, producer: KeyedProducer, holder: PushsvcProcess) -> dict:
    with paused(producer):
        case.wait_published()
        freeze(holder)
        producer.deliver(producer.next_batch(20))
        logged = case.last_logged()
        case.stack.kill_aggregator(holder)
    killed = time.monotonic()
    assert case.applied() != logged, "the batch was published before the kill"
    case.holder(besides=[holder], timeout=case.takeover_timeout)
    return {"takeover_s": round(time.monotonic() - killed, 2)}


def between_publishes(case: Case, producer: KeyedProducer, holder: PushsvcProcess) -> dict:
    """Up to three rounds: on a busy machine the kill may come after both publishes (a fault
    all the same, checked like the others), and the next round tries again with the next
    holder, a fresh standby started in place of the dead one."""
    for round_ in range(1, 4):
        hit, killed = _kill_between_publishes(case, producer, holder)
        successor = case.holder(besides=[holder], timeout=case.takeover_timeout)
        figures = {"takeover_s": round(time.monotonic() - killed, 2), "rounds": round_}
        if hit:
            return figures
        holder = successor
        case.stack.start_aggregator()
    raise AssertionError("three rounds, and never killed between two publishes")


def _kill_between_publishes(
    case: Case, producer: KeyedProducer, holder: PushsvcProcess
) -> tuple[bool, float]:
    """Whether the holder was killed between two publishes of one read, and when."""
    a, b, c = case.topics
    standbys = [s for s in case.stack.aggregators if s is not holder]
    with paused(producer):
        case.wait_published()
        killer = KillOnFirstMessage(case, a, holder.pid)
        # Frozen right after renewing its lease, so that the lease outlives the posting.
        wait_renewed(case.redis, case.shard_lease, "the holder renews its lease")
        freeze(holder)
        # Its blocked read is answered by this one, so the three big ones come in one read.
        producer.deliver(producer.next_batch(1, c))
        start = case.last_logged()
        for topic in (a, b, c):
            producer.deliver(producer.next_batch(BIG_BATCH, topic))
        end = case.last_logged()
        taken = any(s.holds_lease(case.shard_lease) for s in standbys)  # frozen too long
        thaw(holder)
        assert killer.fired(30), "nothing was published"
        case.stack.kill_aggregator(holder)
    between = position(start) < position(case.applied()) < position(end)
    return not taken and between, time.monotonic()


def standby_at_expiry(offset: float) -> Moment:
    def moment(case: Case, producer: KeyedProducer, holder: PushsvcProcess) -> dict:
        standbys = [a for a in case.stack.aggregators if a is not holder]
        case.stack.kill_aggregator(holder)
        expiry = case.expires_at(case.shard_lease)
        sleep_until(expiry + offset)
        taken = [s for s in standbys if s.holds_lease(case.shard_lease)]
        victim = taken[0] if taken else standbys[0]
        case.stack.kill_aggregator(victim)
        killed = time.monotonic()
        case.holder(besides=[holder, victim], timeout=case.takeover_timeout)
        return {
            "standby_had_taken_over": bool(taken),
            "takeover_s": round(time.monotonic() - killed, 2),
        }

    return moment


def successor_after_takeover(offset: float) -> Moment:
    def moment(case: Case, producer: KeyedProducer, holder: PushsvcProcess) -> dict:
        case.stack.kill_aggregator(holder)
        successor = case.holder(besides=[holder], timeout=case.takeover_timeout)
        sleep_until(time.monotonic() + offset)
        case.stack.kill_aggregator(successor)
        killed = time.monotonic()
        case.holder(besides=[holder, successor], timeout=case.takeover_timeout)
        return {"takeover_s": round(time.monotonic() - killed, 2)}

    return moment


MOMENTS: dict[str, Moment] = {
    "read-not-published": read_not_published,
    "between-publishes": between_publishes,
    "standby-at-expiry-0.2s-before": standby_at_expiry(-0.2),
    "standby-at-expiry": standby_at_expiry(0.0),
    "successor-at-takeover": successor_after_takeover(0.0),
    "successor-0.3s-after-takeover": successor_after_takeover(0.3),
}

CLUSTER_MOMENTS = ("read-not-published", "between-publishes", "successor-at-takeover")
"""The moments that also run on the cluster: a read woken by the partition's wake channel and
never published, a kill between two publishes on sharded channels, a successor's successor
going on from the applied position. The others move when a lease lapses: one key, alike on
both (`TEST_PUSHSVC_EVERY_CASE_ON_CLUSTER=1` runs them there too)."""

OTHER_OFFSETS = ("standby-at-expiry-0.2s-before", "successor-0.3s-after-takeover")
"""Kinds that run at their first offset anyway; these run with `TEST_PUSHSVC_EVERY_MOMENT=1`
(`moments.truth_checks`). The simulation kills and stalls before every take and renewal, and
a successor after its take, tens to hundreds of times a slice (tests/simulation)."""


@pytest.mark.parametrize(
    ("moment", "lease", "backend"),
    on_both(truth_checks(MOMENTS, OTHER_OFFSETS), LEASES, cluster=CLUSTER_MOMENTS),
    indirect=["backend"],
)
def test_kill_9_of_the_holder_at_a_moment(
    store: Store, backend: str, moment: str, lease: str
) -> None:
    with Case(store, lease=lease) as case:
        holder = case.start()
        watchers = subscribers(case)
        producer = KeyedProducer(case)
        producer.start()
        wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
        figures = MOMENTS[moment](case, producer, holder)
        # Load through the successor too: 30 more events posted, then all of them received.
        after = producer.acked_values() + 30
        wait_until(lambda: producer.acked_values() >= after, timeout=10)
        settle(watchers, producer)
        figures |= producer.figures() | check_exactly_once(watchers, producer.acked, case.topics)
    report(f"aggregator {moment}, lease {lease}, {backend}", figures)
