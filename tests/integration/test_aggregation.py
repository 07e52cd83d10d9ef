"""Shard runners on a real Redis: exactly one update per logged event, through takeovers,
cold starts, fencing and trimming. Each step is driven by hand (no timing involved); the
lease is taken and lost for real, through Redis."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis
from harness.redis_server import RedisServer

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.shard_runner import ShardRunner
from pushsvc.broker.base import Applied
from pushsvc.broker.lua import source
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.broker.shared_log import FIRST, FORGET_SCAN, EventLog, LogState
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.topics import TopicMatcher
from pushsvc.errors import BrokerUnavailable, Fenced, LateEvent
from pushsvc.ingest import Event
from pushsvc.rules.analytics import Rule, Rules, default_rule
from pushsvc.stats import STAT_KEYS
from support.proxies import RedisAnswerLosingProxy

pytestmark = pytest.mark.redis

S = 1_000_000
LATENESS = 5 * S
SHARD = (0, 1)


class ShardRunners:
    """One Redis prefix: a producer's broker, and shard runners made on demand."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.broker = RedisBroker(url, prefix=prefix, history=100_000, partitions=SHARD[1])
        self.wall = 1_763_700_000 * S
        self._closers: list[object] = [self.broker]

    def runner(
        self,
        *,
        tick_us: int = 0,
        topic_ttl_us: int = 0,
        broker_url: str | None = None,
        rules: Rules | None = None,
        log_of: Callable[[EventLog], EventLog] = lambda log: log,
    ) -> ShardRunner:
        """A runner; its publishes go to `broker_url` (a proxy) when given. With `rules`, it
        computes what they ask (else 10s and 1m windows for every topic); it reads the log
        through `log_of` of it."""
        broker = RedisBroker(
            broker_url or self.url, prefix=self.prefix, history=100_000, partitions=SHARD[1]
        )
        event_log = RedisEventLog(self.url, broker.keys, SHARD, socket_timeout=5.0)
        lease = RedisLease(self.url, broker.keys.shard(SHARD).lease, ttl_us=60 * S)
        if rules is None:
            rules = Rules((), default_rule([10 * S, 60 * S], STAT_KEYS))
        aggregator = Aggregator(rules=rules, wall_clock=lambda: self.wall)
        self._closers += [broker, event_log, lease]
        return ShardRunner(
            aggregator,
            broker,
            log_of(event_log),
            lease,
            tick_us=tick_us,
            topic_ttl_us=topic_ttl_us,
            block_ms=1,
        )

    def rebuilt_pair(self) -> tuple[ShardRunner, ShardRunner]:
        """Two runners started cold on the log as it is, neither holding the lease yet."""
        first, second = self.runner(), self.runner()
        first.rebuild()
        second.rebuild()
        return first, second

    def append(self, topic: str, *values: float, ts: int) -> list[Event]:
        events = [Event(v, ts, None) for v in values]
        self.broker.append_events(topic, events, lateness_us=LATENESS)
        return events

    def history(self) -> list[dict[str, object]]:
        """Every update published, oldest first."""
        client = redis.Redis.from_url(self.url)
        try:
            entries = client.xrange(self.broker.keys.shard(SHARD).history)
        finally:
            client.close()
        return [orjson.loads(fields[b"b"]) for _, fields in entries]

    def close(self) -> None:
        for item in self._closers:
            item.close()  # type: ignore[attr-defined]


@pytest.fixture
def deployment(redis_server: RedisServer, prefix: str) -> Iterator[ShardRunners]:
    made = ShardRunners(redis_server.url, prefix)
    yield made
    made.close()


def _expected(batches: list[tuple[str, list[Event]]]) -> list[dict[str, object]]:
    """The bodies an uninterrupted aggregator publishes for these batches."""
    reference = Aggregator(
        rules=Rules((), default_rule([10 * S, 60 * S], STAT_KEYS)), wall_clock=lambda: 0
    )
    return [
        orjson.loads(d.body)
        for topic, events in batches
        for d in reference.apply_events(topic, events)
    ]


def _events_of(history: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(u["topic"], u["event"]["value"]) for u in history]  # type: ignore[index]


def test_the_lease_holder_publishes_each_logged_event_once(deployment: ShardRunners) -> None:
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
    deployment: ShardRunners,
) -> None:
    active, standby = deployment.rebuilt_pair()
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
    deployment: ShardRunners,
) -> None:
    active, standby = deployment.rebuilt_pair()
    assert active._lease.renew()
    batches = [("a", deployment.append("a", 1, 2, ts=10 * S))]
    standby.step()  # the standby applied the batch before the holder published it
    active.step()
    redis.Redis.from_url(deployment.url).delete(active._lease.key)
    assert standby._lease.renew()
    standby.step()
    assert deployment.history() == _expected(batches)


def test_a_holder_that_lost_the_lease_is_fenced_off(deployment: ShardRunners) -> None:
    stale, successor = deployment.rebuilt_pair()
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


def test_a_holder_that_lost_the_lease_and_took_it_back_goes_on_from_its_successor(
    deployment: ShardRunners,
) -> None:
    stale, successor = deployment.rebuilt_pair()
    assert stale._lease.renew()
    batches = [("a", deployment.append("a", 1, ts=10 * S))]
    stale.step()
    batches.append(("a", deployment.append("a", 2, ts=11 * S)))
    # A long pause before the holder could publish event 2: its lease lapsed, a successor
    # took it, published event 2 and died, and its lease lapsed too.
    client = redis.Redis.from_url(deployment.url)
    client.delete(stale._lease.key)
    assert successor._lease.renew()
    successor.step()
    client.delete(successor._lease.key)
    # Awake, the holder finds the lease free and takes it again, never having seen it held
    # by another: a new tenure, under a new token.
    token = stale._lease.token
    assert stale._lease.renew()
    stale.step()
    assert deployment.history() == _expected(batches)  # event 2 once, not twice
    assert stale._lease.token != token


def test_a_lease_that_lapsed_unused_is_resumed_and_one_held_meanwhile_is_a_new_tenure(
    deployment: ShardRunners,
) -> None:
    holder, other = deployment.runner(), deployment.runner()
    client = redis.Redis.from_url(deployment.url)
    assert holder._lease.renew()
    first = holder._lease.token
    client.delete(holder._lease.key)  # lapsed during a pause; nobody took it
    assert holder._lease.renew() and holder._lease.token == first
    client.delete(holder._lease.key)
    assert other._lease.renew()  # taken meanwhile, then lapsed (its holder died)
    client.delete(other._lease.key)
    assert holder._lease.renew() and holder._lease.token != first
    # A write prepared under the first tenure's token is refused.
    drafts = Aggregator(
        rules=Rules((), default_rule([10 * S], STAT_KEYS)), wall_clock=lambda: 0
    ).apply_events("a", [Event(1, 10 * S, None)])
    applied = Applied(holder.shard, "1-0", 1, FIRST)  # the entry the drafts came from
    with pytest.raises(Fenced):
        deployment.broker.publish_updates(drafts, applied=applied, fence=first)
    assert deployment.history() == []


def test_a_publish_whose_answer_was_lost_is_not_published_again(
    deployment: ShardRunners, redis_server: RedisServer
) -> None:
    proxy = RedisAnswerLosingProxy(redis_server.port)
    try:
        holder = deployment.runner(broker_url=proxy.url)
        holder.rebuild()
        assert holder._lease.renew()
        script = source("publish_updates")
        redis.Redis.from_url(deployment.url).script_load(script)  # no NOSCRIPT round trip
        batches = [("a", deployment.append("a", 1, 2, ts=10 * S))]
        proxy.lose_answer_to(hashlib.sha1(script.encode()).hexdigest().encode())
        with pytest.raises(BrokerUnavailable):
            holder.step()  # published; the connection dropped before the answer came
        assert proxy.lost == 1
        batches.append(("a", deployment.append("a", 3, ts=11 * S)))
        holder.step()  # tries again: what was published is not published twice
        assert deployment.history() == _expected(batches)
    finally:
        proxy.close()


def test_a_cold_start_rebuilds_the_windows_from_the_log(deployment: ShardRunners) -> None:
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


def test_a_cold_start_restores_clocks_moved_by_idle_ticks(deployment: ShardRunners) -> None:
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


def test_trimming_keeps_what_a_rebuild_needs(deployment: ShardRunners) -> None:
    active = deployment.runner()
    active.rebuild()
    assert active._lease.renew()
    batches = [("a", deployment.append("a", float(n), ts=n * S)) for n in range(100)]
    active.step()
    oldest = active._prune_held()
    active._log.trim(oldest)
    client = redis.Redis.from_url(deployment.url)
    kept = client.xlen(deployment.broker.keys.shard(SHARD).log)
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


def test_lag_counts_what_waits_for_an_aggregator(deployment: ShardRunners) -> None:
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


# -- idle topics forgotten through the log (--topic-ttl) --------------------------------

TTL = 3600 * S


def _redis(deployment: ShardRunners) -> redis.Redis:
    client = redis.Redis.from_url(deployment.url)
    deployment._closers.append(client)
    return client


def _kept(deployment: ShardRunners, topic: str) -> tuple[bool, bool]:
    """Whether Redis holds the topic's clock, and its latest update."""
    client = _redis(deployment)
    return (
        bool(client.hexists(deployment.broker.keys.shard(SHARD).clocks, topic)),
        bool(client.hexists(deployment.broker.keys.shard(SHARD).latest, topic)),
    )


def _active_with_a_quiet_topic(deployment: ShardRunners, topic: str) -> tuple[ShardRunner, int]:
    """The lease holder, with `topic` seen once and then idle past the TTL; its clock."""
    active = deployment.runner(tick_us=S, topic_ttl_us=TTL)
    active.rebuild()
    assert active._lease.renew()
    deployment.append(topic, 1, ts=deployment.wall)
    active.step()
    return active, _go_quiet(deployment, active, topic)


def _go_quiet(deployment: ShardRunners, active: ShardRunner, topic: str) -> int:
    """Let `topic` fall idle: ticks empty its windows, then the TTL passes. Its clock."""
    deployment.wall += 60 * S  # past the widest window: the tick empties every window
    active._log_ticks()
    active.step()
    emptied = deployment.history()[-1]
    assert emptied["topic"] == topic and emptied["windows"]["1m"]["count"] == 0  # type: ignore[index]
    deployment.wall += TTL
    clock = active.aggregator.clock(topic)
    assert clock is not None
    return clock


def test_an_idle_topic_is_forgotten_by_the_holder_and_the_standby_through_the_log(
    deployment: ShardRunners,
) -> None:
    active = deployment.runner(tick_us=S, topic_ttl_us=TTL)
    standby = deployment.runner(tick_us=S, topic_ttl_us=TTL)
    for runner in (active, standby):
        runner.rebuild()
    assert active._lease.renew() and not standby._lease.renew()
    deployment.append("quiet", 1, 2, ts=deployment.wall)
    active.step()
    _go_quiet(deployment, active, "quiet")
    deployment.append("busy", 5, ts=deployment.wall)  # an event within the TTL: kept
    active.step()
    assert deployment.broker.topic_stats().live == 2

    assert active.forget_idle() == ["quiet"]
    assert _kept(deployment, "quiet") == (False, False)
    assert _kept(deployment, "busy") == (True, True)
    assert active.forget_idle() == []  # the proposal again: its clock is gone, nothing logged
    for runner in (active, standby):
        runner.step()  # the forget entry, applied like any other
        assert runner.aggregator.topics() == ["busy"]
    assert deployment.broker.latest(TopicMatcher(["*"])).keys() == {"busy"}
    stats = deployment.broker.topic_stats()
    assert (stats.live, stats.forgotten) == (1, 1)

    # The holder dies; the standby takes over: the topic stays forgotten.
    redis.Redis.from_url(deployment.url).delete(active._lease.key)
    assert standby._lease.renew()
    standby.step()
    assert standby.aggregator.topics() == ["busy"]
    assert _kept(deployment, "quiet") == (False, False)

    # Its next event brings it back as a new topic: no clock to be late against, statistics
    # of that event alone.
    back = deployment.append("quiet", 9, ts=deployment.wall - 3 * TTL)
    standby.step()
    assert deployment.history()[-1] == _expected([("quiet", back)])[0]
    assert _kept(deployment, "quiet") == (True, True)


def test_an_event_logged_before_the_forget_cancels_it(deployment: ShardRunners) -> None:
    active, clock = _active_with_a_quiet_topic(deployment, "a")
    proposal = active.aggregator.idle_topics(TTL, ticking=True)
    assert proposal == {"a": clock}

    # A POST lands between the proposal and the forget script. Within the allowed lateness,
    # it does not move the topic clock, so only the log shows it.
    client = _redis(deployment)
    clock_key = client.hget(deployment.broker.keys.shard(SHARD).clocks, "a")
    raced = deployment.append("a", 7, ts=clock - 1 * S)
    assert client.hget(deployment.broker.keys.shard(SHARD).clocks, "a") == clock_key
    logged = client.xlen(deployment.broker.keys.shard(SHARD).log)

    assert active._log.forget(active._lease.token, active.position, proposal) == []
    assert _kept(deployment, "a") == (True, True)
    assert client.xlen(deployment.broker.keys.shard(SHARD).log) == logged  # no forget entry
    active.step()
    last = deployment.history()[-1]
    assert last["event"]["value"] == 7.0 and last["event"]["ts"] == raced[0].ts_us / S  # type: ignore[index]
    assert last["windows"]["10s"]["count"] == 1  # type: ignore[index]
    assert active.aggregator.topics() == ["a"]
    assert active.forget_idle() == []  # the event reset its idle time


def test_a_forget_proposed_far_behind_the_log_waits(deployment: ShardRunners) -> None:
    active, clock = _active_with_a_quiet_topic(deployment, "a")
    for n in range(FORGET_SCAN + 1):  # another topic's traffic the holder has not read yet
        deployment.append("b", n, ts=deployment.wall)
    assert active._log.forget(active._lease.token, active.position, {"a": clock}) == []
    assert _kept(deployment, "a") == (True, True)
    active.step()
    active.step()
    active.step()
    assert active.forget_idle() == ["a"]


def test_a_stale_holder_cannot_forget(deployment: ShardRunners) -> None:
    stale, successor = deployment.runner(tick_us=S, topic_ttl_us=TTL), deployment.runner()
    for runner in (stale, successor):
        runner.rebuild()
    assert stale._lease.renew()
    deployment.append("a", 1, ts=deployment.wall)
    stale.step()
    _go_quiet(deployment, stale, "a")
    redis.Redis.from_url(deployment.url).delete(stale._lease.key)
    assert successor._lease.renew()
    assert stale.forget_idle() == []
    assert stale._lease.holding is False
    assert _kept(deployment, "a") == (True, True)


def test_a_cold_start_after_a_trim_and_a_forget_holds_what_an_uninterrupted_run_holds(
    deployment: ShardRunners,
) -> None:
    first = deployment.runner(tick_us=S, topic_ttl_us=TTL)
    first.rebuild()
    assert first._lease.renew()
    start = deployment.wall
    deployment.append("gone", 1, ts=start)
    first.step()
    deployment.wall = start + 60 * S
    first._log_ticks()  # "gone" falls empty
    first.step()
    deployment.wall = start + 61 * S
    deployment.append("kept", 2, ts=deployment.wall)
    first.step()
    deployment.wall = start + 121 * S
    first._log_ticks()  # "kept" falls empty too
    first.step()
    first._log.trim(first._prune_held())  # no window needs either topic's events
    assert _redis(deployment).xlen(deployment.broker.keys.shard(SHARD).log) == 1  # the last tick
    deployment.wall = start + 30 * S + TTL  # "gone" idle for the TTL, "kept" not yet
    assert first.forget_idle() == ["gone"]
    first.step()
    first._lease.release()

    restarted = deployment.runner(tick_us=S, topic_ttl_us=TTL)
    restarted.rebuild()
    # The forgotten topic stays forgotten; the one whose events were trimmed is back, empty,
    # at its clock, as ticks had left it (and is forgotten a TTL after the rebuild).
    assert restarted.aggregator.topics() == ["kept"]
    assert restarted.aggregator.clock("kept") == first.aggregator.clock("kept")
    assert restarted.aggregator.idle_topics(TTL, ticking=True) == {}
    deployment.wall += TTL
    assert restarted.aggregator.idle_topics(TTL, ticking=True).keys() == {"kept"}

    # A late event within the allowed lateness: the same update as the uninterrupted run.
    kept_clock = first.aggregator.clock("kept")
    assert kept_clock is not None
    late = deployment.append("kept", 3, ts=kept_clock - S)
    (expected,) = first.aggregator.apply_events("kept", late)
    assert restarted._lease.renew()
    restarted.step()
    assert deployment.history()[-1] == orjson.loads(expected.body)


LAST3 = Rules(
    (Rule(1, ("c",), (10 * S,), (3,), ("count", "sum"), series=()),),
    Rule(0, ("*",), (10 * S,), (), ("count", "sum"), series=()),
)
"""Topic `c` keeps a count window (durable: checkpointed); the others time windows only."""


class _PausedAfterFirstRead:
    """A runner's log that runs `meanwhile` right after the rebuild's first read of the
    applied position or the checkpoints, before the other: what a process paused there (a GC
    pause, a VM frozen past its lease) lets a holder do."""

    def __init__(self, log: EventLog, meanwhile: Callable[[], None]) -> None:
        self._log = log
        self._meanwhile: Callable[[], None] | None = meanwhile

    def _after_read(self) -> None:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()

    def state(self) -> LogState:
        state = self._log.state()
        self._after_read()
        return state

    def checkpoints(self) -> list[Checkpoint]:
        checkpoints = self._log.checkpoints()
        self._after_read()
        return checkpoints

    def __getattr__(self, name: str) -> object:
        return getattr(self._log, name)


def test_a_rebuild_paused_between_its_reads_counts_no_entry_twice(
    deployment: ShardRunners,
) -> None:
    """A cold start reads the applied position and the checkpoints in two calls. Paused
    between them while the holder published and saved a checkpoint further on, it used to
    replay the log only up to the older position it had read, then take the entries between
    the two into the restored count window, which held them already, a second time."""
    holder = deployment.runner(rules=LAST3)
    holder.rebuild()
    assert holder._lease.renew()
    ts = deployment.wall
    deployment.append("c", 1, 2, 3, ts=ts)
    holder.step()
    assert holder.save_checkpoints() == 1

    def holder_goes_on() -> None:
        deployment.append("c", 4, ts=ts + 1 * S)
        deployment.append("c", 5, ts=ts + 2 * S)
        holder.step()
        assert holder.save_checkpoints() == 1

    restarted = deployment.runner(
        rules=LAST3,
        log_of=lambda log: _PausedAfterFirstRead(log, holder_goes_on),  # type: ignore[arg-type,return-value]
    )
    restarted.rebuild()
    holder._lease.release()
    assert restarted._lease.renew()
    deployment.append("c", 6, ts=ts + 3 * S)
    restarted.step()
    last = deployment.history()[-1]
    assert last["event"]["value"] == 6.0  # type: ignore[index]
    assert last["windows"]["last3"] == {"count": 3, "sum": 4.0 + 5.0 + 6.0}  # type: ignore[index]
