"""How far one session got through a funnel: ClickHouse's `windowFunnel(window)` (pure).

The reference is ClickHouse's default mode: the step events are taken in time order (a
step earlier in the funnel first when two share a time); a first-step event starts a chain;
an event of step i extends the chain that reached step i-1 if it lies within `window` of
that chain's first-step event. A repeated step does not advance twice, other events in
between are allowed, and the answer is the deepest step any chain reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FunnelResult:
    """The deepest step reached (0: none) and, per reached step, µs since its chain began."""

    level: int
    since_first_us: tuple[int, ...]


NOT_STARTED = FunnelResult(0, ())


def window_funnel(steps: int, window_us: int, events: Iterable[tuple[int, int]]) -> FunnelResult:
    """The funnel of `(ts_us, step index)` events, in any order, with `steps` steps."""
    # chains[i]: (first-step time, time of step i) of the latest chain that reached step i.
    chains: list[tuple[int, int] | None] = [None] * steps
    for ts, index in sorted(events):
        if index == 0:
            chains[0] = (ts, ts)
            continue
        previous = chains[index - 1]
        if previous is not None and ts <= previous[0] + window_us:
            chains[index] = (previous[0], ts)
            if index + 1 == steps:
                break
    level = 0
    for index in range(steps, 0, -1):
        if chains[index - 1] is not None:
            level = index
            break
    since = tuple(end - start for start, end in (c for c in chains[:level] if c is not None))
    return FunnelResult(level, since)
