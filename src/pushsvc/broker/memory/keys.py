"""Idempotency keys in the memory store, as `append_events.lua` keeps them on Redis: by (topic,
key), the digest of the request that logged a batch, how many events it logged, and when the
key expires; expired keys go as appends come, oldest first, so memory stays bounded by the
keys of one window."""

from __future__ import annotations

from collections import deque

from pushsvc.broker.base import Appended
from pushsvc.core.idempotency import Idempotency, key_reused


class RememberedKeys:
    """The keys remembered now (not locked: one greenlet step at a time drives the store)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], tuple[bytes, int, float]] = {}
        # Expiry order is insertion order while the window is the same for every key (it is
        # a setting); a key whose window differs is found expired on lookup all the same.
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def get(self, topic: str, idempotency: Idempotency, now: float) -> Appended | None:
        """The earlier answer (replayed) for a repeat; IdempotencyKeyReused for another body."""
        found = self._by_key.get((topic, idempotency.key))
        if found is None or found[2] <= now:
            return None
        digest, accepted, _ = found
        if digest != idempotency.digest:
            raise key_reused()
        return Appended(accepted, replayed=True)

    def remember(self, topic: str, idempotency: Idempotency, accepted: int, now: float) -> None:
        expires = now + idempotency.window_ms / 1000
        name = (topic, idempotency.key)
        self._by_key[name] = (idempotency.digest, accepted, expires)
        self._order.append((expires, name))

    def expire(self, now: float) -> None:
        order, by_key = self._order, self._by_key
        while order and order[0][0] <= now:
            _, name = order.popleft()
            found = by_key.get(name)
            if found is not None and found[2] <= now:
                del by_key[name]

    def __len__(self) -> int:
        return len(self._by_key)
