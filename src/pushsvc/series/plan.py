"""`resolution=auto&points=N`: which tiers answer which part of a range (pure).

Netdata's rule. Among the tiers that still keep the start of the range, the coarsest that
gives at least N/2 points over it, else the finest of them: a chart gets between N/2 and
about N points where a tier allows, and never a tier that has already dropped the older part
of the range while another keeps it all (an hour at 270 points is sixty minutes, not the
last fifteen of the seconds). When no tier reaches back to the start, the one that reaches
furthest. A tier's newest bucket is not closed until the clock passes its end plus the
lateness, so the chosen tier leaves the most recent part of the range empty; the next finer
tiers fill it, each up to its own first open bucket, the finest to the end of the range.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushsvc.rules.tiers import SeriesTier

__all__ = ["Segment", "plan_segments", "reaches_back"]

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
    chosen = _choose(finest_first, since_us, until_us, clock_us, points, lateness_us)
    segments: list[Segment] = []
    start = since_us
    for index in range(chosen, -1, -1):
        tier = finest_first[index]
        end = until_us if index == 0 else min(until_us, _first_open(tier, clock_us, lateness_us))
        if end > start:
            segments.append((tier, start, end))
            start = end
    return segments


def reaches_back(tier: SeriesTier, since_us: int, clock_us: int) -> bool:
    """Whether the tier still keeps the range from `since_us` on: it keeps the buckets that
    start after `clock_us - retention`, and may lack part of the first one only (a range that
    starts exactly a retention before the clock, as a chart's "24 h" on a `1m:24h` tier
    does, or a moment earlier, since the page's clock lags the server's)."""
    return clock_us - tier.retention_us < since_us + tier.resolution_us


def _choose(
    finest_first: list[SeriesTier],
    since_us: int,
    until_us: int,
    clock_us: int,
    points: int,
    lateness_us: int,
) -> int:
    """The index (in `finest_first`) of the tier that answers the start of the range."""
    keeping = [i for i, tier in enumerate(finest_first) if reaches_back(tier, since_us, clock_us)]
    if not keeping:
        # None keeps the start: the one that keeps the most of the range (the finer on a tie).
        return max(
            range(len(finest_first)),
            key=lambda i: (finest_first[i].retention_us, -finest_first[i].resolution_us),
        )
    for index in reversed(keeping):
        tier = finest_first[index]
        end = min(until_us, _first_open(tier, clock_us, lateness_us))
        if end > since_us and (end - since_us) // tier.resolution_us >= points / 2:
            return index
    return keeping[0]


def _first_open(tier: SeriesTier, clock_us: int, lateness_us: int) -> int:
    """The start of the tier's first bucket not closed at `clock_us`."""
    edge = clock_us - lateness_us
    return edge - edge % tier.resolution_us
