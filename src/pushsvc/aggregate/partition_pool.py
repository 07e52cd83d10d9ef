"""Elastic aggregators: the `pushsvc aggregate` processes share the partitions by leases.

Every aggregator process is a member of the deployment's `LeaseGroup` (a membership that
expires unless renewed, like a lease). Every ttl/3 it renews its membership and the leases
it holds in one round trip, and sees the live members and the free partitions. Its share
is `quota`: the partitions spread over the members by their sorted ids, P // N each and one
more for the first P % N, so the shares differ by at most one and add up to P.

* Under its share, it takes free partitions (each process tries them in an order of its
  own, so that processes starting together rarely race for the same one) and rebuilds each
  cold from the log and the checkpoints up to its applied position (`ShardRunner.rebuild`),
  then applies and publishes it.
* Over its share (another process joined), it hands partitions over gracefully: it stops
  reading their logs, publishes what it applied (`ShardRunner.hand_over`), and gives the
  lease up, so the taker (which finds it free within ttl/3) starts from exactly the applied
  position instead of waiting for the lease to expire.
* A process that dies stops renewing: its membership and its leases lapse within one ttl,
  the others' shares grow and they take its partitions.

A partition changes hands at its applied position, fenced by its lease token: the publish
script refuses a holder whose token is no longer the lease's, so nothing is applied twice or
skipped, whatever the timing (`shard_runner.py`).

One process, many partitions, few connections: the leases and the membership share one
connection (the lease group's), the runners' other calls share the broker's pool, and one
`LogWaiter` waits for new entries of every held partition at once. The runners run in one
greenlet (the `loop`), which hands each the entries the waiter read for it; the rounds run in
another, so that a slow publish never delays a renewal; rebuilds run beside them, two at a
time.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gevent
import gevent.event
import gevent.pool

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.shard_runner import ShardRunner
from pushsvc.broker.shared_log import Entry, Lease, LogBroker
from pushsvc.core.partitions import partition_of
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

Shard = tuple[int, int]

_READ_COUNT = 512  # log entries read per partition at once
_MAX_BLOCK_S = 0.25
"""The longest wait for new entries: a partition taken or handed over joins or leaves the
wait after at most this long."""
_RETRY_S = 0.5
_REBUILDS_AT_ONCE = 2


def quota(members: Sequence[str], member: str, partitions: int) -> int:
    """How many partitions `member` should hold among `members` (its own id included or
    not): P // N each, one more for the first P % N members in sorted order."""
    ordered = sorted({*members, member})
    count = len(ordered)
    rank = ordered.index(member)
    return partitions // count + (1 if rank < partitions % count else 0)


def preference(member: str, shard: Shard) -> int:
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
    """Given up (handed over, or lost) before its rebuild ended: the rebuild discards it."""
    draining: bool = False
    handed: gevent.event.Event = field(default_factory=gevent.event.Event)
    paused_until: float = 0.0


class PartitionPool:
    """This process's share of the partitions: takes, runs and hands over runners as the
    members come and go. `run` in a greenlet of its own until `stop` is set."""

    def __init__(
        self,
        broker: LogBroker,
        new_aggregator: Callable[[], Aggregator],
        *,
        lease_us: int,
        tick_us: int,
        topic_ttl_us: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker = broker
        self._new_aggregator = new_aggregator
        self.partitions = broker.shards
        self._lease_us = lease_us
        self._tick_us = tick_us
        self._topic_ttl_us = topic_ttl_us
        self._clock = clock
        self._group = broker.lease_group(ttl_us=lease_us)
        self._waiter = broker.log_waiter()
        self._held: dict[Shard, _Held] = {}
        self._rebuilds = gevent.pool.Pool(_REBUILDS_AT_ONCE)
        self._changed = gevent.event.Event()
        self.members = 0
        """Live aggregator processes, as the last round saw them."""
        self._published_before = 0
        self._overflow_before = 0

    @property
    def member(self) -> str:
        return self._group.member

    # -- what the metrics, the alerts and the tests read ---------------------------------

    @property
    def owned(self) -> list[Shard]:
        """The partitions this process holds the lease of (rebuilding or running)."""
        return sorted(s for s, h in self._held.items() if h.lease.holding and not h.draining)

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

    # -- the rounds ------------------------------------------------------------------------

    def run(self, stop: gevent.event.Event) -> None:
        """The rounds, every ttl/3, with the loop in a greenlet beside them; once `stop` is
        set, hand every partition over and leave."""
        loop = gevent.spawn(self._loop, stop)
        interval = self._lease_us / 3_000_000
        try:
            while not stop.is_set():
                started = self._clock()
                # Unreachable: the leases lapse by themselves if it goes on.
                with contextlib.suppress(BrokerUnavailable):
                    self._round()
                stop.wait(max(0.0, interval - (self._clock() - started)))
        finally:
            loop.join(_MAX_BLOCK_S * 4 + 1)
            loop.kill()
            self._leave()

    def _round(self) -> None:
        roster = self._group.round()
        self.members = len(roster.members)
        for shard, held in list(self._held.items()):
            if not held.lease.holding:
                self._forget(shard, "lost")
        share = quota(roster.members, self.member, self.partitions)
        mine = [s for s, h in self._held.items() if not h.draining]
        if len(mine) < share:
            free = sorted(roster.free - set(self._held), key=lambda s: preference(self.member, s))
            for shard, lease in self._group.take(free[: share - len(mine)]).items():
                self._start(shard, lease)
        elif len(mine) > share:
            # The newest first: they have the least built up.
            self._hand_over(mine[share:])

    def _start(self, shard: Shard, lease: Lease) -> None:
        runner = ShardRunner(
            self._new_aggregator(),
            self._broker,
            self._broker.event_log(shard),
            lease,
            tick_us=self._tick_us,
            topic_ttl_us=self._topic_ttl_us,
            clock=self._clock,
        )
        held = self._held[shard] = _Held(lease, runner)
        self._rebuilds.spawn(self._rebuild, held)

    def _rebuild(self, held: _Held) -> None:
        while not held.dropped:
            try:
                held.runner.rebuild()
                break
            except BrokerUnavailable:
                gevent.sleep(_RETRY_S)
        if not held.dropped:
            held.ready = True
            self._changed.set()

    def _hand_over(self, shards: Sequence[Shard]) -> None:
        """Ask the loop to publish what these partitions applied, wait for it (a while at
        most), then give their leases up."""
        handing = [self._held[s] for s in shards]
        for held in handing:
            held.draining = True
        self._changed.set()
        deadline = self._clock() + self._lease_us / 6_000_000 + _MAX_BLOCK_S
        for held in handing:
            if held.ready:
                held.handed.wait(max(0.0, deadline - self._clock()))
        for shard in shards:
            self._forget(shard, "handed over")

    def _forget(self, shard: Shard, why: str) -> None:
        held = self._held.pop(shard)
        held.dropped = True
        if held.ready:
            self._published_before += held.runner.updates_published
            self._overflow_before += held.runner.aggregator.group_overflow
        with contextlib.suppress(BrokerUnavailable):  # it lapses by itself
            self._group.release(held.lease)
        held.runner.close()
        log.warning("partition %d/%d %s", *shard, why)

    def _leave(self) -> None:
        """Stopping: publish what every partition applied, give every lease up, leave."""
        for held in self._held.values():
            held.dropped = True
            if held.ready:
                held.runner.hand_over()
        for shard in list(self._held):
            self._forget(shard, "handed over (stopping)")
        with contextlib.suppress(BrokerUnavailable):  # the membership lapses by itself
            self._group.leave()
        self._group.close()
        self._waiter.close()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self, stop: gevent.event.Event) -> None:
        """Every ready runner in turn, each with the entries the waiter read for it."""
        while not stop.is_set():
            for held in list(self._held.values()):
                if held.draining and held.ready and not held.handed.is_set():
                    held.runner.hand_over()
                    held.handed.set()
            now = self._clock()
            running = [
                h for h in self._held.values() if h.ready and not h.draining and not h.dropped
            ]
            waiting = {h.runner.shard: h for h in running if h.paused_until <= now}
            due = min((h.runner.next_chore() for h in running), default=now + _MAX_BLOCK_S)
            block_s = min(_MAX_BLOCK_S, max(0.0, due - now))
            self._changed.clear()
            if waiting:
                after = {shard: h.runner.position for shard, h in waiting.items()}
                try:
                    found = self._waiter.wait(
                        after, count=_READ_COUNT, block_ms=max(1, int(block_s * 1000))
                    )
                except BrokerUnavailable:
                    stop.wait(_RETRY_S)
                    continue
            else:
                self._changed.wait(block_s)
                found = {}
            for shard, held in waiting.items():
                if held.dropped or held.draining:
                    continue
                entries: list[Entry] = found.get(shard, [])
                pause = held.runner.turn(entries)
                if pause:
                    held.paused_until = self._clock() + pause
