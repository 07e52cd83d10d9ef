"""Idempotency keys in the memory store, as `append_events.lua` keeps them on Redis: one
partition's, by topic and key, the digest of the request that logged a batch, how many events
it logged, and when the key expires. Expired keys go as appends come, the soonest to expire
first; past `max_keys` the soonest to expire go early (counted), so memory stays bounded by
the bound's keys whatever their window."""

from __future__ import annotations

import heapq

from pushsvc.broker.base import Appended
from pushsvc.core.idempotency import MAX_KEYS_PER_PARTITION, Idempotency, key_reused


class RememberedKeys:
    """The keys remembered now (not locked: one greenlet step at a time drives the store)."""

    def __init__(self, max_keys: int = MAX_KEYS_PER_PARTITION) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.max_keys = max_keys
        # `topic/key` (a topic has no `/`, as in the Redis key's name): one string, not a tuple.
        self._by_key: dict[str, tuple[bytes, int, float]] = {}
        # Every remembered key once, by expiry: an append expires those due first, so a key
        # is remembered again only after its entry has left.
        self._expiry: list[tuple[float, str]] = []

    def get(self, topic: str, idempotency: Idempotency, now: float) -> Appended | None:
        """The earlier answer (replayed) for a repeat; IdempotencyKeyReused for another body."""
        found = self._by_key.get(f"{topic}/{idempotency.key}")
        if found is None or found[2] <= now:
            return None
        digest, accepted, _ = found
        if digest != idempotency.digest:
            raise key_reused()
        return Appended(accepted, replayed=True)

    def remember(self, topic: str, idempotency: Idempotency, accepted: int, now: float) -> int:
        """Remember the key of a batch just logged; how many other keys it made the partition
        forget before their window ended."""
        expires = now + idempotency.window_ms / 1000
        name = f"{topic}/{idempotency.key}"
        self._by_key[name] = (idempotency.digest, accepted, expires)
        heapq.heappush(self._expiry, (expires, name))
        evicted = 0
        while len(self._expiry) > self.max_keys:
            at, oldest = heapq.heappop(self._expiry)
            found = self._by_key.get(oldest)
            if found is not None and found[2] == at:
                del self._by_key[oldest]
                evicted += at > now
        return evicted

    def expire(self, now: float) -> None:
        expiry, by_key = self._expiry, self._by_key
        while expiry and expiry[0][0] <= now:
            at, name = heapq.heappop(expiry)
            found = by_key.get(name)
            if found is not None and found[2] == at:
                del by_key[name]

    def __len__(self) -> int:
        return len(self._by_key)
