"""Mercure's active subscriptions on Redis: every web process's, readable from any.

Each web process writes its subscriptions through (`write`, before their events are appended:
a listing that reads Redis after an event's id sees the change it announces) into one hash,
subscription path -> document, and names itself in a directory set; both expire `EXPIRY_US`
after the last refresh, as presence's entries do (`pushsvc.broker.redis.presence`, whose
process id and expiry this shares). A process that dies stops refreshing: its subscriptions
leave the listings within the expiry, with no `active: false` event (nothing is left to send
one). A clean stop removes its entries at once.

Keys (`pushsvc.broker.redis.keys`), in the first partition only, so that every read and write
touches one Redis Cluster slot: `P:msubs` (the directory) and `P:msubs:{proc}` (the hash).

Reads are bounded: one subscription is an HGET per listed process; a listing scans each
process's hash `SCAN_COUNT` fields at a time (a call's work bounded on Redis) and stops once
the caller's byte budget is spent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from pushsvc.broker.redis.connect import pooled_client
from pushsvc.broker.redis.keys import Keys, glob_escape
from pushsvc.broker.redis.presence import EXPIRY_US, process_id
from pushsvc.broker.redis.wire import unavailable
from pushsvc.core.presence import Stop
from pushsvc.core.subscription_registry import SubscriptionRegistry, Tracked
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

SCAN_COUNT = 500
"""Fields an HSCAN call reads at most (Redis's work per call)."""
_WRITE_CHUNK = 1000


class RedisSubscriptions:
    """Every web process's active Mercure subscriptions (see the module docstring)."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        registry: SubscriptionRegistry,
        *,
        expiry_us: int = EXPIRY_US,
        client: redis.Redis | None = None,
    ) -> None:
        self.registry = registry
        part = keys.partition(0)
        self.proc = process_id()
        self.directory = part.mercure_subscribers
        self.prefix = part.mercure_subscriptions("")
        self.mine = part.mercure_subscriptions(self.proc)
        self.expiry_ms = max(1, expiry_us // 1000)
        self.refresh_s = min(1.0, expiry_us / 3_000_000)
        self._client = client or pooled_client(url, max_connections=4, socket_timeout=5.0)
        self._whole = False
        """Write the registry whole at the next refresh (an entry expired, or a write failed)."""

    def write(self, added: Sequence[Tracked], removed: Sequence[str]) -> None:
        """This process's changes, through to Redis. BrokerUnavailable when Redis cannot be
        written (the next refresh writes the registry whole)."""
        try:
            with (
                unavailable("mercure subscriptions write"),
                self._client.pipeline(transaction=False) as pipe,
            ):
                if removed:
                    pipe.hdel(self.mine, *removed)
                for at in range(0, len(added), _WRITE_CHUNK):
                    chunk = added[at : at + _WRITE_CHUNK]
                    pipe.hset(self.mine, mapping={t.path: t.body for t in chunk})
                self._keep(pipe)
                pipe.execute()
        except BrokerUnavailable:
            self._whole = True
            raise

    def _keep(self, pipe: Any) -> None:
        pipe.pexpire(self.mine, self.expiry_ms)
        pipe.sadd(self.directory, self.proc)
        pipe.pexpire(self.directory, self.expiry_ms)

    def run(self, stop: Stop) -> None:
        """Refresh this process's entries every `refresh_s` until `stop`; then remove them."""
        try:
            while not stop.wait(self.refresh_s):
                try:
                    self.refresh()
                except BrokerUnavailable:
                    self._whole = True
                except Exception:
                    self._whole = True
                    log.exception("refreshing the Mercure subscriptions failed")
        finally:
            self.remove()

    def refresh(self) -> None:
        with unavailable("mercure subscriptions refresh"):
            if not self._whole:
                with self._client.pipeline(transaction=False) as pipe:
                    self._keep(pipe)  # its first command: the hash's PEXPIRE
                    kept = pipe.execute()[0]
                # Gone (expired while this process was held up, or Redis restarted empty)
                # while it has subscriptions: written whole again.
                self._whole = not kept and len(self.registry) > 0
            if self._whole:
                items = list(self.registry.items())
                with self._client.pipeline(transaction=False) as pipe:
                    pipe.delete(self.mine)
                    for at in range(0, len(items), _WRITE_CHUNK):
                        pipe.hset(self.mine, mapping=dict(items[at : at + _WRITE_CHUNK]))
                    self._keep(pipe)
                    pipe.execute()
                self._whole = False

    def remove(self) -> None:
        try:
            with (
                unavailable("mercure subscriptions removal"),
                self._client.pipeline(transaction=False) as pipe,
            ):
                pipe.delete(self.mine)
                pipe.srem(self.directory, self.proc)
                pipe.execute()
        except BrokerUnavailable:
            pass  # they expire

    def _procs(self) -> list[str]:
        members: Any = self._client.smembers(self.directory)
        return sorted(m.decode() for m in members)

    def get(self, path: str) -> bytes | None:
        with unavailable("mercure subscription read"):
            procs = self._procs()
            if not procs:
                return None
            with self._client.pipeline(transaction=False) as pipe:
                for proc in procs:
                    pipe.hget(self.prefix + proc, path)
                found: list[bytes | None] = pipe.execute()
        return next((body for body in found if body is not None), None)

    def bodies(self, collection: str | None) -> Iterator[bytes]:
        """The documents of one matcher's collection (None: every one), scanned as they are
        taken: a caller that stops reading stops the scan."""
        match = None if collection is None else glob_escape(collection + "/") + "*"
        with unavailable("mercure subscriptions read"):
            procs = self._procs()
        seen: set[bytes] = set()  # a scan may return a field twice (the hash rehashing)
        for proc in procs:
            cursor = 0
            while True:
                with unavailable("mercure subscriptions read"):
                    cursor, page = self._client.hscan(
                        self.prefix + proc, cursor, match=match, count=SCAN_COUNT
                    )
                found: dict[bytes, bytes] = page  # type: ignore[assignment]  # no decoding
                for path, body in found.items():
                    if path not in seen:
                        seen.add(path)
                        yield body
                if cursor == 0:
                    break

    def close(self) -> None:
        self._client.close()
