"""Leases and the lease group in the memory store (`shared_log.Lease`, `shared_log.LeaseGroup`),
as `redis/lease.py` and `redis/lease_group.py` are on Redis: the same tenure rule
(`pushsvc.broker.tenure`), the same lease script (`Store.acquire`), the same round."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence

from pushsvc.broker.memory.store import Store
from pushsvc.broker.shared_log import Lease, Roster
from pushsvc.broker.tenure import Tenure
from pushsvc.core import partition_log
from pushsvc.core.partitions import Partition
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)


class MemoryLease(Tenure):
    """One process's hold on a partition's lease in the store."""

    def __init__(self, store: Store, shard: Partition, *, ttl_us: int) -> None:
        super().__init__(
            f"lease:{shard[0]}/{shard[1]}",
            ttl_ms=max(1, ttl_us // 1000),
            clock=store.clock,
            token=store.token,
        )
        self._store = store
        self.shard = shard

    def acquire(self, fresh: str) -> object:
        """The acquire script's reply (the caller sent it: `asking`)."""
        return self._store.acquire(self.shard[0], self.token, fresh, self._ttl_ms)

    def renew(self) -> bool:
        fresh = self.asking()
        try:
            reply = self._store.run("acquire", self.shard, lambda: self.acquire(fresh))
        except BrokerUnavailable as exc:
            return self.renewed(exc, fresh)
        return self.renewed(reply, fresh)

    def release(self) -> None:
        self.gave_up()
        with contextlib.suppress(BrokerUnavailable):  # it expires by itself anyway
            self._store.run(
                "release", self.shard, lambda: self._store.release(self.shard[0], self.token)
            )

    def close(self) -> None:
        pass


class MemoryLeaseGroup:
    """`shared_log.LeaseGroup` on a store, as `RedisLeaseGroup` on Redis: each round
    one atomic step (the membership, every lease held renewed, which leases are free), each
    lease's renewal failing on its own or the whole round failing, under their fates."""

    def __init__(self, store: Store, partitions: int, *, ttl_us: int, name: str) -> None:
        self._store = store
        self._name = name
        self.member = ""
        self._seen: tuple[str, ...] = ()
        self._rejoined_ms = 0
        self._shards = [(index, partitions) for index in range(partitions)]
        self._ttl_us = ttl_us
        self._ttl_ms = max(1, ttl_us // 1000)
        self._held: dict[Partition, MemoryLease] = {}

    def round(self) -> Roster:
        store = self._store
        now_ms = store.now_ms()
        if not self.member:
            # As on Redis: the join time first (fixed digits), so that ids sort by it.
            self.member = f"{now_ms:013d}:{self._name}"
            log.info("joining the aggregators as %s", self.member)  # one process: news to none
        held = list(self._held.values())
        fresh = [lease.asking() for lease in held]

        def trip() -> tuple[bool, tuple[str, ...], list[object], frozenset[Partition]]:
            added = store.join(self.member, self._ttl_ms)
            replies: list[object] = []
            for lease, token in zip(held, fresh, strict=True):
                try:
                    reply = store.run("renew", lease.shard, functools.partial(lease.acquire, token))
                except BrokerUnavailable as exc:
                    reply = exc  # an error reply in the pipeline: this lease's alone
                replies.append(reply)
            members = tuple(sorted(store.members))
            free = store.free(self._shards)
            return added, members, replies, free

        try:
            added, members, replies, free = store.run("round", None, trip)
        except BrokerUnavailable as exc:
            for lease, token in zip(held, fresh, strict=True):
                lease.renewed(exc, token)
            raise
        for lease, token, reply in zip(held, fresh, replies, strict=True):
            lease.renewed(reply, token)
        first = not self._seen
        if not first and added:
            self._rejoined_ms = now_ms + self._ttl_ms
        settled = first or (members == self._seen and now_ms >= self._rejoined_ms)
        self._seen = members
        return Roster(members, free, settled=settled)

    def take(self, shards: Sequence[Partition]) -> dict[Partition, Lease]:
        if not shards:
            return {}
        leases = [MemoryLease(self._store, shard, ttl_us=self._ttl_us) for shard in shards]
        for lease in leases:
            lease.one_of_many()
        fresh = [lease.asking() for lease in leases]

        def trip() -> list[object]:
            return [lease.acquire(token) for lease, token in zip(leases, fresh, strict=True)]

        replies = self._store.run("take", None, trip)
        taken: dict[Partition, Lease] = {}
        for shard, lease, token, reply in zip(shards, leases, fresh, replies, strict=True):
            if lease.renewed(reply, token):
                self._held[shard] = lease
                taken[shard] = lease
        return taken

    def release(self, lease: object) -> None:
        assert isinstance(lease, MemoryLease)
        for shard, held in list(self._held.items()):
            if held is lease:
                del self._held[shard]
        if lease.holding:
            partition_log.log.debug("gave up the lease %s", lease.key)
        lease.release()

    def leave(self) -> None:
        for lease in list(self._held.values()):
            self.release(lease)

        def leave() -> None:
            self._store.members.pop(self.member, None)

        self._store.run("leave", None, leave)

    def close(self) -> None:
        pass
