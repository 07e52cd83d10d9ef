"""The contract between a shared event log and the aggregators that read it.

Every broker's events go through a log that the aggregators read (Redis, or the memory store
in one process: `pushsvc.broker.memory`); it hands each shard's aggregators an `EventLog` and
a `Lease` (`LogBroker`). Every aggregator of a shard applies
the log in order (hot standbys); the lease holder alone publishes, and each publish carries
where in the log its drafts come from (`pushsvc.broker.base.Applied`) and the holder's lease
token as its fence (`Broker.publish_updates`). `pushsvc.aggregate.shard_runner` drives this
contract, on every broker.

The partitions are shared out among the aggregator processes (`pushsvc.aggregate.partition_pool`):
each process is a member of a `LeaseGroup`, which keeps its membership and every lease it
holds on one connection, and waits for new entries of all the partitions it holds at once
(`LogWaiter`), so that one process reading many partitions holds a few connections, not a
few per partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import gevent.event

from pushsvc.broker.base import Broker
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event
from pushsvc.core.partitions import Partition

__all__ = [
    "ENTRY_EVENTS",
    "FIRST",
    "FORGET_SCAN",
    "Entry",
    "EventLog",
    "Lease",
    "LeaseGroup",
    "LogBroker",
    "LogState",
    "LogWaiter",
    "Roster",
    "entry_slices",
    "position",
]

FIRST = "0-0"
"""The position before any entry."""
FORGET_SCAN = 1000
"""`EventLog.forget` reads at most this many entries after the proposer's position: past it,
it forgets nothing (the topics are proposed again once the aggregator caught up)."""


ENTRY_EVENTS = 1000
"""A batch is logged as entries of at most this many events, together in one append (atomic
still: all of them or none, one lateness check, one idempotency key). Exactly-once publishes
an entry's updates in one step (one script on Redis), so the entry bounds that step: a big
batch logged as one entry holds Redis while it publishes, and every producer's append waits
behind it (measured: docs/performance.md, 'Hostile clients')."""


def entry_slices(count: int, per_entry: int = ENTRY_EVENTS) -> list[slice]:
    """How a batch of `count` events is cut into entries: in order, `per_entry` at most."""
    return [slice(start, start + per_entry) for start in range(0, count, per_entry)]


def position(entry_id: str) -> tuple[int, int]:
    """An entry id (`ms-seq`, as Redis streams number them) as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: `events` of `topic`, `ticks` (topic -> clock µs), `forgotten` (idle
    topics), or `deleted` (a topic, `Broker.delete_topic`). `n` numbers the shard's entries
    (1 for the first ever, one more for each: what `LogState.applied_count` counts), so a
    reader knows when entries after its position were trimmed before it read them (None in
    an entry logged before entries were numbered)."""

    id: str
    topic: str | None = None
    events: list[Event] | None = None
    ticks: dict[str, int] | None = None
    forgotten: list[str] | None = None
    deleted: str | None = None
    n: int | None = None


@dataclass(frozen=True, slots=True)
class LogState:
    """Where a starting aggregator begins: the last entry applied (FIRST for none), how many
    entries that was, the window clock of each of the shard's topics at that point, and how
    long ago (µs, by the broker's clock as it answered) each of those clocks was published:
    its latest update's id time. A topic's clock goes on by the wall time since then,
    downtime included; an age, not a time, so that the broker's clock and the aggregator's
    host's need not agree."""

    applied: str
    applied_count: int
    clocks: dict[str, int]
    ages: dict[str, int] = field(default_factory=dict)


class EventLog(Protocol):
    """One shard's log, as that shard's aggregators read and extend it. Writes other than
    the producers' appends take the lease token as `fence` and raise Fenced unless it is the
    lease's current one; every call raises BrokerUnavailable when the log cannot be reached."""

    @property
    def shard(self) -> Partition: ...

    def state(self) -> LogState:
        """The applied position and the clocks of the shard's topics there."""
        ...

    def applied(self) -> str:
        """The last entry the active aggregator published (FIRST for none)."""
        ...

    def read(self, after: str, *, count: int, block_ms: int | None = None) -> list[Entry]:
        """Entries after `after`, oldest first; with `block_ms`, wait that long for one."""
        ...

    def upto(self, after: str, last: str, *, count: int) -> list[Entry]:
        """Entries after `after` up to `last` included (rebuilding), at most `count`."""
        ...

    def append_ticks(self, fence: str, ticks: Mapping[str, int], after: str) -> str | None:
        """Log a round of idle ticks (topic -> clock µs) proposed by an aggregator that applied
        the log up to entry `after`; the entry's id. None, and nothing logged, when one of the
        topics was deleted after `after`: the proposer had not seen it, and a tick must not
        bring the deleted topic's clock back (the next round proposes afresh)."""
        ...

    def forget(self, fence: str, after: str, clocks: Mapping[str, int]) -> list[str]:
        """Forget those idle topics of `clocks` (topic -> the clock the caller saw) for which
        nothing was logged after entry `after`; one entry in the log drops their windows.
        The topics forgotten."""
        ...

    def save_checkpoints(self, fence: str, checkpoints: Sequence[Checkpoint]) -> int:
        """Replace these topics' checkpoints, each unless a newer one is saved; how many."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint saved for the shard's topics."""
        ...

    def announce_rules(self, digest: str) -> None:
        """Record the digest of the rules the shard's active aggregator computes with."""
        ...

    def trim(self, before: str) -> None:
        """Forget the entries before `before` (no aggregator needs them to rebuild)."""
        ...

    def close(self) -> None: ...


class Lease(Protocol):
    """A shard's lease as one aggregator sees it: `holding` is what it last learned (it sets
    it False itself when a fenced write tells it the lease moved on), and `token` names its
    current or last tenure, changing when it takes the lease after another process."""

    holding: bool

    @property
    def token(self) -> str: ...

    def keep(self, stop: gevent.event.Event) -> None:
        """Take and renew the lease until `stop` is set (one greenlet), then release it."""
        ...

    def close(self) -> None: ...


class LogWaiter(Protocol):
    """Waits for new entries in the logs of many partitions at once, for one process, on a
    bounded number of connections (not one per partition). One greenlet uses it."""

    def wait(
        self, after: Mapping[Partition, str], *, count: int, block_ms: int
    ) -> dict[Partition, list[Entry]]:
        """The entries after `after[shard]` of each shard that has some (at most `count` per
        shard, oldest first), waiting up to `block_ms` for one if none has any yet. Raises
        BrokerUnavailable."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Roster:
    """What one round of a `LeaseGroup` saw: the live aggregator processes (their member ids,
    sorted, this one's included), the partitions whose lease nobody holds, and whether the
    members are settled (the same as the last round saw, or this is the first round; and not
    within one ttl of having to join again): nothing is taken from an unsettled round, so
    that a process that lost its membership (Redis restarted empty) takes its own partitions
    back before anyone else may."""

    members: tuple[str, ...]
    free: frozenset[Partition]
    settled: bool = True


class LeaseGroup(Protocol):
    """One aggregator process among the others: its membership (it expires unless renewed,
    like a lease) and its leases on partitions, kept together on one connection. Not
    greenlet-safe: one greenlet runs the rounds, takes and releases."""

    @property
    def member(self) -> str:
        """This process's id among the members."""
        ...

    def round(self) -> Roster:
        """Renew the membership and every lease taken and not released (each lease's
        `holding` says whether it still is ours), and look at which leases are free: one round
        trip. Every ttl/3. Raises BrokerUnavailable (the leases then lapse by themselves)."""
        ...

    def take(self, shards: Sequence[Partition]) -> dict[Partition, Lease]:
        """Try to take these partitions' leases (free ones, as a round saw them); the leases
        that are now ours, which later rounds renew."""
        ...

    def release(self, lease: Lease) -> None:
        """Give `lease` up now (its taker need not wait for it to expire); rounds stop renewing
        it."""
        ...

    def leave(self) -> None:
        """Give every lease up and leave the members (a process that stops)."""
        ...

    def close(self) -> None: ...


class LogBroker(Broker, Protocol):
    """A broker whose event log is shared by the aggregators of every process."""

    def event_log(self, shard: Partition) -> EventLog:
        """The shard's log, for one aggregator."""
        ...

    def lease(self, shard: Partition, *, ttl_us: int) -> Lease:
        """This process's hold on the shard's lease."""
        ...

    def log_waiter(self) -> LogWaiter:
        """A waiter for new entries across the partitions one process holds."""
        ...

    def lease_group(self, *, ttl_us: int) -> LeaseGroup:
        """This process's membership among the aggregators and its partition leases."""
        ...
