"""A latency histogram cheap enough for the fan-out path (pure).

prometheus_client's `Histogram.observe` takes a lock and walks its buckets per call; the hub
observes once per socket write, which at a few microseconds per delivery must cost well under
one. This keeps integer counts per bucket (a bisect and two additions), read by the metrics
collector at scrape time (`pushsvc.ops.metrics`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# 250 µs .. 10 s: a write is late by the time the writers take to go round every client.
DELIVERY_BUCKETS_US: tuple[int, ...] = (
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
)  # fmt: skip


class Histogram:
    """Counts of observations (µs) per upper bound; the last count is over every bound."""

    __slots__ = ("bounds_us", "counts", "sum_us")

    def __init__(self, bounds_us: Sequence[int] = DELIVERY_BUCKETS_US) -> None:
        self.bounds_us = tuple(bounds_us)
        self.counts = [0] * (len(self.bounds_us) + 1)
        self.sum_us = 0

    def observe(self, us: int, count: int = 1) -> None:
        """`count` observations of `us` each."""
        self.counts[bisect_left(self.bounds_us, us)] += count
        self.sum_us += us * count

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, observations at or below it), `+Inf` last."""
        out, total = [], 0
        for bound, count in zip((*self.bounds_us, None), self.counts, strict=True):
            total += count
            out.append((float("inf") if bound is None else bound / 1_000_000, total))
        return out
