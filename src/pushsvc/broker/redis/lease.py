"""The shard lease: one active aggregator per shard, any number of hot standbys.

The holder of `{prefix}lease:{i}/{N}` renews it every ttl/3; when it dies, the key expires
and a standby takes it within one ttl. Holding the lease is what lets an aggregator append
ticks and publish updates, and the scripts that do so check the token themselves (fencing):
an aggregator that lost the lease without noticing (a long pause) is refused, never heard.

A renewal that fails says nothing about the lease: its holder keeps it until the last expiry
it had confirmed (`pushsvc.broker.tenure`, the rule the memory twin shares).

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
import secrets
import time
from collections.abc import Callable

import redis

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.tenure import CLOCK_MARGIN, Tenure

__all__ = ["CLOCK_MARGIN", "RedisLease"]


def _token() -> str:
    return secrets.token_hex(8)


class RedisLease(Tenure):
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
        super().__init__(key, ttl_ms=max(1, ttl_us // 1000), clock=clock, token=_token)
        self._taken_key = f"{key}:taken"
        self._owned = isinstance(url, str)
        self._client = single_client(url, socket_timeout=2.0) if isinstance(url, str) else url
        self._acquire = Script(self._client, "lease_acquire")
        self._release = Script(self._client, "lease_release")

    def renew(self) -> bool:
        """Renew our lease, or take a free one (after another's tenure: a new one, a new
        `token`); never one another aggregator holds."""
        fresh = self.asking()
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
        fresh = self.asking()
        self._acquire(keys=self._keys, args=[self.token, fresh, self._ttl_ms], client=pipe)
        return fresh

    def release(self) -> None:
        self.gave_up()
        with contextlib.suppress(redis.RedisError):  # it expires by itself anyway
            self._release(keys=[self.key], args=[self.token])

    def close(self) -> None:
        if self._owned:
            self._client.close()
