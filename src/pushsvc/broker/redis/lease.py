"""The shard lease: one active aggregator per shard, any number of hot standbys.

The holder of `{prefix}lease:{i}/{N}` renews it every ttl/3; when it dies, the key expires
and a standby takes it within one ttl. Holding the lease is what lets an aggregator append
ticks and publish updates, and the scripts that do so check the token themselves (fencing):
an aggregator that lost the lease without noticing (a long pause) is refused, never heard.

A renewal that fails (a timeout, a lost connection, an error reply such as `BUSY` or
`LOADING`, a cluster node's pipeline) says nothing about the lease: Redis may well have renewed
it. So a holder keeps its lease until the last expiry it had confirmed (when its last
successful renewal was sent, plus the ttl, less a margin for the two clocks' rates), and only
then counts it lost. Giving a valid lease up on one transient error would hand its partition
over and rebuild its windows cold for nothing; keeping it is safe, since every write it makes is
fenced by its token anyway.

Each tenure has a token of its own, drawn when the lease is taken after another process's
tenure; `{key}:taken` keeps the token it was last taken under. A holder paused past its lease
may find it free again when it wakes. If nobody took it meanwhile, nothing was written under
another token, and it resumes its tenure. If a successor took it, wrote and died, taking it
again is a new tenure under a new token, and the holder learns so (`token` changed): it
catches up with what the successor wrote instead of going on from what it had, and a write
it prepared under the old token is refused.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import cast

import gevent.event
import redis

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.script_replies import LeaseCode
from pushsvc.broker.redis.scripts import Script

log = logging.getLogger(__name__)

CLOCK_MARGIN = 0.1
"""The share of the ttl a holder gives up before its confirmed expiry: its monotonic clock and
Redis's may run at slightly different rates, and Redis starts the ttl after the request left."""


class RedisLease:
    """A lease on Redis (a shard's, `pushsvc.broker.shared_log.Lease`, or the bridge's) as one
    process sees it; `holding` is what it last learned, `token` names its current (or last)
    tenure and changes when it takes the lease after another.

    Given a URL it has a connection of its own; given a client, it shares that one (the
    partition leases of one process, renewed together: `lease_group.py`), and `close` leaves
    it open."""

    def __init__(
        self,
        url: str | redis.Redis,
        key: str,
        *,
        ttl_us: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self._taken_key = f"{key}:taken"
        self.token = secrets.token_hex(8)
        self.holding = False
        self._failing: type[redis.RedisError] | None = None
        self._ttl_ms = max(1, ttl_us // 1000)
        self._clock = clock
        self._asked_at = 0.0
        """When the renewal whose reply `renewed` learns from was sent (our clock, s)."""
        self.confirmed_until = float("-inf")
        """Until when (our clock, s) the lease is ours for sure: the last successful renewal's
        sending time plus the ttl, less the margin."""
        self._owned = isinstance(url, str)
        self._client = single_client(url, socket_timeout=2.0) if isinstance(url, str) else url
        self._acquire = Script(self._client, "lease_acquire")
        self._release = Script(self._client, "lease_release")

    @property
    def ttl_s(self) -> float:
        return self._ttl_ms / 1000

    def renew(self) -> bool:
        """Renew our lease, or take a free one (after another's tenure: a new one, a new
        `token`); never one another aggregator holds."""
        fresh = secrets.token_hex(8)
        self._asked_at = self._clock()
        try:
            reply = self._acquire(keys=self._keys, args=[self.token, fresh, self._ttl_ms])
        except redis.RedisError as exc:
            return self.renewed(exc, fresh)
        return self.renewed(reply, fresh)

    @property
    def _keys(self) -> list[str]:
        return [self.key, self._taken_key]

    def renew_in(self, pipe: redis.client.Pipeline) -> str:
        """Queue the renewal on `pipe` (leases renewed together, one round trip); the token a
        new tenure would take, for `renewed` with the pipeline's reply."""
        fresh = secrets.token_hex(8)
        self._asked_at = self._clock()
        self._acquire(keys=self._keys, args=[self.token, fresh, self._ttl_ms], client=pipe)
        return fresh

    def renewed(self, reply: object, fresh: str) -> bool:
        """Learn from the acquire script's reply (or the error instead of it) whether we hold
        the lease; `fresh`: the token a new tenure takes."""
        if isinstance(reply, redis.RedisError):
            return self._unconfirmed(reply)
        code = LeaseCode(cast(int, reply))
        self._failing = None
        holding = code is not LeaseCode.HELD
        if holding:
            self.confirmed_until = self._asked_at + self.ttl_s * (1 - CLOCK_MARGIN)
        if code is LeaseCode.TAKEN:
            self.token = fresh
            if self.holding:
                log.warning("the lease %s lapsed and was held by another meanwhile", self.key)
        elif code is LeaseCode.RESUMED and self.holding:
            log.warning("the lease %s lapsed (a pause?); nobody took it meanwhile", self.key)
        if holding and not self.holding:
            # Every aggregator takes a share of the partitions' leases at start: routine.
            log.info("took the lease %s", self.key)
        elif self.holding and not holding:
            log.warning("lost the lease %s", self.key)
        self.holding = holding
        return holding

    def _unconfirmed(self, exc: redis.RedisError) -> bool:
        """A renewal failed: we hold the lease while its confirmed expiry is ahead."""
        holding = self.holding and self._clock() < self.confirmed_until
        # Once per kind of failure: a full Redis refuses to give a free lease out every ttl/3
        # until memory is freed.
        if type(exc) is not self._failing:
            if holding:
                left = self.confirmed_until - self._clock()
                log.warning("lease check failed: %s (the lease is ours for %.1f s more)", exc, left)
            else:
                log.warning("lease check failed: %s", exc)
        self._failing = type(exc)
        if self.holding and not holding:
            # Worded as every other change of hands ends, with the key (tests and operators
            # match " the lease <key>" at the end of the line).
            log.warning("no renewal confirmed before it expired: lost the lease %s", self.key)
        self.holding = holding
        return holding

    def keep(self, stop: gevent.event.Event) -> None:
        """Renew every ttl/3 until `stop` is set; then give the lease up."""
        try:
            while not stop.is_set():
                self.renew()
                stop.wait(self._ttl_ms / 3000)
        finally:
            self.release()

    def release(self) -> None:
        self.holding = False
        self.confirmed_until = float("-inf")
        with contextlib.suppress(redis.RedisError):  # it expires by itself anyway
            self._release(keys=[self.key], args=[self.token])

    def close(self) -> None:
        if self._owned:
            self._client.close()
