"""One shard's event log in the memory store (`shared_log.EventLog`), as `redis/log.py` is
on Redis: each call one store operation, under its fate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pushsvc.broker.memory.store import Store
from pushsvc.broker.shared_log import Entry, LogState
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.partitions import Partition


class MemoryEventLog:
    """`shared_log.EventLog` on a `Store`. Reads never block (the aggregators wait for
    entries through a `MemoryWaiter`)."""

    def __init__(self, store: Store, shard: Partition) -> None:
        self._store = store
        self._shard = shard
        self._index = shard[0]

    @property
    def shard(self) -> Partition:
        return self._shard

    def state(self) -> LogState:
        applied, count, clocks, ages = self._store.run(
            "state", self._shard, lambda: self._store.state(self._index)
        )
        return LogState(applied, count, clocks, ages)

    def applied(self) -> str:
        return self._store.run("applied", self._shard, lambda: self._store.state(self._index)[0])

    def read(self, after: str, *, count: int, block_ms: int | None = None) -> list[Entry]:
        return self._store.run(
            "read", self._shard, lambda: self._store.read(self._index, after, count)
        )

    def upto(self, after: str, last: str, *, count: int) -> list[Entry]:
        return self._store.run(
            "upto", self._shard, lambda: self._store.upto(self._index, after, last, count)
        )

    def append_ticks(self, fence: str, ticks: Mapping[str, int], after: str) -> str | None:
        return self._store.run(
            "ticks",
            self._shard,
            lambda: self._store.append_ticks(self._index, fence, ticks, after),
        )

    def forget(self, fence: str, after: str, clocks: Mapping[str, int]) -> list[str]:
        return self._store.run(
            "forget", self._shard, lambda: self._store.forget(self._index, fence, after, clocks)
        )

    def save_checkpoints(self, fence: str, checkpoints: Sequence[Checkpoint]) -> int:
        return self._store.run(
            "save_checkpoints",
            self._shard,
            lambda: self._store.save_checkpoints(self._index, fence, checkpoints),
        )

    def checkpoints(self) -> list[Checkpoint]:
        saved = self._store.parts[self._index].checkpoints
        return self._store.run(
            "checkpoints", self._shard, lambda: [saved[t] for t in sorted(saved)]
        )

    def announce_rules(self, digest: str) -> None:
        def announce() -> None:
            self._store.parts[self._index].rules = digest

        self._store.run("announce_rules", self._shard, announce)

    def trim(self, before: str) -> None:
        self._store.run("trim", self._shard, lambda: self._store.trim(self._index, before))

    def close(self) -> None:
        pass
