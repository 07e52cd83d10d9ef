"""Waiting for new log entries of every partition a process holds, on one connection.

One aggregator process holds many partitions (`pushsvc.aggregate.partition_pool`). Waiting
on each partition's log with a blocking XREAD of its own would take a connection per
partition (`docs/journal/elastic-aggregators.md`); instead one XREAD names every held log:

    XREAD COUNT n BLOCK ms STREAMS log:a log:b ... <position a> <position b> ...

which answers as soon as any of them has an entry after its position, with the entries of
every one that has. On one Redis (or a Sentinel-managed primary) every log is on that node,
so this is all it takes. A Redis Cluster refuses a multi-key XREAD across slots (CROSSSLOT);
there the waiter will be woken per partition instead (an SPUBLISH beside each append, one
SSUBSCRIBE connection per primary, a safety poll every second: `docs/journal/log-wait.md`),
behind the same `LogWaiter` contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.log import _entry
from pushsvc.broker.redis.wire import unavailable
from pushsvc.broker.shared_log import Entry
from pushsvc.core.partitions import Partition


class StreamsWaiter:
    """`shared_log.LogWaiter` on one Redis node: one blocking XREAD over every log waited on,
    on a connection of its own. One greenlet uses it."""

    def __init__(self, url: str, keys: Keys, *, socket_timeout: float) -> None:
        self._keys = keys
        # The socket timeout must outlast the longest block asked for.
        self._socket_timeout = socket_timeout
        self._client = single_client(url, socket_timeout=socket_timeout)

    def wait(
        self, after: Mapping[Partition, str], *, count: int, block_ms: int
    ) -> dict[Partition, list[Entry]]:
        if not after:
            return {}
        block_ms = max(1, min(block_ms, int(self._socket_timeout * 1000) // 2))
        by_key = {self._keys.shard(shard).log: shard for shard in after}
        streams: dict[Any, Any] = {key: after[shard] for key, shard in by_key.items()}
        with unavailable("read"):
            reply: Any = self._client.xread(streams, count=count, block=block_ms)
        found: dict[Partition, list[Entry]] = {}
        for raw_key, entries in reply or ():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            found[by_key[key]] = [_entry(raw_id, fields) for raw_id, fields in entries]
        return found

    def close(self) -> None:
        self._client.close()
