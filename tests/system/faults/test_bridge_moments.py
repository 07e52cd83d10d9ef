"""kill -9 of the Redis bridge's lease holder at chosen moments, with a 1 s lease (and 2 s with
`TEST_PUSHSVC_EVERY_LEASE=1`) on one
redis-server, and those of `CLUSTER_MOMENTS` once (lease 1 s) on a Redis Cluster (backends.py),
where the producer publishes on the node the bridge subscribes on (a cluster's PUBLISH reaches
every node but counts the subscribers of its own). The pauses run on one redis-server.

Producers on Redis PUBLISH into `{prefix}ingest:{topic}`; one aggregator process at a time
holds the bridge's lease and appends what it hears to the event log (docs/design.md: the
pub/sub hop is at most once; what the bridge logged is kept like any POST). Each case runs two
web processes with the six streams of `moments.subscribers`, three aggregator processes (the
first bridges) and a producer publishing 60 events a second; afterwards

* the log holds no event twice, all in publish order, and none that PUBLISH said nobody heard;
* every event heard before the fault that the log had by then, and every one heard once a
  successor appended again, is in the log: what is lost is bounded by the takeover;
* every stream received every logged event once, in order, each update equal to an
  uninterrupted run's (`moments.check_exactly_once`).

Moments: `just-renewed` (the holder killed right after it renewed its lease: the longest wait
for a successor), `due-for-renewal` (with under 70 % of its lease left), `mid-burst` (300
messages published at once; killed once 60 of them are in the log), `successor-at-takeover`
(the holder killed, then its successor as soon as it says it bridges). And a long pause:
`paused-past-a-takeover` freezes the holder (SIGSTOP) past its lease, kills its successor once
that has appended, and wakes the frozen one when that successor's lease expires; alone, it
takes the lease again, and must not append what its old subscription queued meanwhile, which
the successor appended already (it did, before each tenure subscribed on a connection of
its own).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from harness.live import PushsvcProcess, wait_until
from harness.redis_server import RedisServer

from faults.backends import Store, on_both
from faults.harness import Watcher
from faults.moments import (
    LEASES,
    Batch,
    Case,
    IngestProducer,
    check_exactly_once,
    freeze,
    logged_batches,
    report,
    sleep_until,
    subscribers,
    thaw,
    wait_received,
    wait_renewed,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


Window = tuple[float, float, float]
"""The last event the log held when the fault struck, when it struck, and when the last
takeover was seen (time.monotonic)."""

Moment = Callable[[Case, IngestProducer, PushsvcProcess], Window]
"""Brings the fault about."""


def _bridging(process: PushsvcProcess) -> int:
    """How many times the process said it started bridging."""
    return sum("bridge: bridging" in line for line in process.output)


def _last_logged_value(case: Case) -> float:
    entries = logged_batches(case)
    return entries[-1].values[-1] if entries else -1.0


def _takeover(case: Case, besides: list[PushsvcProcess]) -> tuple[PushsvcProcess, float]:
    """The process (not one of `besides`) that next says it bridges, and when it did."""
    others = [a for a in case.stack.aggregators if a not in besides]
    before = {id(a): _bridging(a) for a in others}
    found: list[PushsvcProcess] = []

    def one() -> bool:
        found[:] = [a for a in others if _bridging(a) > before[id(a)]]
        return bool(found)

    wait_until(one, timeout=3 * case.lease_s + 5, interval=0.002, what="a bridge takes over")
    return found[0], time.monotonic()


def _killed(case: Case, holder: PushsvcProcess) -> Window:
    case.stack.kill_aggregator(holder)
    killed = time.monotonic()
    last = _last_logged_value(case)
    return last, killed, _takeover(case, [holder])[1]


def _renewed(case: Case) -> None:
    """Until the holder renews the bridge's lease."""
    wait_renewed(case.redis, case.bridge_lease, "a renewal")


def just_renewed(case: Case, producer: IngestProducer, holder: PushsvcProcess) -> Window:
    _renewed(case)
    return _killed(case, holder)


def due_for_renewal(case: Case, producer: IngestProducer, holder: PushsvcProcess) -> Window:
    _renewed(case)
    limit = 0.7 * case.lease_s * 1000
    wait_until(
        lambda: int(case.redis.pttl(case.bridge_lease)) < limit,  # type: ignore[arg-type]
        interval=0.002,
        what="the lease runs down",
    )
    return _killed(case, holder)


def mid_burst(case: Case, producer: IngestProducer, holder: PushsvcProcess) -> Window:
    start = len(logged_batches(case))
    producer.publish(300)
    wait_until(lambda: len(logged_batches(case)) >= start + 60, interval=0.002, what="60 appended")
    return _killed(case, holder)


def successor_at_takeover(case: Case, producer: IngestProducer, holder: PushsvcProcess) -> Window:
    case.stack.kill_aggregator(holder)
    killed = time.monotonic()
    last = _last_logged_value(case)
    successor, _ = _takeover(case, [holder])
    case.stack.kill_aggregator(successor)
    return last, killed, _takeover(case, [holder, successor])[1]


MOMENTS: dict[str, Moment] = {
    "just-renewed": just_renewed,
    "due-for-renewal": due_for_renewal,
    "mid-burst": mid_burst,
    "successor-at-takeover": successor_at_takeover,
}


def _first_logged_after(case: Case, producer: IngestProducer, since: float) -> float:
    """When the first event heard after `since` that reached the log was published: from then
    on, the bridge appends what it hears."""
    found: list[float] = []

    def appended() -> bool:
        logged = {v for b in logged_batches(case) for v in b.values}
        found[:] = [t for b, r, t in producer.heard if t >= since and r and b.values[0] in logged]
        return bool(found)

    wait_until(appended, timeout=3 * case.lease_s + 5, what="an event heard since is appended")
    return found[0]


def _check_bridged(
    producer: IngestProducer, logged: list[Batch], last_before: float, resumed: float
) -> dict[str, object]:
    values = [v for b in logged for v in b.values]
    doubled = sorted(v for v, n in Counter(values).items() if n > 1)
    assert not doubled, f"{len(doubled)} events appended twice: {doubled[:10]}"
    assert values == sorted(values), "appended out of publish order"
    in_log = set(values)
    heard = {b.values[0]: (receivers, t) for b, receivers, t in producer.heard}
    unheard = {v for v, (receivers, _) in heard.items() if not receivers}
    assert not unheard & in_log, "an event nobody heard is in the log"
    settled = {v for v, (r, t) in heard.items() if r and (v <= last_before or t >= resumed)}
    missing = sorted(settled - in_log)
    assert not missing, f"{len(missing)} events heard outside the fault are not logged: {missing}"
    return {
        "published": len(heard),
        "unheard": len(unheard),
        "heard_then_lost": len({v for v, (r, _) in heard.items() if r} - in_log),
        "logged": len(values),
    }


def _finish(
    name: str, case: Case, watchers: list[Watcher], producer: IngestProducer, window: Window
) -> None:
    last_before, struck, since = window
    resumed = _first_logged_after(case, producer, since)
    more = len(producer.heard) + 30
    wait_until(lambda: len(producer.heard) >= more, what="30 more published")
    producer.stop()
    # The bridge appends what it heard a little later: until the last heard is in.
    last_heard = max(b.values[0] for b, receivers, _ in producer.heard if receivers)
    wait_until(
        lambda: _last_logged_value(case) >= last_heard, timeout=10, what="the last one appended"
    )
    logged = logged_batches(case)
    wait_received(watchers, logged, 30)
    for watcher in watchers:
        watcher.stop()
    figures = _check_bridged(producer, logged, last_before, resumed)
    figures |= check_exactly_once(watchers, logged, case.topics)
    figures["takeover_s"] = round(since - struck, 2)
    report(name, figures)


CLUSTER_MOMENTS = ("mid-burst", "successor-at-takeover")
"""The moments that also run on the cluster: a kill amid appends, and two tenures in a row,
each claiming its fence in every partition. The others move when the lease lapses: one key,
alike on both (`TEST_PUSHSVC_EVERY_CASE_ON_CLUSTER=1` runs them there too)."""


@pytest.mark.parametrize(
    ("moment", "lease", "backend"),
    on_both(MOMENTS, LEASES, cluster=CLUSTER_MOMENTS),
    indirect=["backend"],
)
def test_kill_9_of_the_bridge_at_a_moment(
    store: Store, backend: str, moment: str, lease: str
) -> None:
    with Case(store, lease=lease) as case:
        holder = case.start()
        watchers = subscribers(case)
        producer = IngestProducer(case)
        producer.start()
        wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
        window = MOMENTS[moment](case, producer, holder)
        _finish(f"bridge {moment}, lease {lease}, {backend}", case, watchers, producer, window)


@pytest.mark.parametrize("lease", LEASES)
def test_a_bridge_paused_past_a_takeover_appends_nothing_twice(
    server: RedisServer, lease: str
) -> None:
    with Case(server, lease=lease) as case:
        holder = case.start(standbys=1)
        watchers = subscribers(case)
        # Faster: what queues for the frozen bridge is more than it reads at once (256).
        producer = IngestProducer(case, rate=150.0)
        producer.start()
        wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
        freeze(holder)
        frozen = time.monotonic()
        last = _last_logged_value(case)
        successor, _ = _takeover(case, [holder])
        wait_until(lambda: _last_logged_value(case) > last, what="the successor appends")
        case.stack.kill_aggregator(successor)
        sleep_until(case.expires_at(case.bridge_lease))
        thaw(holder)
        window = (last, frozen, time.monotonic())
        _finish(f"bridge paused past a takeover, lease {lease}", case, watchers, producer, window)


@pytest.mark.parametrize("lease", LEASES)
def test_a_bridge_paused_past_its_lease_with_no_standby_loses_nothing_it_heard(
    server: RedisServer, lease: str
) -> None:
    with Case(server, lease=lease) as case:
        holder = case.start(standbys=0)
        watchers = subscribers(case)
        producer = IngestProducer(case)
        producer.start()
        wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
        freeze(holder)
        frozen = time.monotonic()
        sleep_until(case.expires_at(case.bridge_lease) + 0.2)
        thaw(holder)
        # Nobody took the lease meanwhile: what its subscription queued is its to append.
        window = (_last_logged_value(case), frozen, time.monotonic())
        _finish(
            f"bridge paused past its lease alone, lease {lease}", case, watchers, producer, window
        )
        heard = [b.values[0] for b, receivers, _ in producer.heard if receivers]
        assert {v for b in logged_batches(case) for v in b.values} == set(heard)
