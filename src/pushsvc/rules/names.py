"""The statistics a rule may name, and the bounds of the windows it may declare (pure).

The engine in `pushsvc.stats` computes these; the rules file and its checks only name them,
so the names live here, below both."""

from __future__ import annotations

__all__ = ["ALL_STATS", "MAX_COUNT_WINDOW", "QUANTILES", "STAT_KEYS", "SUB_BUCKETS"]

#: The quantiles kept, by statistic name.
QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
#: Statistic names of every window's summary, in output order.
STAT_KEYS: tuple[str, ...] = (
    "count", "sum", "mean", "min", "max", "var", "stddev", *(name for name, _ in QUANTILES),
)  # fmt: skip
#: ...and `rate` (events per second), which analytics rules may ask for by name.
ALL_STATS: tuple[str, ...] = (*STAT_KEYS, "rate")
#: The largest count window (`last = [N]`): each holds its N events.
MAX_COUNT_WINDOW = 100_000
#: Sub-buckets of a long window: its edge is rounded to 1/SUB_BUCKETS of its width.
SUB_BUCKETS = 60
