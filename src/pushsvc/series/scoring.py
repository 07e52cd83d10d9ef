"""`BucketScorer`: one series' anomaly scores, as its buckets of one tier close (pure).

A rule's `anomaly` (`pushsvc.rules.anomaly`) names a tier (`every`) and a statistic. Each
point of that tier that a `SeriesBuckets` closes is scored by a `Detector`
(`pushsvc.series.anomaly`) on that statistic, in the order the buckets close (ascending start:
a tier's buckets close in order), from the points before it only; the point then carries
`anomaly` and `anomalous`. Points of other tiers pass unscored.

Determinism is what the delivery promise rests on: the score of a point depends only on the
rule and the statistic values of the series' points before it, so the aggregator that closes a
bucket after a failover or a cold restart gives it the score an uninterrupted run gave it,
provided it holds the same detector state. That state is part of the aggregator's checkpoint
(`to_bytes`, `restored`): 3,499 bytes per scored series with the defaults (at most 13,219),
and 9 bytes per scored bucket that closed within the rule's widest time window (`FlagWindow`,
for `anomaly_rate`).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import TYPE_CHECKING

from pushsvc.rules.anomaly import AnomalyRule
from pushsvc.rules.point import Point
from pushsvc.series.anomaly_rate import FlagWindow

if TYPE_CHECKING:
    from pushsvc.series.anomaly import Detector, Params

__all__ = ["BucketScorer", "stat_value"]

_VERSION = 1
_HEAD = struct.Struct("<BqII")  # version, every (us), length of the stat's name, flags kept
_FLAG = struct.Struct("<q?")  # a scored bucket's closing clock, and whether it was anomalous


def stat_value(point: Point, stat: str, every_us: int) -> float:
    """The statistic of `point` a rule scores (`rate`: count per second of the bucket)."""
    if stat == "rate":
        return point.count * 1_000_000 / every_us
    value = getattr(point, stat)
    assert isinstance(value, int | float)
    return float(value)


class BucketScorer:
    """Scores the closing points of the rule's tier, and keeps when each closed and whether it
    was anomalous for `keep_us` (the rule's widest time window: `anomaly_rate`). Not
    greenlet-safe (one aggregator)."""

    __slots__ = ("detector", "flags", "label", "rule")

    def __init__(self, rule: AnomalyRule, keep_us: int, detector: Detector | None = None) -> None:
        self.rule = rule
        self.label = rule.every
        """The resolution label of the tier scored (what `SeriesBuckets.close` names it)."""
        if detector is None:
            from pushsvc.series.anomaly import Detector

            detector = Detector(_params(rule))
        self.detector = detector
        self.flags = FlagWindow(keep_us)

    def score(self, point: Point, clock_us: int) -> Point:
        """`point`, closed at `clock_us`, with its score and flag; the detector learns from
        it. A point without values (a bucket of messages only) is left unscored, as a bucket
        without events (which makes no point) is: the detector sees the values' buckets."""
        if not point.count:
            return point
        rule = self.rule
        anomaly = self.detector.score(stat_value(point, rule.stat, rule.every_us))
        anomalous = anomaly >= rule.threshold
        self.flags.add(clock_us, anomalous)
        return dataclasses.replace(point, anomaly=anomaly, anomalous=anomalous)

    def to_bytes(self) -> bytes:
        """The state, for a checkpoint: what is scored (the tier and the statistic), the
        recent flags, then the detector's own state (its parameters included)."""
        stat = self.rule.stat.encode()
        flags = self.flags.entries()
        head = _HEAD.pack(_VERSION, self.rule.every_us, len(stat), len(flags))
        kept = b"".join(_FLAG.pack(clock, flag) for clock, flag in flags)
        return head + stat + kept + self.detector.to_bytes()

    @classmethod
    def restored(cls, rule: AnomalyRule, keep_us: int, data: bytes) -> BucketScorer:
        """From `to_bytes`. A state of another tier, statistic or detector parameters (the
        rules file changed between runs) scored another series: the scorer starts afresh,
        learning again, rather than judge these points by those."""
        if len(data) < _HEAD.size:
            return cls(rule, keep_us)
        version, every_us, length, count = _HEAD.unpack_from(data)
        at = _HEAD.size + length
        stat = data[_HEAD.size : at].decode()
        if version != _VERSION or every_us != rule.every_us or stat != rule.stat:
            return cls(rule, keep_us)
        from pushsvc.series.anomaly import Detector

        try:
            flags = [_FLAG.unpack_from(data, at + i * _FLAG.size) for i in range(count)]
            detector = Detector.from_bytes(data[at + count * _FLAG.size :])
        except (ValueError, struct.error):
            return cls(rule, keep_us)
        if detector.params != _params(rule):
            return cls(rule, keep_us)
        scorer = cls(rule, keep_us, detector)
        for clock, flag in flags:
            scorer.flags.add(clock, flag)
        return scorer


def _params(rule: AnomalyRule) -> Params:
    # Imported here, as the detector is: a process none of whose rules scores anything never
    # loads it (nor whatever it may come to need).
    from pushsvc.series.anomaly import Params

    return Params(learn=rule.learn_points, threshold=rule.threshold)
