"""Shard runners on a real Redis: exactly one update per logged event, through takeovers,
cold starts, fencing and trimming. Each step is driven by hand (no timing involved); the
lease is taken and lost for real, through Redis."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis

from pushsvc.aggregation import ShardRunner
from pushsvc.aggregator import Aggregator
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.log import EventLog
from pushsvc.errors import LateEvent
from pushsvc.events import Event
from pushsvc.lease import Lease
from pushsvc.testing.redis_server import RedisServer
from pushsvc.topics import TopicMatcher

pytestmark = pytest.mark.redis

S = 1_000_000
LATENESS = 5 * S
SHARD = (0, 1)


class Deployment:
    """One Redis prefix: a producer's broker, and shard runners made on demand."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.broker = RedisBroker(url, prefix=prefix, history=100_000)
        self.wall = 1_763_700_000 * S
        self._closers: list[object] = [self.broker]

    def runner(self) -> ShardRunner:
        broker = RedisBroker(self.url, prefix=self.prefix, history=100_000)
        event_log = EventLog(self.url, broker.keys, SHARD, socket_timeout=5.0)
        lease = Lease(self.url, broker.keys.lease(SHARD), ttl_us=60 * S)
        aggregator = Aggregator(
            windows_us=[10 * S, 60 * S], labels=["10s", "1m"], wall_clock=lambda: self.wall
        )
        self._closers += [broker, event_log, lease]
        return ShardRunner(aggregator, broker, event_log, lease, tick_us=0, block_ms=1)

    def append(self, topic: str, *values: float, ts: int) -> list[Event]:
        events = [Event(v, ts, None) for v in values]
        self.broker.append_events(topic, events, lateness_us=LATENESS)
        return events

    def history(self) -> list[dict[str, object]]:
        """Every update published, oldest first."""
        client = redis.Redis.from_url(self.url)
        try:
            entries = client.xrange(f"{self.prefix}history")
        finally:
            client.close()
        return [orjson.loads(fields[b"b"]) for _, fields in entries]

    def close(self) -> None:
        for item in self._closers:
            item.close()  # type: ignore[attr-defined]


@pytest.fixture
def deployment(redis_server: RedisServer, prefix: str) -> Iterator[Deployment]:
    made = Deployment(redis_server.url, prefix)
    yield made
    made.close()


def _expected(batches: list[tuple[str, list[Event]]]) -> list[dict[str, object]]:
    """The bodies an uninterrupted aggregator publishes for these batches."""
    reference = Aggregator(windows_us=[10 * S, 60 * S], labels=["10s", "1m"], wall_clock=lambda: 0)
    return [
        orjson.loads(d.body)
        for topic, events in batches
        for d in reference.apply_events(topic, events)
    ]


def _events_of(history: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(u["topic"], u["event"]["value"]) for u in history]  # type: ignore[index]


def test_the_lease_holder_publishes_each_logged_event_once(deployment: Deployment) -> None:
    active = deployment.runner()
    active.rebuild()
    assert active._lease.renew()
    batches = [
        ("a", deployment.append("a", 1, 2, ts=10 * S)),
        ("b", deployment.append("b", 3, ts=11 * S)),
    ]
    active.step()
    active.step()  # nothing new: nothing published twice
    assert deployment.history() == _expected(batches)


def test_a_standby_publishes_nothing_and_takes_over_exactly_where_the_holder_stopped(
    deployment: Deployment,
) -> None:
    active, standby = deployment.runner(), deployment.runner()
    for runner in (active, standby):
        runner.rebuild()
    assert active._lease.renew() and not standby._lease.renew()

    batches = [("a", deployment.append("a", 1, ts=10 * S))]
    active.step()
    standby.step()
    batches.append(("a", deployment.append("a", 2, ts=11 * S)))
    batches.append(("b", deployment.append("b", 3, ts=12 * S)))
    standby.step()  # applied, held back: the holder has not published them yet
    assert len(deployment.history()) == 1

    # The holder dies (kill -9: it never releases; its lease expires).
    redis.Redis.from_url(deployment.url).delete(active._lease.key)
    assert standby._lease.renew()
    standby.step()
    assert deployment.history() == _expected(batches)

    batches.append(("a", deployment.append("a", 4, ts=13 * S)))
    standby.step()
    assert deployment.history() == _expected(batches)


def test_what_the_holder_published_before_dying_is_not_published_again(
    deployment: Deployment,
) -> None:
    active, standby = deployment.runner(), deployment.runner()
    for runner in (active, standby):
        runner.rebuild()
    assert active._lease.renew()
    batches = [("a", deployment.append("a", 1, 2, ts=10 * S))]
    standby.step()  # the standby applied the batch before the holder published it
    active.step()
    redis.Redis.from_url(deployment.url).delete(active._lease.key)
    assert standby._lease.renew()
    standby.step()
    assert deployment.history() == _expected(batches)


def test_a_holder_that_lost_the_lease_is_fenced_off(deployment: Deployment) -> None:
    stale, successor = deployment.runner(), deployment.runner()
    for runner in (stale, successor):
        runner.rebuild()
    assert stale._lease.renew()
    batches = [("a", deployment.append("a", 1, ts=10 * S))]
    stale.step()
    # A long pause: the lease expired and another aggregator took it; the stale one has not
    # renewed yet, so it still believes it holds it.
    redis.Redis.from_url(deployment.url).delete(stale._lease.key)
    assert successor._lease.renew()
    batches.append(("a", deployment.append("a", 2, ts=11 * S)))
    stale.step()  # refused by the publish script
    assert stale._lease.holding is False
    successor.step()
    assert deployment.history() == _expected(batches)


def test_a_cold_start_rebuilds_the_windows_from_the_log(deployment: Deployment) -> None:
    first = deployment.runner()
    first.rebuild()
    assert first._lease.renew()
    batches = [
        ("a", deployment.append("a", 1, 2, ts=10 * S)),
        ("b", deployment.append("b", 5, ts=11 * S)),
        ("a", deployment.append("a", 3, ts=30 * S)),  # 10 s later: 1 and 2 left the 10s window
    ]
    first.step()
    first._lease.release()  # every aggregator stopped

    batches.append(("a", deployment.append("a", 4, ts=31 * S)))  # logged while none runs
    restarted = deployment.runner()
    restarted.rebuild()
    assert restarted._lease.renew()
    restarted.step()
    assert deployment.history() == _expected(batches)


def test_a_cold_start_restores_clocks_moved_by_idle_ticks(deployment: Deployment) -> None:
    first = deployment.runner()
    first.rebuild()
    assert first._lease.renew()
    deployment.append("a", 1, ts=deployment.wall)
    first.step()
    deployment.wall += 20 * S  # 20 s idle: the tick moves a's clock and empties its 10s window
    first._log_ticks()
    first.step()
    ticked = deployment.history()[-1]
    assert ticked["reason"] == "tick" and ticked["windows"]["10s"]["count"] == 0  # type: ignore[index]
    first._lease.release()

    restarted = deployment.runner()
    restarted.rebuild()
    assert restarted._lease.renew()
    ticked_clock = deployment.wall  # the first event's time plus the 20 s idle
    with pytest.raises(LateEvent):  # the logged tick moved T for lateness too
        deployment.append("a", 9, ts=ticked_clock - LATENESS - 1)
    deployment.append("a", 2, ts=ticked_clock - LATENESS)  # exactly at the limit
    restarted.step()
    last = deployment.history()[-1]
    # The restored T is the ticked one: the event does not move it, and the windows end there.
    assert last["ts"] == ticked_clock / S
    assert last["windows"]["10s"]["count"] == 1  # type: ignore[index]
    assert last["windows"]["1m"]["count"] == 2  # type: ignore[index]


def test_trimming_keeps_what_a_rebuild_needs(deployment: Deployment) -> None:
    active = deployment.runner()
    active.rebuild()
    assert active._lease.renew()
    batches = [("a", deployment.append("a", float(n), ts=n * S)) for n in range(100)]
    active.step()
    oldest = active._prune_held()
    active._log.trim(oldest)
    client = redis.Redis.from_url(deployment.url)
    kept = client.xlen(f"{deployment.prefix}log:0/1")
    client.close()
    # T = 99 s and the widest window is 1 m: events at 39 s and before are in no window.
    assert kept == 60
    batches.append(("a", deployment.append("a", 100.0, ts=100 * S)))
    restarted = deployment.runner()
    restarted.rebuild()
    redis.Redis.from_url(deployment.url).delete(active._lease.key)
    assert restarted._lease.renew()
    restarted.step()
    assert deployment.history() == _expected(batches)


def test_lag_counts_what_waits_for_an_aggregator(deployment: Deployment) -> None:
    deployment.append("a", 1, 2, ts=10 * S)
    deployment.append("b", 3, ts=10 * S)
    (lag,) = deployment.broker.lag()
    assert (lag.entries, lag.aggregator) == (2, False)
    assert lag.oldest_age_s is not None and lag.oldest_age_s < 60
    runner = deployment.runner()
    runner.rebuild()
    assert runner._lease.renew()
    runner.step()
    (lag,) = deployment.broker.lag()
    assert (lag.entries, lag.oldest_age_s, lag.aggregator) == (0, None, True)
    assert deployment.broker.latest(TopicMatcher(["*"])).keys() == {"a", "b"}
