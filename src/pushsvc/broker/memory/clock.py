"""The clock a memory store runs on: injected, so a test or a simulation decides what time it
is (never a patch of `time`)."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds on a clock that never goes back (`time.monotonic`'s shape); what every part of the
core takes as its `clock`."""
