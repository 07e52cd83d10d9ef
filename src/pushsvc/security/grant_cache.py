"""Grants by credential, each until its expiry and never after, in a bounded cache (pure).

The least recently used entry goes first when it is full: a credential seen once (a scan, a
storm of made-up cookies) cannot push out the ones in use for long. An entry is dropped the
moment it is read past its expiry, so what is held is never older than the backend allowed.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final

from pushsvc.security.tokens import Grant


class Missing(enum.Enum):
    MISSING = enum.auto()


MISSING: Final = Missing.MISSING
"""What `get` answers for a credential with no live entry (None is a cached denial)."""


class GrantCache:
    """At most `max_entries` grants (or denials, None), by credential key."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[float, Grant | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Grant | Missing | None:
        """The live grant for `key` (None: a denial), else MISSING."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        expires_at, grant = entry
        if now >= expires_at:
            del self._entries[key]
            return MISSING
        self._entries.move_to_end(key)
        return grant

    def put(self, key: bytes, grant: Grant | None, expires_at: float) -> None:
        self._entries[key] = (expires_at, grant)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
