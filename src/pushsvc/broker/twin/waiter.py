"""Waiting for new entries of many partitions in the memory twin (`shared_log.LogWaiter`)."""

from __future__ import annotations

from collections.abc import Mapping

from pushsvc.broker.shared_log import Entry
from pushsvc.broker.twin.store import Store
from pushsvc.core.partitions import Partition


class MemoryWaiter:
    """`shared_log.LogWaiter` on a twin's `Store`: one read over every partition, which
    answers at once (nothing arrives while it would block: the caller drives the clock)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def wait(
        self, after: Mapping[Partition, str], *, count: int, block_ms: int
    ) -> dict[Partition, list[Entry]]:
        if not after:
            return {}

        def read() -> dict[Partition, list[Entry]]:
            found = {}
            for shard, position in after.items():
                entries = self._store.read(shard[0], position, count)
                if entries:
                    found[shard] = entries
            return found

        return self._store.run("read", None, read)

    def close(self) -> None:
        pass
