"""One aggregator process among the others: its membership and its partition leases, kept on
one connection (`pushsvc.broker.shared_log.LeaseGroup`).

Membership is the sorted set `{prefix}aggregators`: each process's id scored by when it
expires (ms), unless it renews it every ttl/3 like a lease. Scores are on Redis's clock, not
the host's: a round reads `TIME` and the next one estimates it from the monotonic clock in
between, so hosts whose clocks disagree still agree on who is live. A process that dies
drops out of the set within one ttl, as its leases lapse.

A member id starts with when the process joined (Redis's clock, ms, fixed digits), so the ids
sort in the order the processes joined: the shares give the partitions left over to the
oldest members, and a process that joins takes from the others without moving partitions
between them. A round is `settled` when it sees the members the last one saw (or is the
process's first), and not within one ttl of a round that had to add this process to the
members again: a process takes nothing from an unsettled round, so that after Redis lost the
membership (restarted empty) nobody takes the partitions of a process that has not re-joined
yet: it still holds their windows, which the log can no longer rebuild, and takes its leases
again at its next round. One round seeing the last one's members is not enough there: a
holder whose reads failed while Redis was away tries again every 0.5 s, and a process with
nothing to read rounds every ttl/3, so it can see itself alone twice before the holder is
back; within one ttl every live member has renewed. The price: a partition whose holder died
moves one round later (within a lease and two rounds), and one whose holder is gone when
Redis comes back empty a lease later.

Each round is one round trip: the membership (add ours, drop the expired, read the rest),
every lease held renewed (`lease_acquire.lua`, the same script a single lease runs), and
whether each partition's lease exists (who holds what is free to take). On one Redis it is
one pipeline; on a cluster one per node, sent together, so that a node that died fails the
renewals of its own partitions only (`node_batches.py`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.node_batches import Queued, by_node
from pushsvc.broker.redis.wire import unavailable
from pushsvc.broker.shared_log import Lease, Roster
from pushsvc.core import partition_log
from pushsvc.core.partitions import Partition
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)


def process_id() -> str:
    """This process: host, pid and a few random digits (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RedisLeaseGroup:
    """`shared_log.LeaseGroup` on Redis. Not greenlet-safe: one greenlet uses it."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        partitions: int,
        *,
        ttl_us: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process = process_id()
        self.member = ""
        """This process's id among the members, from its first round on."""
        self._seen: tuple[str, ...] = ()
        """The members the last round saw."""
        self._rejoined_ms = 0
        """Until when (Redis's clock, ms) rounds are unsettled: one ttl after a round had to
        add this process to the members again (Redis lost them, or it was away past its
        ttl), the time every live member has to renew its own."""
        self._keys = keys
        self._shards = [(index, partitions) for index in range(partitions)]
        self._ttl_us = ttl_us
        self._ttl_ms = max(1, ttl_us // 1000)
        self._clock = clock
        self._client = single_client(url, socket_timeout=2.0)
        self._held: dict[Partition, RedisLease] = {}
        self._learned = False
        """Whether the round under way learned of every renewal (its replies came back)."""
        self._server: tuple[float, float] | None = None
        """Redis's clock (ms) as last read, and our monotonic clock then."""

    @property
    def _on_cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    def _time_of_members_node(self) -> Any:
        """TIME of the node that keeps the members key (or its error)."""
        if not self._on_cluster:
            return self._client.time()
        cluster = cast(RedisCluster, self._client)
        node = cluster.get_node_from_key(self._keys.aggregators)  # type: ignore[no-untyped-call]
        try:
            return cluster.get_redis_connection(node).time()
        except redis.RedisError as exc:
            return exc

    def _server_ms(self) -> int:
        if self._server is None:
            now = self._time_of_members_node()
            if isinstance(now, redis.RedisError):
                raise now
            self._server = (_ms(now), self._clock())
        server_ms, at = self._server
        return int(server_ms + (self._clock() - at) * 1000)

    def round(self) -> Roster:
        self._learned = False
        try:
            return self._round()
        except BrokerUnavailable as exc:
            if not self._learned:
                # Nothing came back of any renewal (on one Redis a lost connection fails the
                # whole pipeline): each is a renewal that failed, its lease kept until its
                # confirmed expiry and lost then (`pushsvc.broker.tenure`), as a lone one is.
                for lease in self._held.values():
                    lease.renewed(exc, lease.token)
            raise

    def _round(self) -> Roster:
        key = self._keys.aggregators
        with unavailable("lease round"):
            now_ms = self._server_ms()
            if not self.member:
                self.member = f"{now_ms:013d}:{self._process}"
                log.info("joining the aggregators as %s", self.member)
            calls: list[Queued] = []
            if not self._on_cluster:
                calls.append((key, lambda pipe: pipe.time()))
            calls += [
                (key, lambda pipe: pipe.zadd(key, {self.member: now_ms + self._ttl_ms})),
                (key, lambda pipe: pipe.zremrangebyscore(key, "-inf", now_ms)),
                (key, lambda pipe: pipe.zrange(key, 0, -1)),
            ]
            renewals: list[tuple[RedisLease, list[str]]] = []
            for lease in self._held.values():
                fresh: list[str] = []
                renewals.append((lease, fresh))
                calls.append((lease.key, _renewal(lease, fresh)))
            for shard in self._shards:
                lease_key = self._keys.shard(shard).lease
                calls.append((lease_key, _exists(lease_key)))
            # One pipeline per node on a cluster: a dead node fails its own partitions'
            # renewals only, not every lease this process holds (`node_batches.py`).
            replies = by_node(self._client, calls)
            if self._on_cluster:
                # A cluster pipeline takes no TIME: the clock of the node that keeps the
                # members, so that every process scores them on one clock.
                replies.insert(0, self._time_of_members_node())
        # The leases are renewed whatever else failed (a full Redis refuses ZADD, never the
        # PEXPIRE of a lease held); without the time or the members the round has no roster.
        renewed = replies[4 : 4 + len(renewals)]
        for (lease, token), reply in zip(renewals, renewed, strict=True):
            lease.renewed(reply, token[0])
        self._learned = True
        for reply in (replies[0], replies[3], replies[1]):
            if isinstance(reply, redis.RedisError):
                with unavailable("lease round"):
                    raise reply
        self._server = (_ms(replies[0]), self._clock())
        first = not self._seen
        if not first and replies[1] == 1:  # ZADD added this member: it had been dropped
            self._rejoined_ms = now_ms + self._ttl_ms
        members = tuple(sorted(member.decode() for member in replies[3]))
        settled = first or (members == self._seen and now_ms >= self._rejoined_ms)
        self._seen = members
        exists = replies[4 + len(renewals) :]
        free = frozenset(s for s, there in zip(self._shards, exists, strict=True) if not there)
        return Roster(members, free, settled=settled)

    def take(self, shards: Sequence[Partition]) -> dict[Partition, Lease]:
        if not shards:
            return {}
        leases = [
            RedisLease(
                self._client, self._keys.shard(shard).lease, ttl_us=self._ttl_us, clock=self._clock
            )
            for shard in shards
        ]
        for lease in leases:
            lease.one_of_many()
        tokens: list[list[str]] = [[] for _ in leases]
        with unavailable("take leases"):
            calls = [
                (lease.key, _renewal(lease, token))
                for lease, token in zip(leases, tokens, strict=True)
            ]
            replies = by_node(self._client, calls)
        fresh = [token[0] for token in tokens]
        taken: dict[Partition, Lease] = {}
        for shard, lease, token, reply in zip(shards, leases, fresh, replies, strict=True):
            if lease.renewed(reply, token):
                self._held[shard] = taken[shard] = lease
        return taken

    def release(self, lease: object) -> None:
        assert isinstance(lease, RedisLease)
        for shard, held in list(self._held.items()):
            if held is lease:
                del self._held[shard]
        if lease.holding:
            partition_log.log.debug("gave up the lease %s", lease.key)
        lease.release()

    def leave(self) -> None:
        for lease in list(self._held.values()):
            self.release(lease)
        with unavailable("leave"):
            self._client.zrem(self._keys.aggregators, self.member)

    def close(self) -> None:
        self._client.close()


def _renewal(lease: RedisLease, token: list[str]) -> Callable[[Any], object]:
    """Queue `lease`'s renewal; the token a new tenure would take goes into `token`."""
    return lambda pipe: token.append(lease.renew_in(pipe))


def _exists(key: str) -> Callable[[Any], object]:
    return lambda pipe: pipe.exists(key)


def _ms(reply: Any) -> float:
    """Redis's TIME reply (seconds, microseconds) in ms."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) / 1000
