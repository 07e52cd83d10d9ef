"""Waiting for new log entries of many partitions on a Redis Cluster, woken per partition.

One XREAD cannot name logs of several slots on a cluster (CROSSSLOT), and a blocking XREAD per
partition would take a connection per partition. So each append on a cluster also sends an
empty `SPUBLISH` on its partition's wake channel (`P:wake`, in the partition's slot: it goes
to that node only), a process subscribes to the wake channels of the partitions it holds (one
sharded-pub/sub connection per primary, `ShardedPubSubReader`), and reads only the logs it was
woken for, all in one pipelined round (one per node). Pub/sub is at most once, so a safety
read of every held log runs every `safety_poll_s` too, and after the reader says it may have
missed wakes. The subscriptions follow the process's one view of the slot owners
(`cluster_view.py`), the one the reads are routed by, so a failover learnt by either moves
both at once: the safety read is a backstop, not what finds the new owner. Measured against
polling and a blocking read per partition: docs/journal/log-wait.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import redis

from pushsvc.broker.redis.cluster_topology import Address
from pushsvc.broker.redis.cluster_view import ClusterView
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.log import _entry
from pushsvc.broker.redis.node_batches import Queued, by_node, routed
from pushsvc.broker.redis.sharded_pubsub import ShardedPubSubReader
from pushsvc.broker.redis.wire import stream_entries, unavailable
from pushsvc.broker.shared_log import Entry
from pushsvc.core.partitions import Partition


class WakeWaiter:
    """`shared_log.LogWaiter` on a Redis Cluster. One greenlet uses it."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        seeds: ClusterView | Iterable[Address],
        *,
        name: str,
        safety_poll_s: float = 1.0,
        reader_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._safety_poll_s = safety_poll_s
        self._lock = threading.Lock()
        self._woken: set[int] = set()
        self._everything = True  # read every held log next: first, and after a reset
        self._wake = threading.Event()
        self._watched: set[int] = set()
        self._next_poll = 0.0
        self._more: set[Partition] = set()  # reads that came back full: there may be more
        self._partition_of = {part.wake_channel: part.index for part in keys}
        self._reader = ShardedPubSubReader(
            seeds,
            name=name,
            on_messages=self._on_messages,
            on_reset=self._on_reset,
            **(reader_options or {}),
        )

    def _on_messages(self, messages: list[tuple[bytes, bytes]]) -> None:
        with self._lock:
            for channel, _ in messages:
                index = self._partition_of.get(channel)
                if index is not None:
                    self._woken.add(index)
        self._wake.set()

    def _on_reset(self) -> None:
        with self._lock:
            self._everything = True
        self._wake.set()

    def wait(
        self, after: Mapping[Partition, str], *, count: int, block_ms: int
    ) -> dict[Partition, list[Entry]]:
        if not after:
            return {}
        fresh = self._watch({index for index, _ in after})
        due = self._due(after, fresh)
        if due:
            found = self._read({shard: after[shard] for shard in due}, count)
            if found:
                return found
        self._wake.wait(block_ms / 1000)
        due = self._due(after, ())
        return self._read({shard: after[shard] for shard in due}, count) if due else {}

    def _due(self, after: Mapping[Partition, str], fresh: Collection[int]) -> list[Partition]:
        """The held logs to read now: those woken, new to this waiter, read full last time,
        or every one when the safety read is due (or wakes may have been missed)."""
        self._wake.clear()  # before taking the wakes: one that comes later sets it again
        now = time.monotonic()
        with self._lock:
            woken, self._woken = self._woken, set()
            everything, self._everything = self._everything, False
        if everything or now >= self._next_poll:
            self._next_poll = now + self._safety_poll_s
            return list(after)
        return [s for s in after if s[0] in woken or s[0] in fresh or s in self._more]

    def _watch(self, indexes: set[int]) -> set[int]:
        """Hold the wake channels of exactly these partitions; the ones added."""
        added = indexes - self._watched
        for index in sorted(added):
            self._reader.add_channel(self._keys.partition(index).wake_channel)
            self._watched.add(index)
        for index in sorted(self._watched - indexes):
            self._reader.remove_channel(self._keys.partition(index).wake_channel)
            self._watched.discard(index)
        return added

    def _read(self, after: Mapping[Partition, str], count: int) -> dict[Partition, list[Entry]]:
        shards = list(after)
        calls = [_xread(self._keys.partition(s[0]).log, after[s], count) for s in shards]
        with unavailable("read"):
            # One pipeline per node: a dead node holds back its own partitions only.
            replies = by_node(self._client, calls)
        failed = [reply for reply in replies if isinstance(reply, redis.RedisError)]
        if len(failed) == len(replies):
            with unavailable("read"):
                raise failed[0]
        found: dict[Partition, list[Entry]] = {}
        for shard, reply in zip(shards, replies, strict=True):
            if isinstance(reply, redis.RedisError):
                continue  # read again at the next safety read, when its node may be back
            entries = [
                _entry(raw_id, fields)
                for _, items in reply or ()
                for raw_id, fields in stream_entries(items)
            ]
            if entries:
                found[shard] = entries
            if len(entries) >= count:
                self._more.add(shard)
            else:
                self._more.discard(shard)
        return found

    def close(self) -> None:
        self._reader.close()


def _xread(log: str, after: str, count: int) -> Queued:
    return log, lambda pipe: pipe.execute_command(
        "XREAD", "COUNT", count, "STREAMS", log, after, **routed(pipe, log)
    )
