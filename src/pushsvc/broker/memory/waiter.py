"""Waiting for new entries of many partitions in the memory store (`shared_log.LogWaiter`)."""

from __future__ import annotations

from collections.abc import Mapping

from pushsvc.broker.memory.log import read_entries
from pushsvc.broker.memory.store import Store
from pushsvc.broker.shared_log import Entry
from pushsvc.core.partitions import Partition


class MemoryWaiter:
    """`shared_log.LogWaiter` on a `Store`: one read over every partition. With nothing to
    read, it waits up to `block_ms` for an entry to be logged."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def wait(
        self, after: Mapping[Partition, str], *, count: int, block_ms: int
    ) -> dict[Partition, list[Entry]]:
        if not after:
            return {}
        store = self._store

        def read() -> dict[Partition, list[Entry]]:
            found = {}
            for shard, position in after.items():
                entries = read_entries(store.parts[shard[0]], position, count)
                if entries:
                    found[shard] = entries
            return found

        logged = store.logged
        logged.clear()  # nothing yields between this and the read: no entry is missed
        found = store.run("read", None, read)
        if found or block_ms <= 0:
            return found
        if logged.wait(block_ms / 1000):
            found = store.run("read", None, read)
        return found

    def close(self) -> None:
        pass
