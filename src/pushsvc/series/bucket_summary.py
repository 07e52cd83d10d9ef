"""What a series bucket is once it closes: its exact point, and its mergeable summary.

A finest bucket's values are sorted once when it closes (`finest`), for exact min, max and
the percentiles pandas' linear `quantile` gives; its sum, mean and var are read from the exact
integer sums of its values (`ExactSums`: each the exact value correctly rounded, whatever
order the values came in). Its summary, a `BucketSummary` (count, sum, mean and M2 for the
variance, min, max, a DDSketch of its values, its tag counts and message counts), is what the
coarser tiers merge: moments by Chan's parallel formulas, sketches bin by bin, so that a coarser
bucket's count, sum, min and max are exact, mean and var exact to rounding, and its percentiles
within the sketch's relative error `ACCURACY` (`pushsvc.stats.sketch`).

Apart from `pushsvc.series.buckets`, which decides when buckets close and are corrected: this
module holds only what one bucket is, with no clock and no tiers, and the summary's stored form
(`BucketSummary.write` and `read`), which the buckets' durable state is made of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pushsvc.rules.point import Point, TopList
from pushsvc.stats.distinct import DistinctSet
from pushsvc.stats.moments import ExactSums
from pushsvc.stats.sketch import Sketch
from pushsvc.stats.state_codec import StateReader, StateWriter
from pushsvc.stats.top import MergedTop, SpaceSaving, counters_for

__all__ = [
    "ACCURACY", "BucketSummary", "Distinct", "Messages",
    "TagCounts", "Top", "TopTags", "empty_top", "finest", "sketch_of",
]  # fmt: skip

ACCURACY = 0.01
"""The coarser tiers' percentiles: relative error at most this (DDSketch)."""
_QS = (0.5, 0.9, 0.99)

_NO_SKETCH = Sketch(ACCURACY)
_NO_MESSAGES: dict[str, int] = {}
"""The sketch and the message counts of a finest bucket's part (`finest` without `sketch`)
without messages: empty, shared, never added to (a part is only merged from, or copied)."""
TopTags = tuple[tuple[str, int], ...]
"""A rule's top tags: (tag, k)."""
Distinct = tuple[tuple[str, DistinctSet], ...]
Top = tuple[tuple[str, int, MergedTop], ...]
Messages = dict[str, int]
"""A bucket's messages: count by type."""


class TagCounts:
    """A finest open bucket's counts of tag values: a `DistinctSet` per distinct tag and a
    `SpaceSaving` summary of `counters_for(k)` counters per top tag."""

    __slots__ = ("distinct", "top")

    def __init__(self, distinct: tuple[str, ...], top: TopTags) -> None:
        self.distinct = tuple((tag, DistinctSet()) for tag in distinct)
        self.top = tuple((tag, k, SpaceSaving(counters_for(k))) for tag, k in top)

    def add(self, tags: Mapping[str, str]) -> None:
        for tag, values in self.distinct:
            value = tags.get(tag)
            if value is not None:
                values.add(value)
        for tag, _, summary in self.top:
            value = tags.get(tag)
            if value is not None:
                summary.add(value)

    def merged_top(self) -> Top:
        return tuple((tag, k, MergedTop.of(summary)) for tag, k, summary in self.top)


def empty_top(top: TopTags) -> Top:
    return tuple((tag, k, MergedTop(counters_for(k))) for tag, k in top)


def _listed(top: Top) -> tuple[TopList, ...]:
    return tuple(
        TopList(tag, tuple(summary.top(k)), None if summary.exact else summary.error)
        for tag, k, summary in top
    )


class BucketSummary:
    """A closed or coarser bucket's summary, mergeable."""

    __slots__ = (
        "count", "distinct", "high", "low", "m2", "mean", "messages", "sketch", "top", "total",
    )  # fmt: skip

    def __init__(
        self,
        count: int,
        total: float,
        mean: float,
        m2: float,
        low: float,
        high: float,
        sketch: Sketch,
        distinct: Distinct = (),
        top: Top = (),
        messages: Messages | None = None,
    ) -> None:
        self.count = count
        self.total = total
        self.mean = mean
        self.m2 = m2
        self.low = low
        self.high = high
        self.sketch = sketch
        self.distinct = distinct
        self.top = top
        self.messages: Messages = {} if messages is None else messages

    def merge(self, other: BucketSummary) -> None:
        n, m = self.count, other.count
        total = n + m
        if not n:  # a bucket of messages only (so far): the other's moments, as they are
            self.mean, self.m2 = other.mean, other.m2
        elif m:  # a bucket of messages only has no values to merge (nor moments: 0 / 0)
            delta = other.mean - self.mean
            self.mean += delta * m / total
            self.m2 += other.m2 + delta * delta * n * m / total
        self.count = total
        self.total += other.total
        if other.low < self.low:
            self.low = other.low
        if other.high > self.high:
            self.high = other.high
        if other.sketch is not _NO_SKETCH:  # (a part's: its values are merged apart)
            self.sketch.merge(other.sketch)
        if other.messages:
            mine_by_type = self.messages
            for kind, count in other.messages.items():
                mine_by_type[kind] = mine_by_type.get(kind, 0) + count
        if self.distinct:
            for (_, mine), (_, theirs) in zip(self.distinct, other.distinct, strict=True):
                mine.merge(theirs)
        if self.top:
            for (_, _, summary), (_, _, other_summary) in zip(self.top, other.top, strict=True):
                summary.merge(other_summary)

    def point(self, t_us: int) -> Point:
        n = self.count
        counts = tuple((tag, values.count()) for tag, values in self.distinct)
        lists, messages = _listed(self.top), _sorted(self.messages)
        if not n:
            return _without_values(t_us, counts, lists, messages)
        p50, p90, p99 = self.sketch.quantiles(_QS, lower=self.low, upper=self.high)
        var = max(self.m2, 0.0) / (n - 1) if n > 1 else None
        mean = self.total / n
        return Point(
            t_us, n, self.total, mean, self.low, self.high, var, p50, p90, p99, counts, lists,
            messages=messages,
        )  # fmt: skip

    def write(self, out: StateWriter, messages: bool = False) -> None:
        out.uint(self.count)
        for value in (self.total, self.mean, self.m2, self.low, self.high):
            out.double(value)
        self.sketch.write_bins(out)
        for _, values in self.distinct:
            values.write(out)
        for _, _, summary in self.top:
            summary.write(out)
        if messages:
            out.uint(len(self.messages))
            for kind, count in sorted(self.messages.items()):
                out.text(kind)
                out.uint(count)

    @classmethod
    def read(
        cls,
        source: StateReader,
        tags: tuple[str, ...],
        top: TopTags,
        sparse: bool,
        messages: bool = False,
    ) -> BucketSummary:
        count = source.uint()
        total, mean, m2, low, high = (source.double() for _ in range(5))
        sketch = Sketch(ACCURACY)
        sketch.read_bins(source)
        distinct = tuple((tag, DistinctSet.read(source, sparse)) for tag in tags)
        summaries = tuple((tag, k, MergedTop.read(source, counters_for(k))) for tag, k in top)
        by_type: Messages = {}
        if messages:
            for _ in range(source.uint()):
                kind = source.text()
                by_type[kind] = source.uint()
        return cls(count, total, mean, m2, low, high, sketch, distinct, summaries, by_type)


def _sorted(messages: Messages | None) -> tuple[tuple[str, int], ...]:
    """A bucket's message counts as a point carries them: by type."""
    return tuple(sorted(messages.items())) if messages else ()


def _without_values(
    t_us: int,
    distinct: tuple[tuple[str, int], ...],
    top: tuple[TopList, ...],
    messages: tuple[tuple[str, int], ...],
) -> Point:
    """The point of a bucket that held messages and no value: count 0, sum 0, no other
    statistic of values (`pushsvc.rules.point`)."""
    nan = math.nan
    return Point(t_us, 0, 0.0, nan, nan, nan, None, nan, nan, nan, distinct, top, None, False,
                 messages)  # fmt: skip


def finest(
    t_us: int,
    values: list[float],
    summarise: bool,
    tags: TagCounts | None = None,
    messages: Messages | None = None,
    sketch: bool = True,
    sums: ExactSums | None = None,
) -> tuple[Point, BucketSummary | None]:
    """The exact point of a finest-tier bucket (and its distinct counts, top values and
    message counts), and (`summarise`) its mergeable summary; without `sketch`, its *part*:
    the summary but for the sketch of its values (`_NO_SKETCH`), which a coarser bucket over
    published finest buckets keeps for all of them at once (`SeriesBuckets._sketch_below`).
    Its moments are read from the exact sums of its values (`sums`, if kept), so that they
    are the same whether a late value was added to those or they were made anew."""
    if not values:
        return _finest_without_values(t_us, summarise, tags, messages)
    values.sort()
    n = len(values)
    total, mean, m2, var = (ExactSums.of(values) if sums is None else sums).moments()
    quantiles = []
    n1 = n - 1
    for q in _QS:  # pandas' linear interpolation, operation for operation (stats/order.py)
        pos = q * n1
        lo = int(pos)
        quantiles.append(
            values[lo] if lo == pos else values[lo] + (values[lo + 1] - values[lo]) * (pos - lo)
        )
    distinct = tags.distinct if tags is not None else ()
    top = tags.merged_top() if tags is not None else ()
    counts = tuple((tag, tag_values.count()) for tag, tag_values in distinct)
    p50, p90, p99 = quantiles
    low, high = values[0], values[-1]
    by_type = _sorted(messages)
    point = Point(
        t_us, n, total, mean, low, high, var, p50, p90, p99, counts, _listed(top),
        messages=by_type,
    )  # fmt: skip
    if not summarise:
        return point, None
    if not sketch:
        part = BucketSummary(n, total, mean, m2, low, high, _NO_SKETCH, distinct, top,
                             messages or _NO_MESSAGES)  # fmt: skip
        return point, part
    of_values = Sketch(ACCURACY)
    sketch_of(values, of_values)
    return point, BucketSummary(n, total, mean, m2, low, high, of_values, distinct, top, messages)


def sketch_of(values: list[float], sketch: Sketch) -> None:
    """Add `values`, sorted, to `sketch`: equal values come in runs, one bin update each."""
    if not values:
        return
    run_value, run = values[0], 0
    for value in values:
        if value == run_value:
            run += 1
        else:
            sketch.add(run_value, run)
            run_value, run = value, 1
    sketch.add(run_value, run)


def _finest_without_values(
    t_us: int, summarise: bool, tags: TagCounts | None, messages: Messages | None
) -> tuple[Point, BucketSummary | None]:
    """`finest` of a bucket that held messages and no value."""
    distinct = tags.distinct if tags is not None else ()
    top = tags.merged_top() if tags is not None else ()
    counts = tuple((tag, tag_values.count()) for tag, tag_values in distinct)
    point = _without_values(t_us, counts, _listed(top), _sorted(messages))
    if not summarise:
        return point, None
    empty = Sketch(ACCURACY)
    return point, BucketSummary(
        0, 0.0, 0.0, 0.0, math.inf, -math.inf, empty, distinct, top, messages
    )
