"""The time a live stream runs on (`pushsvc.deliver.live_stream`), injected so that tests drive
its heartbeats, its token's expiry and its paced updates without sleeping.

Three things, one object: the monotonic clock in integer microseconds (the hub's: a stream's
heartbeats count from the hub's writes to it too, so both must read the same clock), the
wall clock (epoch seconds, what a token's `exp` is in) and one-shot timers. `LOOP_CLOCK` is
the real one: `time`, and unreferenced timers of gevent's loop (a stream's timer never keeps
a process running).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from pushsvc.deliver.hub import monotonic_us
from pushsvc.gevent_private import loop_watcher


class Timer(Protocol):
    def close(self) -> None:
        """Cancel the timer if it has not fired, and free it."""


class StreamClock(Protocol):
    def monotonic_us(self) -> int: ...

    def wall(self) -> float:
        """Epoch seconds."""

    def call_later(self, delay_s: float, callback: Callable[[], None], /) -> Timer:
        """Call `callback` once, from the event loop, `delay_s` from now."""


class LoopClock:
    """The real clock, with gevent's loop for timers."""

    __slots__ = ()

    monotonic_us = staticmethod(monotonic_us)
    wall = staticmethod(time.time)

    def call_later(self, delay_s: float, callback: Callable[[], None], /) -> Timer:
        timer: Any = loop_watcher("timer", max(delay_s, 0.0))
        timer.start(callback)
        return timer  # type: ignore[no-any-return]


LOOP_CLOCK = LoopClock()
