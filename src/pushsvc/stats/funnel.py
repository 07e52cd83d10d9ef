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
    """The funnel of `(ts_us, step index)` events, in any order, with `steps` steps. The
    timings are those of one chain, the first to reach the deepest step: a later chain that
    got less far must not lend an earlier step its times (cart 2 s after a second view, for
    a checkout reached 10 s after the first)."""
    # chains[i]: the step times of the latest chain that reached step i (its first-step
    # time first), each step at the first time the chain reached it.
    chains: list[tuple[int, ...] | None] = [None] * steps
    best: tuple[int, ...] = ()
    for ts, index in sorted(events):
        if index == 0:
            reached: tuple[int, ...] = (ts,)
        else:
            previous, current = chains[index - 1], chains[index]
            if previous is None or ts > previous[0] + window_us:
                continue
            if current is not None and current[0] == previous[0]:
                continue  # this chain reached the step already: its first time counts
            reached = (*previous, ts)
        chains[index] = reached
        if len(reached) > len(best):
            best = reached
            if len(best) == steps:
                break
    return FunnelResult(len(best), tuple(t - best[0] for t in best)) if best else NOT_STARTED
