"""A token bucket (pure; greenlet-safe: nothing here yields): `rate` tokens a second up to a
burst, taken one or many at a time, and allowed into debt, so that a caller charged after the
fact (a batch's events, connections already shed) is held to the same average rate."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Monotonic seconds."""


class TokenBucket:
    __slots__ = ("_at", "_clock", "burst", "rate", "tokens")

    def __init__(self, rate: float, *, burst: float | None = None, clock: Clock = time.monotonic):
        self.rate = rate
        self.burst = rate if burst is None else burst
        """A full bucket's tokens (a second's worth unless told)."""
        self._clock = clock
        self.tokens = self.burst
        self._at = clock()

    def refilled(self) -> float:
        """The tokens now (negative while in debt)."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        return self.tokens

    def charge(self, tokens: float) -> None:
        """Take `tokens`, into debt if there are not that many."""
        self.refilled()
        self.tokens -= tokens

    def wait_s(self) -> float:
        """Seconds until the bucket holds a whole token again (0 when it does)."""
        tokens = self.refilled()
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate
