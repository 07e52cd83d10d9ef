"""One shard's event log in the memory store (`shared_log.EventLog`), as `redis/log.py` is on
Redis: each method one of the Redis scripts or commands (named beside it), applied here to
the partition's keys (`PartitionData`) as one round trip of the store (`Store.run`).

Reads never block: the aggregators wait for entries through a `MemoryWaiter`, which reads
with `read_entries`.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Mapping, Sequence

from pushsvc.broker.memory.store import LoggedEvents, PartitionData, Store
from pushsvc.broker.shared_log import FIRST, FORGET_SCAN, Entry, LogState, position
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.partitions import Partition

READ_EVENTS = 20_000
"""A read stops at the entry that brings it this many events, whatever its count: the events
read are made whole again (`LoggedEvents.entry`) and live until applied, and an aggregator
behind by 512 batches of 10,000 would hold five million of them at once."""


def read_entries(part: PartitionData, after: str, count: int) -> list[Entry]:
    """XREAD: up to `count` entries after `after`, ending early at the entry that brings
    `READ_EVENTS` events."""
    if after == part.last_id:
        return []  # a reader that is up to date: most reads, every time a process steps
    entries = part.entries
    start = bisect.bisect_right(part.ids, position(after))
    end = min(start + count, len(entries))
    events = 0
    for index in range(start, end):
        logged = entries[index]
        if isinstance(logged, LoggedEvents):
            events += len(logged.packed)
            if events >= READ_EVENTS:
                end = index + 1
                break
    return _unpacked(entries[start:end])


def _unpacked(entries: Sequence[Entry | LoggedEvents]) -> list[Entry]:
    return [e if isinstance(e, Entry) else e.entry() for e in entries]


class MemoryEventLog:
    """`shared_log.EventLog` on a `Store` (see the module's doc)."""

    def __init__(self, store: Store, shard: Partition) -> None:
        self._store = store
        self._shard = shard
        self._index = shard[0]
        self._part = store.parts[shard[0]]

    @property
    def shard(self) -> Partition:
        return self._shard

    def state(self) -> LogState:
        return self._store.run("state", self._shard, self._state)

    def applied(self) -> str:
        return self._store.run("applied", self._shard, self._applied)

    def read(self, after: str, *, count: int, block_ms: int | None = None) -> list[Entry]:
        return self._store.run(
            "read", self._shard, functools.partial(read_entries, self._part, after, count)
        )

    def upto(self, after: str, last: str, *, count: int) -> list[Entry]:
        return self._store.run(
            "upto", self._shard, functools.partial(self._upto, after, last, count)
        )

    def append_ticks(self, fence: str, ticks: Mapping[str, int], after: str) -> str | None:
        return self._store.run(
            "ticks", self._shard, functools.partial(self._append_ticks, fence, ticks, after)
        )

    def forget(self, fence: str, after: str, clocks: Mapping[str, int]) -> list[str]:
        return self._store.run(
            "forget", self._shard, functools.partial(self._forget, fence, after, clocks)
        )

    def save_checkpoints(self, fence: str, checkpoints: Sequence[Checkpoint]) -> int:
        return self._store.run(
            "save_checkpoints",
            self._shard,
            functools.partial(self._save_checkpoints, fence, checkpoints),
        )

    def checkpoints(self) -> list[Checkpoint]:
        return self._store.run("checkpoints", self._shard, self._checkpoints)

    def announce_rules(self, digest: str) -> None:
        self._store.run("announce_rules", self._shard, functools.partial(self._announce, digest))

    def trim(self, before: str) -> None:
        self._store.run("trim", self._shard, functools.partial(self._trim, before))

    def close(self) -> None:
        pass

    # -- each round trip, whole ----------------------------------------------------------

    def _state(self) -> LogState:
        """read_state.lua: the applied position, how many entries, the latest clocks and
        how long ago each was published (µs: since its update's id time)."""
        applied, count = self._part.applied or (FIRST, 0)
        latest = self._part.published.latest
        now_ms = self._store.now_ms()
        return LogState(
            applied,
            count,
            {t: u.clock_us for t, u in latest.items()},
            {t: (now_ms - u.id.ms) * 1000 for t, u in latest.items()},
        )

    def _applied(self) -> str:
        applied = self._part.applied
        return FIRST if applied is None else applied[0]

    def _upto(self, after: str, last: str, count: int) -> list[Entry]:
        """XRANGE (after, last], at most `count`."""
        ids = self._part.ids
        start = bisect.bisect_right(ids, position(after))
        end = bisect.bisect_right(ids, position(last))
        return _unpacked(self._part.entries[start : min(end, start + count)])

    def _append_ticks(self, fence: str, ticks: Mapping[str, int], after: str) -> str | None:
        """append_ticks.lua."""
        self._store.fence(self._index, fence)
        part = self._part
        proposed = position(after)
        deleted = part.deleted
        if any(deleted.get(topic, proposed) > proposed for topic in ticks):
            return None  # a topic deleted since the proposer's position: propose afresh
        for topic, clock in ticks.items():
            current = part.clocks.get(topic)
            if current is None or clock > current:
                part.clocks[topic] = clock
        logged = dict(ticks)
        return self._store.add_entry(part, lambda id, n: Entry(id, ticks=logged, n=n))

    def _forget(self, fence: str, after: str, clocks: Mapping[str, int]) -> list[str]:
        """forget_topics.lua."""
        self._store.fence(self._index, fence)
        part = self._part
        later = part.entries[bisect.bisect_right(part.ids, position(after)) :]
        if len(later) > FORGET_SCAN:
            return []
        touched: set[str] = set()
        for entry in later:
            if entry.topic is not None:
                touched.add(entry.topic)
            elif entry.ticks is not None:
                touched.update(entry.ticks)
            elif entry.deleted is not None:
                touched.add(entry.deleted)
        forgotten = [
            topic
            for topic, seen in clocks.items()
            if topic not in touched and part.clocks.get(topic) == seen
        ]
        for topic in forgotten:
            del part.clocks[topic]
            part.published.forget(topic)  # its next update starts it afresh
            part.checkpoints.pop(topic, None)
        if forgotten:
            self._store.add_entry(part, lambda id, n: Entry(id, forgotten=list(forgotten), n=n))
            part.forgotten += len(forgotten)
        return forgotten

    def _save_checkpoints(self, fence: str, checkpoints: Sequence[Checkpoint]) -> int:
        """save_checkpoints.lua: each kept unless one further on is."""
        self._store.fence(self._index, fence)
        saved = self._part.checkpoints
        written = 0
        for checkpoint in checkpoints:
            old = saved.get(checkpoint.topic)
            if old is None or checkpoint.position > old.position:
                saved[checkpoint.topic] = checkpoint
                written += 1
        return written

    def _checkpoints(self) -> list[Checkpoint]:
        saved = self._part.checkpoints
        return [saved[t] for t in sorted(saved)]

    def _announce(self, digest: str) -> None:
        self._part.rules = digest

    def _trim(self, before: str) -> None:
        """XTRIM MINID: the entries before `before` go."""
        part = self._part
        cut_at = position(before)
        cut = bisect.bisect_left(part.ids, cut_at)
        del part.entries[:cut], part.ids[:cut]
        # The aggregator trims behind what it published: none is left there but to be safe.
        unpublished = part.unpublished
        while unpublished and unpublished[0][0] < cut_at:
            part.message_bytes -= unpublished.popleft()[2]
        if part.deleted:
            oldest = part.ids[0] if part.ids else part.last_entry
            part.deleted = {t: at for t, at in part.deleted.items() if at >= oldest}
