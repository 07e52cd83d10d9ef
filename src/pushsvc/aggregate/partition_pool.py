"""Elastic aggregators: the `pushsvc aggregate` processes share the partitions by leases.

Every aggregator process is a member of the deployment's `LeaseGroup` (a membership that
expires unless renewed, like a lease). Every ttl/3 it renews its membership and the leases
it holds in one round trip, and sees the live members and the free partitions. Its share
is `quota`: the partitions spread over the members by their sorted ids (the order in which
they joined), P // N each and one more for the first P % N, so the shares differ by at most
one and add up to P.

* Under its share, it takes free partitions, each process trying them in an order of its
  own so that processes starting together rarely race for the same one, and only from a
  round that saw the members the round before saw (`Roster.settled`: after Redis restarted
  empty, the process holding a partition's windows takes it back first). It rebuilds each
  cold from the log and the checkpoints up to its applied position (`ShardRunner.rebuild`),
  then applies and publishes it.
* Over its share (another process joined), it hands partitions over gracefully: it stops
  reading their logs, publishes what it applied (`ShardRunner.hand_over`), and gives the
  lease up, so the taker (which finds it free within ttl/3) starts from exactly the applied
  position instead of waiting for the lease to expire.
* A process that dies stops renewing: its membership and its leases lapse within one ttl,
  the others' shares grow and they take its partitions (within two rounds more).
* A process that stops hands every partition over and leaves the members (`leave`).

What it logs is one INFO line per phase for the partitions a round took (their leases taken,
rebuilt, active) or handed over, on the `pushsvc.partitions` logger, whose DEBUG lines say
it per partition (`pushsvc.core.partition_log`); a partition lost is a WARNING of its own.

A partition changes hands at its applied position, fenced by its lease token: the publish
script refuses a holder whose token is no longer the lease's, so nothing is applied twice or
skipped, whatever the timing (`shard_runner.py`).

One process, many partitions, few connections: the leases and the membership share one
connection (the lease group's), the runners' other calls share the broker's pool, and one
`LogWaiter` waits for new entries of every held partition at once. One greenlet runs the
rounds and the runners (`step`), handing each runner the entries the waiter read for it, and
waits no longer than the next round; rebuilds run beside it, two at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gevent
import gevent.event
import gevent.pool

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.shard_runner import ShardRunner
from pushsvc.broker.shared_log import Entry, Lease, LogBroker
from pushsvc.core import partition_log
from pushsvc.core.partition_log import counted, ranges
from pushsvc.core.partitions import Partition, partition_of
from pushsvc.errors import BrokerUnavailable, LogGap

log = logging.getLogger(__name__)

_READ_COUNT = 512  # log entries read per partition at once
_MAX_BLOCK_S = 0.25
"""The longest wait for new entries: a partition whose rebuild ended joins the wait after
at most this long."""
_REBUILDING_BLOCK_S = 0.02
_RETRY_S = 0.5
_REBUILDS_AT_ONCE = 2
_CHECKPOINT_INTERVAL_S = 5.0
"""How often a runner trims its log and saves its checkpoints (`ShardRunner`)."""


def quota(members: Sequence[str], member: str, partitions: int) -> int:
    """How many partitions `member` should hold among `members` (its own id included or
    not): P // N each, one more for the first P % N members in sorted order."""
    ordered = sorted({*members, member})
    count = len(ordered)
    rank = ordered.index(member)
    return partitions // count + (1 if rank < partitions % count else 0)


def preference(member: str, shard: Partition) -> int:
    """The order in which `member` tries free partitions: its own, so that processes taking
    at the same moment mostly try different ones."""
    return zlib.crc32(f"{member}/{shard[0]}".encode())


@dataclass(eq=False)
class _Held:
    """A partition this process holds the lease of, and its runner's state."""

    lease: Lease
    runner: ShardRunner
    ready: bool = False
    """Rebuilt: the loop runs it."""
    dropped: bool = False
    """Given up (handed over, or lost): a rebuild under way discards it."""
    paused_until: float = 0.0
    replayed: int = 0
    """The log entries its rebuild applied."""


@dataclass(eq=False)
class _Taking:
    """The partitions one round took, until each is rebuilt and active (or given up): the
    pool logs one line when all are rebuilt and one when all are active."""

    shards: set[Partition]
    rebuilt: bool = False


class PartitionPool:
    """This process's share of the partitions: takes, runs and hands over runners as the
    members come and go. `run` in a greenlet of its own until `stop` is set (or `step` it)."""

    def __init__(
        self,
        broker: LogBroker,
        new_aggregator: Callable[[], Aggregator],
        *,
        lease_us: int,
        tick_us: int,
        topic_ttl_us: int = 0,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], object] | None = None,
        max_block_s: float = _MAX_BLOCK_S,
        sleep: Callable[[float], None] = gevent.sleep,
        checkpoint_interval_s: float = _CHECKPOINT_INTERVAL_S,
        alone: bool = False,
    ) -> None:
        """`alone`: no other process can hold a lease (the embedded broker, one process):
        a lease this one's runners find fenced lapsed while the process was busy."""
        self._broker = broker
        self._alone = alone
        self._new_aggregator = new_aggregator
        self.partitions = broker.partitions
        self._lease_us = lease_us
        self._round_s = lease_us / 3_000_000
        self._tick_us = tick_us
        self._topic_ttl_us = topic_ttl_us
        self._clock = clock
        self._max_block_s = max_block_s
        self._sleep = sleep  # between a rebuild's attempts (a simulation's own)
        self._checkpoint_interval_s = checkpoint_interval_s
        self._group = broker.lease_group(ttl_us=lease_us)
        self._waiter = broker.log_waiter()
        self._held: dict[Partition, _Held] = {}
        if spawn is None:
            rebuilds = gevent.pool.Pool(_REBUILDS_AT_ONCE)
            spawn = rebuilds.spawn
        self._spawn = spawn
        self._changed = gevent.event.Event()
        self._next_round = clock()
        self.members = 0
        """Live aggregator processes, as the last round saw them."""
        self._published_before = 0
        self._overflow_before = 0
        self._forecast_bytes_before = 0
        self._forecasts_before = 0
        self._taking: list[_Taking] = []
        self._closed = False

    @property
    def member(self) -> str:
        return self._group.member

    # -- what the metrics, the alerts and the tests read ---------------------------------

    @property
    def owned(self) -> list[Partition]:
        """The partitions this process holds the lease of (rebuilding or running)."""
        return sorted(s for s, h in self._held.items() if h.lease.holding)

    @property
    def holding(self) -> bool:
        return any(h.lease.holding for h in self._held.values())

    def owns(self, topic: str) -> bool:
        """Whether `topic`'s partition is one this process publishes now."""
        held = self._held.get((partition_of(topic, self.partitions), self.partitions))
        return held is not None and held.lease.holding

    @property
    def runners(self) -> list[ShardRunner]:
        return [h.runner for h in self._held.values() if h.ready]

    @property
    def updates_published(self) -> int:
        return self._published_before + sum(r.updates_published for r in self.runners)

    def topics(self) -> list[str]:
        return [t for r in self.runners for t in r.aggregator.topics()]

    def group_count(self) -> int:
        return sum(r.aggregator.group_count() for r in self.runners)

    @property
    def group_overflow(self) -> int:
        return self._overflow_before + sum(r.aggregator.group_overflow for r in self.runners)

    @property
    def forecast_bytes(self) -> int:
        """The bytes of JSON of every forecast its aggregators made."""
        made = sum(r.aggregator.forecast_work.bytes for r in self.runners)
        return self._forecast_bytes_before + made

    @property
    def forecasts_made(self) -> int:
        """The forecasts its aggregators made (one per close of a forecast tier, per series)."""
        made = sum(r.aggregator.forecast_work.made for r in self.runners)
        return self._forecasts_before + made

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: gevent.event.Event) -> None:
        """Step until `stop` is set; then hand every partition over and leave."""
        try:
            while not stop.is_set():
                pause = self.step()
                if pause:
                    stop.wait(pause)
        finally:
            self.leave()

    def step(self) -> float:
        """One pass: a round when one is due (every ttl/3), then a wait for new entries of
        the partitions running (at most until the next round or chore), and a turn of each.
        How long to pause before the next pass: 0, or a while when Redis cannot be reached."""
        now = self._clock()
        if now >= self._next_round:
            self._lease_round(now)
        now = self._clock()
        running = [h for h in self._held.values() if h.ready]
        waiting = {h.runner.shard: h for h in running if h.paused_until <= now}
        block_s = self._block_s(running, now)
        self._changed.clear()
        found: dict[Partition, list[Entry]] = {}
        if waiting:
            after = {shard: h.runner.position for shard, h in waiting.items()}
            try:
                found = self._waiter.wait(
                    after, count=_READ_COUNT, block_ms=max(1, int(block_s * 1000))
                )
            except BrokerUnavailable:
                return _RETRY_S
            except Exception:
                log.exception("partitions: waiting for log entries failed")
                return _RETRY_S
        elif block_s:
            self._changed.wait(block_s)  # a rebuild that ends wakes it
        self._turns(waiting, found)
        if self._taking:
            self._report_taking()
        return 0.0

    def _lease_round(self, now: float) -> None:
        """The round of leases, and when the next is due; a failed round is retried then."""
        self._next_round = now + self._round_s
        try:
            self._round()
        except BrokerUnavailable:
            pass  # the leases lapse by themselves if it goes on
        except Exception:
            log.exception("partitions: the lease round failed")

    def _block_s(self, running: list[_Held], now: float) -> float:
        """How long to wait for entries: until the next round or chore of those running, and
        shortly while others rebuild (they join the wait once rebuilt)."""
        due = min((h.runner.next_chore() for h in running), default=self._next_round)
        longest = self._max_block_s
        if len(running) < len(self._held):
            longest = min(longest, _REBUILDING_BLOCK_S)
        return min(longest, max(0.0, min(due, self._next_round) - now))

    def _turns(self, waiting: dict[Partition, _Held], found: dict[Partition, list[Entry]]) -> None:
        """A turn of each partition waited on, with the entries found for it (a partition
        idle with none found takes no turn); a gap in its log rebuilds it."""
        now = self._clock()
        for shard, held in waiting.items():
            entries = found.get(shard, [])
            if held.dropped or (not entries and held.runner.idle(now)):
                continue
            try:
                pause = held.runner.turn(entries)
            except LogGap as exc:
                log.warning("%s: rebuilding it", exc)
                self._restart(held)
                continue
            if pause:
                held.paused_until = self._clock() + pause

    def _round(self) -> None:
        roster = self._group.round()
        self.members = len(roster.members)
        for shard, held in list(self._held.items()):
            if not held.lease.holding:
                self._forget(shard, "lost")
        share = quota(roster.members, self.member, self.partitions)
        mine = list(self._held)
        if len(mine) < share and roster.settled:
            free = sorted(roster.free - set(mine), key=lambda s: preference(self.member, s))
            taken = self._group.take(free[: share - len(mine)])
            for shard, lease in taken.items():
                self._start(shard, lease)
            if taken:
                partition_log.log.info(
                    "took the leases of %s: %s", counted(len(taken)), ranges(taken)
                )
                self._taking.append(_Taking(set(taken)))
        elif len(mine) > share:
            given = mine[share:]  # the newest: they have the least built up
            for shard in given:
                self._hand_over(shard)
            partition_log.log.info(
                "handed over %s (%s): %d aggregators share them now",
                counted(len(given)),
                ranges(given),
                len(roster.members),
            )

    def _start(self, shard: Partition, lease: Lease) -> None:
        held = self._held[shard] = _Held(lease, self._runner(shard, lease))
        self._spawn(lambda: self._rebuild(held))

    def _runner(self, shard: Partition, lease: Lease) -> ShardRunner:
        return ShardRunner(
            self._new_aggregator(),
            self._broker,
            self._broker.event_log(shard),
            lease,
            tick_us=self._tick_us,
            topic_ttl_us=self._topic_ttl_us,
            checkpoint_interval_s=self._checkpoint_interval_s,
            clock=self._clock,
            alone=self._alone,
        )

    def _rebuild(self, held: _Held) -> None:
        """Cold: from the checkpoints and the log up to the applied position (a greenlet of
        its own, a few at a time: the others go on meanwhile)."""
        while not held.dropped:
            try:
                held.replayed = held.runner.rebuild()
                break
            except BrokerUnavailable:
                pause = _RETRY_S
            except Exception:
                log.exception("partition %d/%d: the rebuild failed", *held.runner.shard)
                pause = _RETRY_S * 10
            # Half rebuilt: start again with fresh windows, or some entries would count twice.
            held.runner.close()
            held.runner = self._runner(held.runner.shard, held.lease)
            self._sleep(pause)
        if not held.dropped:
            held.ready = True
            self._changed.set()

    def _restart(self, held: _Held) -> None:
        """Rebuild a runner cold, keeping its lease (its windows cannot be trusted)."""
        held.ready = False
        self._published_before += held.runner.updates_published
        self._overflow_before += held.runner.aggregator.group_overflow
        self._forecast_bytes_before += held.runner.aggregator.forecast_work.bytes
        self._forecasts_before += held.runner.aggregator.forecast_work.made
        held.runner.close()
        held.runner = self._runner(held.runner.shard, held.lease)
        self._spawn(lambda: self._rebuild(held))

    def _report_taking(self) -> None:
        """One line when every partition a round took is rebuilt, one when every one is
        active (those given up meanwhile left the count)."""
        for taking in list(self._taking):
            held = [self._held[s] for s in sorted(taking.shards)]
            if not taking.rebuilt and all(h.ready for h in held):
                taking.rebuilt = True
                partition_log.log.info(
                    "rebuilt %s: %d topics from %d log entries",
                    counted(len(held)),
                    sum(len(h.runner.aggregator.topics()) for h in held),
                    sum(h.replayed for h in held),
                )
            if taking.rebuilt and all(h.runner.active for h in held):
                self._taking.remove(taking)
                if held:
                    partition_log.log.info(
                        "%s active: %s", counted(len(held)), ranges(taking.shards)
                    )

    def _hand_over(self, shard: Partition) -> bool:
        """Publish what the partition applied (it reads no more), then give its lease up: the
        next holder starts from exactly there, without waiting for the lease to expire.
        Whether everything it applied was published (else the next holder publishes it)."""
        held = self._held[shard]
        published = held.runner.hand_over() if held.ready else True
        self._forget(shard, "handed over")
        return published

    def _forget(self, shard: Partition, why: str) -> None:
        held = self._held.pop(shard)
        held.dropped = True
        for taking in self._taking:
            taking.shards.discard(shard)
        if held.ready:
            self._published_before += held.runner.updates_published
            self._overflow_before += held.runner.aggregator.group_overflow
            self._forecast_bytes_before += held.runner.aggregator.forecast_work.bytes
            self._forecasts_before += held.runner.aggregator.forecast_work.made
        with contextlib.suppress(BrokerUnavailable):  # it lapses by itself
            self._group.release(held.lease)
        held.runner.close()
        if why == "lost":
            partition_log.log.warning("partition %d/%d %s", *shard, why)
        else:
            partition_log.log.debug("partition %d/%d %s", *shard, why)

    def leave(self) -> None:
        """Stopping: publish what every partition applied, give every lease up, leave the
        members; the others take the partitions over at once."""
        if self._closed:
            return
        self._closed = True
        given = list(self._held)
        unpublished = [shard for shard in given if not self._hand_over(shard)]
        if given:
            partition_log.log.info(
                "stopping: handed over %s (%s)%s",
                counted(len(given)),
                ranges(given),
                f", {len(unpublished)} with entries their next holder publishes"
                if unpublished
                else "",
            )
        with contextlib.suppress(BrokerUnavailable):  # the membership lapses by itself
            self._group.leave()
        self.close()

    def close(self) -> None:
        """Close the connections, leaving nothing behind gracefully (what a process that dies
        does: its membership and leases lapse)."""
        self._closed = True
        for held in self._held.values():
            held.dropped = True
            held.runner.close()
        self._group.close()
        self._waiter.close()
