"""Grants by credential, each until its expiry and never after, in a cache bounded in count
and in bytes (pure): the auth backend's answers (`pushsvc.security.backend_auth`) and the
Mercure publishers' verified tokens (`pushsvc.http.api.mercure`).

The least recently used entry goes first when it is full: a credential seen once (a scan, a
storm of made-up cookies) cannot push out the ones in use for long. An entry is dropped the
moment it is read past its expiry, so what is held is never older than the backend allowed.

An entry's bytes are counted as the answer it was parsed from plus `ENTRY_BYTES` (its key,
its expiry and the objects around them): a bound the cache keeps whatever the backend
answers, not a measure of Python's objects to the byte.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final, Generic, TypeVar


class Missing(enum.Enum):
    MISSING = enum.auto()


MISSING: Final = Missing.MISSING
"""What `get` answers for a credential with no live entry (None is a cached denial)."""
ENTRY_BYTES = 512
"""What an entry is counted as besides its answer's bytes."""
MAX_BYTES = 64 << 20
"""The most a cache holds, counted so: 64 MiB (10,000 grants of 6 KiB each)."""


G = TypeVar("G")


class GrantCache(Generic[G]):
    """At most `max_entries` grants (or denials, None), by credential key, and at most
    `max_bytes` counted as `ENTRY_BYTES` plus each entry's size."""

    def __init__(self, max_entries: int, max_bytes: int = MAX_BYTES) -> None:
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[bytes, tuple[float, G | None, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """The bytes held, as counted."""
        return self._bytes

    def get(self, key: bytes, now: float) -> G | Missing | None:
        """The live grant for `key` (None: a denial), else MISSING."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        expires_at, grant, _ = entry
        if now >= expires_at:
            self._drop(key)
            return MISSING
        self._entries.move_to_end(key)
        return grant

    def put(self, key: bytes, grant: G | None, expires_at: float, size: int = 0) -> None:
        """Keep `grant` for `key` until `expires_at`; `size`: the bytes of the answer it was
        parsed from."""
        if key in self._entries:
            self._drop(key)
        cost = ENTRY_BYTES + size
        self._entries[key] = (expires_at, grant, cost)
        self._bytes += cost
        while len(self._entries) > self._max or (
            self._bytes > self._max_bytes and len(self._entries) > 1
        ):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        self._bytes -= self._entries.pop(key)[2]
