"""The clock a memory store runs on: injected, so a test or a simulation decides what time it
is (never a patch of `time`)."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds on a clock that never goes back (`time.monotonic`'s shape); what every part of the
core takes as its `clock`."""


class ManualClock:
    """A clock that moves only when told: `advance(s)`. Calling it reads it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self.now += seconds
