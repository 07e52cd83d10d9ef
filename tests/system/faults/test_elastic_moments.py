"""Elastic aggregators under faults: partitions moving between `pushsvc aggregate` processes
that come and go, with kill -9 at chosen moments (docs/reliability.md, "The fault suite").

Each case runs 4 partitions, two web processes, the six streams of `moments.subscribers` and
a producer posting 60 events a second over three topics with an Idempotency-Key, starting
from one aggregator that holds every partition; then:

* `added` — a second aggregator starts: half the partitions move to it (the first hands
  them over: publishes what it applied, releases), under load;
* `added-first-killed-at-handover-{offset}` — a second starts, and the first is killed that
  long after it said it gave a lease up (mid-handover: some given, some not yet);
* `added-newcomer-killed-at-takeover-{offset}` — a second starts, and is killed that long
  after it took its first lease (it may be rebuilding, or publishing already);
* `killed` — two share the partitions, one is killed: its partitions move to the other;
* `killed-mid-batch` — two share, and the holder of the first topic's partition is killed
  at the first bytes of that topic's updates of a 1,700-event batch.

Every case then keeps posting through the survivor and checks the delivery promise per
stream (`moments.check_exactly_once`: one update per acknowledged event, in order, equal to
an uninterrupted run's, windows equal to pandas'). Each kind runs once on one redis-server,
the truth check, and those of `CLUSTER_MOMENTS` once on a Redis Cluster, whose three
primaries the four partitions spread over (backends.py). The kinds at another offset, and a
second run of each (where the faults fall at other points of the work), run with
`TEST_PUSHSVC_EVERY_MOMENT=1`. The simulation (tests/simulation) kills at every point of a
handover and a takeover instead: each slice of its seeds must reach a member joining, a
graceful stop, a death within a lease of a take and a death mid-handover at least 5 times
(it reaches them about 1,700, 1,300, 600 and 140 times).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness.live import PushsvcProcess, wait_until

from faults.backends import Store, on_both
from faults.moments import (
    EVERY_MOMENT,
    Case,
    KeyedProducer,
    KillOnFirstMessage,
    check_exactly_once,
    paused,
    report,
    settle,
    subscribers,
    truth_checks,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PARTITIONS = 4
BIG_BATCH = 1700


def _leases(case: Case) -> list[str]:
    return [case.keys.partition(i).lease for i in range(PARTITIONS)]


def _held(case: Case, aggregator: PushsvcProcess) -> list[str]:
    return [key for key in _leases(case) if aggregator.holds_lease(key)]


def _start(case: Case) -> PushsvcProcess:
    """The first aggregator, once it holds every partition and the bridge; then the webs."""
    first = case.stack.start_aggregator()
    wait_until(
        lambda: len(_held(case, first)) == PARTITIONS and first.holds_lease(case.bridge_lease),
        what="the first aggregator holds every partition",
    )
    case.stack.start_web()
    case.stack.start_web()
    return first


def _shared(case: Case, timeout: float) -> None:
    """Until the live aggregators hold every partition once, in shares that differ by at
    most one."""
    live = [a for a in case.stack.aggregators if a.proc is not None and a.proc.poll() is None]

    def even() -> bool:
        shares = [_held(case, a) for a in live]
        every = sorted(key for share in shares for key in share)
        counts = [len(share) for share in shares]
        return every == sorted(_leases(case)) and max(counts) - min(counts) <= 1

    wait_until(even, timeout=timeout, interval=0.01, what="every partition owned once, evenly")


def _said(aggregator: PushsvcProcess, text: str, timeout: float) -> float:
    """Wait until `aggregator` logs `text`; when (time.monotonic) it was seen."""
    wait_until(
        lambda: any(text in line for line in aggregator.output),
        timeout=timeout,
        interval=0.002,
        what=f"{text!r} in the log",
    )
    return time.monotonic()


Moment = Callable[[Case, KeyedProducer, PushsvcProcess], dict[str, object]]


def added(case: Case, producer: KeyedProducer, first: PushsvcProcess) -> dict:
    started = time.monotonic()
    case.stack.start_aggregator()
    _shared(case, case.takeover_timeout)
    return {"share_moved_s": round(time.monotonic() - started, 2)}


def first_killed_at_handover(offset: float) -> Moment:
    def moment(case: Case, producer: KeyedProducer, first: PushsvcProcess) -> dict:
        case.stack.start_aggregator()
        seen = _said(first, "gave up the lease", case.takeover_timeout)
        time.sleep(max(0.0, seen + offset - time.monotonic()))
        case.stack.kill_aggregator(first)
        killed = time.monotonic()
        _shared(case, case.takeover_timeout)
        return {"moved_s": round(time.monotonic() - killed, 2)}

    return moment


def newcomer_killed_at_takeover(offset: float) -> Moment:
    def moment(case: Case, producer: KeyedProducer, first: PushsvcProcess) -> dict:
        newcomer = case.stack.start_aggregator()
        seen = _said(newcomer, f"took the lease {case.prefix}{{", case.takeover_timeout)
        time.sleep(max(0.0, seen + offset - time.monotonic()))
        case.stack.kill_aggregator(newcomer)
        killed = time.monotonic()
        _shared(case, case.takeover_timeout)
        return {"moved_back_s": round(time.monotonic() - killed, 2)}

    return moment


def killed(case: Case, producer: KeyedProducer, first: PushsvcProcess) -> dict:
    case.stack.start_aggregator()
    _shared(case, case.takeover_timeout)
    case.stack.kill_aggregator(first)
    killed_at = time.monotonic()
    _shared(case, case.takeover_timeout)
    return {"moved_s": round(time.monotonic() - killed_at, 2)}


def killed_mid_batch(case: Case, producer: KeyedProducer, first: PushsvcProcess) -> dict:
    a = case.topics[0]
    case.stack.start_aggregator()
    _shared(case, case.takeover_timeout)
    key = case.keys.of(a).lease
    holder = case.holder(key=key)
    with paused(producer):
        killer = KillOnFirstMessage(case, a, holder.pid)
        producer.deliver(producer.next_batch(BIG_BATCH, a))
        assert killer.fired(30), "nothing was published"
        case.stack.kill_aggregator(holder)
    killed_at = time.monotonic()
    _shared(case, case.takeover_timeout)
    return {"moved_s": round(time.monotonic() - killed_at, 2)}


MOMENTS: dict[str, Moment] = {
    "added": added,
    "added-first-killed-at-handover": first_killed_at_handover(0.0),
    "added-first-killed-0.3s-after-handover": first_killed_at_handover(0.3),
    "added-newcomer-killed-at-takeover": newcomer_killed_at_takeover(0.0),
    "added-newcomer-killed-0.5s-after-takeover": newcomer_killed_at_takeover(0.5),
    "killed": killed,
    "killed-mid-batch": killed_mid_batch,
}

CLUSTER_MOMENTS = (
    "added",
    "added-first-killed-at-handover",
    "added-newcomer-killed-at-takeover",
    "killed-mid-batch",
)
"""The moments that also run on the cluster, one of each kind: a handover, a kill mid-handover,
a kill mid-takeover, a kill mid-publish. The others are the same kinds at another offset
(`TEST_PUSHSVC_EVERY_CASE_ON_CLUSTER=1` runs them there too)."""

OTHER_OFFSETS = (
    "added-first-killed-0.3s-after-handover",
    "added-newcomer-killed-0.5s-after-takeover",
)
"""Kinds that run at their first offset anyway (`moments.truth_checks`)."""
RUNS = (1, 2) if EVERY_MOMENT else (1,)


@pytest.mark.parametrize(
    ("moment", "run", "backend"),
    on_both(truth_checks(MOMENTS, OTHER_OFFSETS), RUNS, cluster=CLUSTER_MOMENTS),
    indirect=["backend"],
)
def test_partitions_move_between_aggregators(
    store: Store, backend: str, moment: str, run: int
) -> None:
    env = {"PUSHSVC_PARTITIONS": str(PARTITIONS)}
    with Case(store, lease="1s", env=env) as case:
        first = _start(case)
        watchers = subscribers(case)
        producer = KeyedProducer(case)
        producer.start()
        wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
        figures = MOMENTS[moment](case, producer, first)
        # Load through the survivors too: 30 more events posted, then all of them received.
        after = producer.acked_values() + 30
        wait_until(lambda: producer.acked_values() >= after, timeout=10)
        settle(watchers, producer)
        figures |= producer.figures() | check_exactly_once(watchers, producer.acked, case.topics)
    report(f"elastic {moment}, run {run}, {backend}", figures)
