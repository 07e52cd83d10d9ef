"""A rule's `anomaly` field: which series tier's closed buckets are scored, on which statistic,
after how much history, flagged from which score (pure; checked once, at start).

    anomaly = { every = "1m", stat = "mean", learn = "6h", threshold = 0.5 }

`every` must be a tier the rule's series keep (its own `series`, else the server's); `stat`
is one of `ANOMALY_STATS` (`mean` unless given); `learn` is history before any flag, at least
`MIN_LEARN_POINTS` buckets of `every` (`DEFAULT_LEARN_POINTS` buckets unless given);
`threshold` is in (0, 1] (`DEFAULT_THRESHOLD` unless given). The scoring
itself is `pushsvc.series.scoring`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pushsvc.core.durations import duration_label
from pushsvc.rules.tiers import SeriesTier, field_table, kept_tier, positive_duration

__all__ = [
    "ANOMALY_STATS",
    "DEFAULT_LEARN_POINTS",
    "DEFAULT_THRESHOLD",
    "MIN_LEARN_POINTS",
    "AnomalyRule",
    "parse_anomaly",
]

ANOMALY_STATS = ("mean", "count", "sum", "min", "max", "p50", "p90", "p99", "rate")
"""The bucket statistics a rule may score (`rate`: the bucket's count per second)."""
DEFAULT_LEARN_POINTS = 288
"""`learn` when a rule does not say: 288 buckets (a day of 5-minute buckets, as NAB's)."""
MIN_LEARN_POINTS = 10
"""The shortest `learn`, in buckets: the detector's likelihood layer averages the last 10
raw scores, and a mean and variance of fewer points flag noise."""
DEFAULT_THRESHOLD = 0.5
"""`threshold` when a rule does not say: the detector's own default (`pushsvc.series.anomaly`,
which rules cannot import: it is a layer up), a tail probability of about 1e-5."""
_FIELDS = ("every", "stat", "learn", "threshold")


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    """Score each closed bucket of the tier of resolution `every_us` on `stat`; no flag before
    `learn_points` buckets; `anomalous` when the score is at least `threshold`."""

    every_us: int
    stat: str = "mean"
    learn_points: int = DEFAULT_LEARN_POINTS
    threshold: float = DEFAULT_THRESHOLD

    @property
    def every(self) -> str:
        """The tier's label, as points and streams name it (`1m`)."""
        return duration_label(self.every_us)

    def describe(self) -> dict[str, Any]:
        """As `GET /rules` gives it (and as the rules' digest covers)."""
        return {
            "every": self.every,
            "stat": self.stat,
            "learn": duration_label(self.learn_points * self.every_us),
            "learn_points": self.learn_points,
            "threshold": self.threshold,
        }


def parse_anomaly(given: object, tiers: Sequence[SeriesTier]) -> AnomalyRule:
    """The `anomaly` field of a rule keeping `tiers`; ValueError saying what is wrong."""
    given = field_table(given, "anomaly", '{ every = "1m", stat = "mean", learn = "6h" }', _FIELDS)
    every_us = kept_tier("every", given, tiers, "score")
    stat = given.get("stat", "mean")
    if stat not in ANOMALY_STATS:
        raise ValueError(f"unknown stat {stat!r}; known: {', '.join(ANOMALY_STATS)}")
    learn_points = DEFAULT_LEARN_POINTS
    if "learn" in given:
        learn_us = positive_duration("learn", given["learn"])
        learn_points = learn_us // every_us
        if learn_points < MIN_LEARN_POINTS:
            raise ValueError(
                f"learn = {duration_label(learn_us)!r} is shorter than {MIN_LEARN_POINTS} "
                f"buckets of {duration_label(every_us)}"
            )
    threshold = given.get("threshold", DEFAULT_THRESHOLD)
    if (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not 0.0 < threshold <= 1.0
    ):
        raise ValueError(f"threshold {threshold!r} is not a number in (0, 1]")
    return AnomalyRule(every_us, str(stat), learn_points, float(threshold))
