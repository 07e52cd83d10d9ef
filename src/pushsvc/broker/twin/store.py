"""The memory twin's store: what Redis holds for a deployment, in one process.

Each method is one of the Redis broker's scripts or round trips (named beside it), applied
atomically as Redis applies a script, on the injected clock: stream ids, lease expiry and the
members' scores come from `clock`, as Redis's own clock gives them. Every process of a
simulated deployment (its `MemoryLogBroker`s, leases, logs and waiters) shares one store, as
processes share one Redis; dropping a process drops its objects, never the store.

Each call first asks `faults` for its fate (`faults.py`): refused before it runs, or run with
its reply lost; both raise BrokerUnavailable, as the Redis classes do.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pushsvc.broker.base import Appended, Applied, UpdatesHandler
from pushsvc.broker.publish_payload import PublishPayload, build_payload
from pushsvc.broker.redis.log import FORGET_SCAN
from pushsvc.broker.redis.script_replies import LeaseCode
from pushsvc.broker.shared_log import FIRST, Entry, position
from pushsvc.broker.twin.clock import Clock
from pushsvc.broker.twin.faults import Fate, Faults, no_faults
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency, key_reused
from pushsvc.core.lateness import check_lateness
from pushsvc.core.partitions import Partition, check_partitions, partition_of
from pushsvc.core.updates import Kind, Update, UpdateDraft, UpdateId, new_epoch
from pushsvc.errors import BrokerUnavailable, Fenced, PublishedAlready, TooManyTopics

log = logging.getLogger(__name__)

T = TypeVar("T")
Position = tuple[int, int]

# Bound once: looking a member up on its enum class costs a call of its own, and a simulation
# makes hundreds of thousands of store calls.
_FAIL, _LOST = Fate.FAIL, Fate.LOST
_HELD, _RENEWED, _TAKEN, _RESUMED = (
    LeaseCode.HELD,
    LeaseCode.RENEWED,
    LeaseCode.TAKEN,
    LeaseCode.RESUMED,
)


def _holder(lease: tuple[str, int] | None, now_ms: int) -> str | None:
    """Who holds a lease (token, expiry in ms) at `now_ms`: nobody once it expired."""
    if lease is None or lease[1] <= now_ms:
        return None
    return lease[0]


@dataclass(eq=False)
class PartitionData:
    """One partition's keys: its event log and lease (the shard's), its history and latest
    updates (the partition's)."""

    index: int
    entries: list[Entry] = field(default_factory=list)
    ids: list[Position] = field(default_factory=list)
    """Each entry's position, for bisecting."""
    journal: list[Entry] = field(default_factory=list)
    """Every entry ever logged, in order (a trim leaves it): what a test's oracle reads."""
    last_entry: Position = (0, 0)
    """The stream's last id: it outlives a trim, as a Redis stream's does."""
    last_id: str = FIRST
    """`last_entry` as text."""
    clocks: dict[str, int] = field(default_factory=dict)
    logged: int = 0
    lease: tuple[str, int] | None = None
    """The holder's token and when the key expires (ms)."""
    taken: str | None = None
    """The token the lease was last taken under (`{lease}:taken`)."""
    applied: tuple[str, int] | None = None
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    rules: str | None = None
    forgotten: int = 0
    epoch: str | None = None
    history: deque[Update] = field(default_factory=deque)
    last_update: Position = (0, 0)
    trimmed: Position | None = None
    """The newest update the history dropped (this epoch)."""
    latest: dict[str, Update] = field(default_factory=dict)
    first: dict[str, Position] = field(default_factory=dict)
    """Each topic's first update of the epoch."""
    groups: dict[str, dict[str, bytes]] = field(default_factory=dict)
    alerts: dict[str, bytes] = field(default_factory=dict)
    points: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """The newest bucket start (ms) of each series tier."""


def next_id(last: Position, now_ms: int) -> Position:
    """The id XADD `*` gives after `last` at `now_ms`."""
    return (now_ms, 0) if now_ms > last[0] else (last[0], last[1] + 1)


def entry_id(pos: Position) -> str:
    return f"{pos[0]}-{pos[1]}"


class Store:
    """A deployment's Redis, in memory (see the module's doc). Not thread-safe: one greenlet
    (a simulation's scheduler, or a test) drives every process on it."""

    def __init__(
        self,
        partitions: int,
        *,
        clock: Clock,
        history: int = 10_000,
        max_topics: int = 100_000,
        faults: Faults = no_faults,
    ) -> None:
        check_partitions(partitions)
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self.partitions = partitions
        self.clock = clock
        self.history_len = history
        self.max_topics = max_topics
        self.faults = faults
        self.parts = [PartitionData(index) for index in range(partitions)]
        self.members: dict[str, int] = {}
        """The aggregator processes: member id -> when it expires (ms)."""
        self._keys: dict[tuple[str, str], tuple[bytes, int, int]] = {}
        """Idempotency keys: (topic, key) -> (digest, events logged, expiry ms)."""
        self.handlers: list[UpdatesHandler] = []
        self.derived: dict[str, int] = {}
        self._tokens = itertools.count(1)

    # -- plumbing ------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def token(self) -> str:
        """A fresh lease token; numbered, not random, so that a seeded run repeats exactly."""
        return f"{next(self._tokens):016x}"

    def run(self, operation: str, shard: Partition | None, call: Callable[[], T]) -> T:
        """`call` under its fate: refused before, or its reply lost after."""
        fate = self.faults(operation, shard)
        if fate is _FAIL:
            raise BrokerUnavailable(f"{operation}: the store refused (injected)")
        result = call()
        if fate is _LOST:
            raise BrokerUnavailable(f"{operation}: the reply was lost (injected)")
        return result

    def part(self, topic: str) -> PartitionData:
        return self.parts[partition_of(topic, self.partitions)]

    # -- leases (lease_acquire.lua, lease_release.lua) -----------------------------------

    def holder(self, index: int) -> str | None:
        return _holder(self.parts[index].lease, self.now_ms())

    def free(self, shards: Sequence[Partition]) -> frozenset[Partition]:
        """The shards whose lease nobody holds."""
        now = self.now_ms()
        parts = self.parts
        return frozenset(shard for shard in shards if _holder(parts[shard[0]].lease, now) is None)

    def acquire(self, index: int, token: str, fresh: str, ttl_ms: int) -> LeaseCode:
        part = self.parts[index]
        now = self.now_ms()
        holder = _holder(part.lease, now)
        expires = now + ttl_ms
        if holder == token:
            part.lease = (token, expires)
            return _RENEWED
        if holder is not None:
            return _HELD
        if part.taken == token:
            part.lease = (token, expires)
            return _RESUMED
        part.lease = (fresh, expires)
        part.taken = fresh
        return _TAKEN

    def release(self, index: int, token: str) -> None:
        if self.holder(index) == token:
            self.parts[index].lease = None

    def fence(self, index: int, token: str) -> None:
        if self.holder(index) != token:
            raise Fenced("FENCED the lease is held by another aggregator")

    # -- membership (lease_group.py's round) ---------------------------------------------

    def join(self, member: str, ttl_ms: int) -> bool:
        """ZADD the member's expiry, ZREMRANGEBYSCORE the expired; whether it was added (it
        was not a member)."""
        now = self.now_ms()
        added = member not in self.members
        self.members[member] = now + ttl_ms
        for other, expires in list(self.members.items()):
            if expires <= now:
                del self.members[other]
        return added

    # -- the log (append_events.lua, append_ticks.lua, forget_topics.lua, ...) -----------

    def _log(self, part: PartitionData, entry: Callable[[str], Entry]) -> str:
        part.last_entry = next_id(part.last_entry, self.now_ms())
        part.last_id = entry_id(part.last_entry)
        made = entry(part.last_id)
        part.entries.append(made)
        part.ids.append(part.last_entry)
        part.journal.append(made)
        part.logged += 1
        return made.id

    def append(
        self,
        topic: str,
        events: Sequence[Event],
        lateness_us: int,
        idempotency: Idempotency | None,
    ) -> Appended:
        part = self.part(topic)
        now = self.now_ms()
        name = None
        if idempotency is not None:
            name = (topic, idempotency.key)
            seen = self._keys.get(name)
            if seen is not None and seen[2] > now:
                if seen[0] != idempotency.digest:
                    raise key_reused()
                return Appended(seen[1], replayed=True)
        batch = list(events)
        clock = part.clocks.get(topic)
        if clock is None and sum(len(p.clocks) for p in self.parts) >= self.max_topics:
            raise TooManyTopics.at(self.max_topics)
        check_lateness(clock, batch, lateness_us)
        newest = max(e.ts_us for e in batch)
        part.clocks[topic] = newest if clock is None else max(clock, newest)
        self._log(part, lambda id: Entry(id, topic, batch))
        if name is not None and idempotency is not None:
            self._keys[name] = (idempotency.digest, len(batch), now + idempotency.window_ms)
        return Appended(len(batch))

    def append_ticks(self, index: int, fence: str, ticks: Mapping[str, int]) -> str:
        self.fence(index, fence)
        part = self.parts[index]
        for topic, clock in ticks.items():
            current = part.clocks.get(topic)
            if current is None or clock > current:
                part.clocks[topic] = clock
        logged = dict(ticks)
        return self._log(part, lambda id: Entry(id, ticks=logged))

    def forget(self, index: int, fence: str, after: str, clocks: Mapping[str, int]) -> list[str]:
        self.fence(index, fence)
        part = self.parts[index]
        later = part.entries[bisect.bisect_right(part.ids, position(after)) :]
        if len(later) > FORGET_SCAN:
            return []
        touched: set[str] = set()
        for entry in later:
            if entry.topic is not None:
                touched.add(entry.topic)
            elif entry.ticks is not None:
                touched.update(entry.ticks)
        forgotten = [
            topic
            for topic, seen in clocks.items()
            if topic not in touched and part.clocks.get(topic) == seen
        ]
        for topic in forgotten:
            del part.clocks[topic]
            part.latest.pop(topic, None)
            part.first.pop(topic, None)  # its next update starts it afresh
            part.groups.pop(topic, None)
            part.checkpoints.pop(topic, None)
        if forgotten:
            self._log(part, lambda id: Entry(id, forgotten=list(forgotten)))
            part.forgotten += len(forgotten)
        return forgotten

    def read(self, index: int, after: str, count: int) -> list[Entry]:
        part = self.parts[index]
        if after == part.last_id:
            return []  # a reader that is up to date: most reads, every time a process steps
        start = bisect.bisect_right(part.ids, position(after))
        return part.entries[start : start + count]

    def upto(self, index: int, after: str, last: str, count: int) -> list[Entry]:
        part = self.parts[index]
        start = bisect.bisect_right(part.ids, position(after))
        end = bisect.bisect_right(part.ids, position(last))
        return part.entries[start : min(end, start + count)]

    def trim(self, index: int, before: str) -> None:
        part = self.parts[index]
        cut = bisect.bisect_left(part.ids, position(before))
        del part.entries[:cut], part.ids[:cut]

    def save_checkpoints(self, index: int, fence: str, checkpoints: Sequence[Checkpoint]) -> int:
        self.fence(index, fence)
        saved = self.parts[index].checkpoints
        written = 0
        for checkpoint in checkpoints:
            old = saved.get(checkpoint.topic)
            if old is None or checkpoint.position > old.position:
                saved[checkpoint.topic] = checkpoint
                written += 1
        return written

    # -- publishing (publish_updates.lua) -------------------------------------------------

    def publish(
        self,
        index: int,
        drafts: Sequence[UpdateDraft],
        applied: Applied | None,
        fence: str | None,
    ) -> list[Update]:
        """publish_updates.lua, from the same payload (`pushsvc.broker.publish_payload`)."""
        updates = self._publish(index, build_payload(drafts, applied=applied, fence=fence))
        if updates:
            for handler in list(self.handlers):
                try:
                    handler(list(updates))
                except Exception:
                    log.exception("updates handler %r failed", handler)
        return updates

    def _publish(self, index: int, payload: PublishPayload) -> list[Update]:
        """The payload applied, field by field as the script reads it."""
        part = self.parts[index]
        if payload.lease_token:
            self.fence(index, payload.lease_token)
        recorded = FIRST if part.applied is None else part.applied[0]
        if payload.applied_id and position(recorded) > position(payload.applied_after):
            raise PublishedAlready(
                f"PUBLISHED the log is applied up to {recorded}, past "
                f"{payload.applied_after} where this batch continues from"
            )
        if part.epoch is None:
            part.epoch = new_epoch(index)
        if payload.applied_id:
            count = 0 if part.applied is None else part.applied[1]
            part.applied = (payload.applied_id, count + payload.applied_entries)
        updates: list[Update] = []
        for draft in payload.drafts:
            kind = draft.kind
            if kind is Kind.POINT and not _keep_point(part, draft):
                continue  # its series holds it already: published before
            if kind is Kind.DELETION:
                _drop_topic(part, draft.topic)
            part.last_update = next_id(part.last_update, self.now_ms())
            ms, seq = part.last_update
            update = Update.of(draft, UpdateId(part.epoch, ms, seq))
            part.history.append(update)
            if len(part.history) > self.history_len:
                gone = part.history.popleft()
                part.trimmed = (gone.id.ms, gone.id.seq)
            updates.append(update)
            if kind is Kind.ALERT and draft.instance is not None:
                key, body = draft.instance
                if body:
                    part.alerts[key] = body
                else:
                    part.alerts.pop(key, None)
            elif kind is Kind.UPDATE:
                part.first.setdefault(draft.topic, part.last_update)
                part.latest[draft.topic] = update
            if draft.groups or draft.forgotten:
                kept = part.groups.setdefault(draft.topic, {})
                kept.update(draft.groups)
                for gid in draft.forgotten:
                    kept.pop(gid, None)
        return updates

    def state(self, index: int) -> tuple[str, int, dict[str, int]]:
        """read_state.lua: the applied position, how many entries, the latest clocks."""
        part = self.parts[index]
        applied, count = part.applied or (FIRST, 0)
        return applied, count, {t: u.clock_us for t, u in part.latest.items()}


def _keep_point(part: PartitionData, draft: UpdateDraft) -> bool:
    """Keep a point in its tier; False when the tier has it already (a bucket is closed once:
    its start only grows), as XADD refuses an id not above the stream's top."""
    write = draft.series
    assert write is not None, "a point's draft"
    tier = (draft.topic, write.group_id, write.resolution)
    start_ms = write.t_us // 1000
    if start_ms <= part.points.get(tier, -1):
        return False
    part.points[tier] = start_ms
    return True


def _drop_topic(part: PartitionData, topic: str) -> None:
    """Everything kept of a deleted topic but its history: its latest update (its next one is
    its first again), groups, checkpoint and series."""
    part.latest.pop(topic, None)
    part.first.pop(topic, None)
    part.groups.pop(topic, None)
    part.checkpoints.pop(topic, None)
    for tier in [tier for tier in part.points if tier[0] == topic]:
        del part.points[tier]
