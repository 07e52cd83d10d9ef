"""`resolution=auto&points=N`: which tiers answer which part of a range (pure).

Netdata's rule: the coarsest tier that still gives at least N/2 points over the range (within
what it keeps), so a chart gets between N/2 and about N points whatever the range. A tier's
newest bucket is not closed until the clock passes its end plus the lateness, so the chosen
tier leaves the most recent part of the range empty; the next finer tiers fill it, each up to
its own first open bucket, the finest to the end of the range.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushsvc.rules.tiers import SeriesTier

__all__ = ["Segment", "plan_segments"]

Segment = tuple[SeriesTier, int, int]
"""A tier and the part `[since_us, until_us)` of the range it answers."""


def plan_segments(
    tiers: Sequence[SeriesTier],
    since_us: int,
    until_us: int,
    clock_us: int | None,
    points: int,
    lateness_us: int,
) -> list[Segment]:
    """Contiguous segments covering `[since_us, until_us)` in time order, coarsest first;
    empty when there are no tiers or the range is empty. `clock_us`: the topic's (None: no
    data yet; the finest tier then answers it all)."""
    if not tiers or until_us <= since_us:
        return []
    finest_first = sorted(tiers, key=lambda t: t.resolution_us)
    if clock_us is None:
        return [(finest_first[0], since_us, until_us)]
    chosen = 0
    for index in range(len(finest_first) - 1, -1, -1):
        tier = finest_first[index]
        start = max(since_us, clock_us - tier.retention_us + 1)
        end = min(until_us, _first_open(tier, clock_us, lateness_us))
        if end > start and (end - start) // tier.resolution_us >= points / 2:
            chosen = index
            break
    segments: list[Segment] = []
    start = since_us
    for index in range(chosen, -1, -1):
        tier = finest_first[index]
        end = until_us if index == 0 else min(until_us, _first_open(tier, clock_us, lateness_us))
        if end > start:
            segments.append((tier, start, end))
            start = end
    return segments


def _first_open(tier: SeriesTier, clock_us: int, lateness_us: int) -> int:
    """The start of the tier's first bucket not closed at `clock_us`."""
    edge = clock_us - lateness_us
    return edge - edge % tier.resolution_us
