"""Redis must not evict, and may fill up: the check every process on Redis makes at start, and
the watch that keeps `/readyz` and `/metrics` honest while it runs.

At start a process refuses an evicting Redis (`UnsafeRedis`: the CLI prints its one line and
exits 1): with any `maxmemory-policy` but `noeviction`, Redis would drop acknowledged events,
history or leases silently. A Redis that will not say (CONFIG and INFO refused) gets a warning
and the process starts; one that cannot be reached is checked by the watch once it answers.

The watch looks again every `CHECK_EVERY_S`: an evicting policy, a full Redis
(at `maxmemory`: appends are refused with `503 broker_full`, the aggregator waits) or, with
`--redis-min-replicas N`, a primary with fewer than N replicas online (every append answered
`503 replicas_unconfirmed`: after a failover, until a replica rejoins the promoted primary)
makes the process not ready, with the reason and the fix; each change is logged once.
`/readyz` takes a look of its own on every request (`check`), so it answers what Redis does
now, not what it did up to `CHECK_EVERY_S` ago: a Redis that fills and frees within that time
would otherwise be missed.
"""

from __future__ import annotations

import logging

import gevent.event

from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.memory_policy import UNCHECKED, RedisMemory
from pushsvc.broker.redis.replication import replicas_problem
from pushsvc.broker.redis.url import redact_url
from pushsvc.errors import BrokerUnavailable, UnsafeRedis

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0
"""How often a process looks at Redis's memory and policy for `/metrics` and its log. Fixed,
not a setting: `/readyz` looks on every request, so nothing that decides readiness waits for
it, and one INFO and one CONFIG GET every 5 s per process is nothing to Redis."""


def check_at_start(broker: RedisBroker) -> None:
    """Raise UnsafeRedis when Redis evicts, is a Cluster node, or is a Cluster older than 7.0;
    warn when it will not say or cannot be reached."""
    try:
        if not broker.on_cluster and broker.is_cluster_node():
            # Its scripts touch keys of several slots, which a cluster refuses (CROSSSLOT) on
            # every write: refused here in one line rather than as a 503 on every POST.
            raise UnsafeRedis(
                f"{redact_url(broker.url)} is a Redis Cluster node: name the cluster's nodes "
                "with a redis+cluster://host:port[,host:port…] URL (docs/scaling.md)"
            )
        if broker.on_cluster:
            _check_cluster_version(broker)
        memory = broker.memory()
        broker.check_layout()  # LayoutMismatch: data of another partition count
    except BrokerUnavailable as exc:
        log.warning(
            "could not check Redis's maxmemory-policy at start (%s); checking while running",
            exc.message,
        )
        return
    problem = memory.eviction_problem()
    if problem is not None:
        raise UnsafeRedis(problem)
    if memory.policy is None:
        log.warning(UNCHECKED)


CLUSTER_VERSION = (7, 0)
"""The oldest Redis a Cluster may run: pushsvc's wake-ups there are sharded pub/sub
(`SSUBSCRIBE`, `SPUBLISH`), which Redis 7.0 brought."""


def _check_cluster_version(broker: RedisBroker) -> None:
    """Raise UnsafeRedis when a primary of the cluster runs a Redis older than 7.0: without
    sharded pub/sub every append would fail (500) and every stream reconnect in a loop."""
    oldest = broker.oldest_primary_version()
    if oldest is not None and oldest[0] < CLUSTER_VERSION:
        raise UnsafeRedis(
            f"{redact_url(broker.url)}: a Redis Cluster needs Redis 7.0 or later (sharded "
            f"pub/sub), and a primary of this one runs {oldest[1]}"
        )


class RedisGuard:
    """The last look at Redis's memory; `run` looks again every `interval_s`."""

    def __init__(self, broker: RedisBroker, *, interval_s: float = CHECK_EVERY_S) -> None:
        self._broker = broker
        self.interval_s = interval_s
        self.memory: RedisMemory | None = None
        """None until Redis answered once (or while it does not)."""
        self.replicas_online: int | None = None
        """With --redis-min-replicas: the fewest replicas online at a primary (None: unknown)."""
        self._reported: str | None = None

    def problem(self) -> tuple[str, str] | None:
        """(status, reason) when this process is not ready because of Redis: its memory, or
        too few replicas to confirm writes."""
        memory = self.memory
        if memory is None:
            return None
        evicting = memory.eviction_problem()
        if evicting is not None:
            return "redis_evicts", evicting
        full = memory.full_problem()
        if full is not None:
            return "redis_full", full
        if self.replicas_online is not None:
            unconfirmed = replicas_problem(self.replicas_online, self._broker.min_replicas)
            if unconfirmed is not None:
                return "replicas_unconfirmed", unconfirmed
        return None

    def check(self) -> None:
        try:
            self.memory = self._broker.memory()
            if self._broker.min_replicas:
                self.replicas_online = self._broker.replicas_online()
        except BrokerUnavailable:
            self.memory = None  # /readyz says so from its own broker call
            self.replicas_online = None
            return
        problem = self.problem()
        status = None if problem is None else problem[0]
        if status == self._reported:
            return
        if problem is not None:
            log.warning("%s; not ready until that changes", problem[1])
        else:
            log.warning("redis is fine again (%s cleared)", self._reported)
        self._reported = status

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set():
            try:
                self.check()
            except Exception:  # a failed look must not end the watch: readiness goes stale
                log.exception("could not read Redis's memory; looking again")
            stop.wait(self.interval_s)
