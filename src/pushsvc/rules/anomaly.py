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
from typing import Annotated, Any

from msgspec import Meta, Struct

from pushsvc.core.durations import duration_label
from pushsvc.rules.fields import Duration, wrong
from pushsvc.rules.tiers import SeriesTier, check_kept

__all__ = [
    "ANOMALY_STATS",
    "DEFAULT_LEARN_POINTS",
    "DEFAULT_THRESHOLD",
    "MIN_LEARN_POINTS",
    "AnomalyRule",
    "AnomalyTable",
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


class AnomalyTable(Struct, forbid_unknown_fields=True):
    """A rule's `anomaly` table as written; `parse_anomaly` reads it against the rule's tiers."""

    every: Duration
    stat: Annotated[
        str,
        Meta(pattern=f"^({'|'.join(ANOMALY_STATS)})$"),
        wrong(f"unknown stat {{value!r}}; known: {', '.join(ANOMALY_STATS)}"),
    ] = "mean"
    learn: Duration | None = None
    threshold: Annotated[
        float, Meta(gt=0.0, le=1.0), wrong("{value!r} is not a number in (0, 1]")
    ] = DEFAULT_THRESHOLD


def parse_anomaly(given: AnomalyTable, tiers: Sequence[SeriesTier]) -> AnomalyRule:
    """The `anomaly` field of a rule keeping `tiers`; ValueError saying what is wrong."""
    every_us = check_kept("every", given.every.us, tiers)
    learn_points = DEFAULT_LEARN_POINTS
    if given.learn is not None:
        learn_points = given.learn.us // every_us
        if learn_points < MIN_LEARN_POINTS:
            raise ValueError(
                f"learn = {duration_label(given.learn.us)!r} is shorter than {MIN_LEARN_POINTS} "
                f"buckets of {duration_label(every_us)}"
            )
    return AnomalyRule(every_us, given.stat, learn_points, given.threshold)
