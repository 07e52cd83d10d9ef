"""`SeriesBuckets`: one topic's (or one group's) open buckets of every series tier.

The finest tier's open bucket keeps its events' values (an append per event: the only cost a
series adds to an event); when it closes it is sorted once for exact count, sum, mean, min,
max, var and the percentiles pandas' linear `quantile` gives, and summarised into an
`_Aggregate` (count, sum, mean and M2 for the variance, min, max, a DDSketch of its values).
Each coarser tier's open bucket is the merge of the next finer tier's closed buckets in it —
moments by Chan's parallel formulas, sketches bin by bin — so its count, sum, min and max are
exact, mean and var exact to rounding, and its percentiles within the sketch's 1 % relative
error (`pushsvc.stats.sketch`).

A bucket `[t, t + resolution)` closes when the clock reaches `t + resolution + lateness`: no
accepted event can land in it after that (`pushsvc.core.lateness`). A coarser bucket
closes at the same clock as its last finer bucket, right after it. Buckets without events
make no point.

A rule's `distinct` tags are counted per bucket too: each finest bucket keeps a
`DistinctSet` per tag (exact up to 1,000 values, then a HyperLogLog, `pushsvc.stats.distinct`),
which coarser buckets merge (the union's count), and the point carries the counts.

Rebuilding (`pushsvc.core.checkpoint`): `durable_state` holds the coarser tiers' open
buckets and the clock of the last close, not the finest tier's values, which the event log
gives back: `replayed` puts an event of the log back into the finest tier unless its bucket
had closed (and was merged) by then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pushsvc.rules.point import Point
from pushsvc.rules.tiers import SeriesTier
from pushsvc.stats.distinct import DistinctSet
from pushsvc.stats.sketch import Sketch
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["ACCURACY", "SeriesBuckets"]

ACCURACY = 0.01
"""The coarser tiers' percentiles: relative error at most this (DDSketch)."""
_QS = (0.5, 0.9, 0.99)
_VERSION = 1
_VERSION_DISTINCT = 2
"""The state of buckets with distinct counts (version 1 has none)."""
_NEVER = 2**63
Tags = Mapping[str, str] | None


class _Aggregate:
    """A closed or coarser bucket's summary, mergeable."""

    __slots__ = ("count", "distinct", "high", "low", "m2", "mean", "sketch", "total")

    def __init__(
        self,
        count: int,
        total: float,
        mean: float,
        m2: float,
        low: float,
        high: float,
        sketch: Sketch,
        distinct: tuple[tuple[str, DistinctSet], ...] = (),
    ) -> None:
        self.count = count
        self.total = total
        self.mean = mean
        self.m2 = m2
        self.low = low
        self.high = high
        self.sketch = sketch
        self.distinct = distinct

    def merge(self, other: _Aggregate) -> None:
        n, m = self.count, other.count
        total = n + m
        delta = other.mean - self.mean
        self.mean += delta * m / total
        self.m2 += other.m2 + delta * delta * n * m / total
        self.count = total
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        self.sketch.merge(other.sketch)
        for (_, mine), (_, theirs) in zip(self.distinct, other.distinct, strict=True):
            mine.merge(theirs)

    def point(self, t_us: int) -> Point:
        n = self.count
        p50, p90, p99 = self.sketch.quantiles(_QS, lower=self.low, upper=self.high)
        var = max(self.m2, 0.0) / (n - 1) if n > 1 else None
        counts = tuple((tag, values.count()) for tag, values in self.distinct)
        return Point(
            t_us, n, self.total, self.total / n, self.low, self.high, var, p50, p90, p99, counts
        )

    def write(self, out: StateWriter) -> None:
        out.uint(self.count)
        for value in (self.total, self.mean, self.m2, self.low, self.high):
            out.double(value)
        self.sketch.write_bins(out)
        for _, values in self.distinct:
            values.write(out)

    @classmethod
    def read(cls, source: StateReader, tags: tuple[str, ...]) -> _Aggregate:
        count = source.uint()
        total, mean, m2, low, high = (source.double() for _ in range(5))
        sketch = Sketch(ACCURACY)
        sketch.read_bins(source)
        distinct = tuple((tag, DistinctSet.read(source)) for tag in tags)
        return cls(count, total, mean, m2, low, high, sketch, distinct)


def _finest(
    t_us: int,
    values: list[float],
    summarise: bool,
    distinct: tuple[tuple[str, DistinctSet], ...] = (),
) -> tuple[Point, _Aggregate | None]:
    """The exact point of a finest-tier bucket (and its distinct counts), and (`summarise`)
    its mergeable summary."""
    values.sort()
    n = len(values)
    total = math.fsum(values)
    mean = total / n
    var = None
    m2 = 0.0
    if n > 1:
        # Corrected two-pass: exact to a few ulps whatever the values' offset.
        deviations = [x - mean for x in values]
        m2 = math.fsum(d * d for d in deviations) - math.fsum(deviations) ** 2 / n
        var = max(m2, 0.0) / (n - 1)
    quantiles = []
    n1 = n - 1
    for q in _QS:  # pandas' linear interpolation, operation for operation (stats/order.py)
        pos = q * n1
        lo = int(pos)
        quantiles.append(
            values[lo] if lo == pos else values[lo] + (values[lo + 1] - values[lo]) * (pos - lo)
        )
    counts = tuple((tag, tag_values.count()) for tag, tag_values in distinct)
    p50, p90, p99 = quantiles
    point = Point(t_us, n, total, mean, values[0], values[-1], var, p50, p90, p99, counts)
    if not summarise:
        return point, None
    sketch = Sketch(ACCURACY)
    run_value, run = values[0], 0
    for value in values:  # sorted: equal values come in runs, one bin update each
        if value == run_value:
            run += 1
        else:
            sketch.add(run_value, run)
            run_value, run = value, 1
    sketch.add(run_value, run)
    return point, _Aggregate(n, total, mean, m2, values[0], values[-1], sketch, distinct)


class SeriesBuckets:
    """Open buckets of `tiers` (finest first, each resolution a multiple of the previous,
    `pushsvc.rules.tiers`) under the allowed lateness `lateness_us`. Not greenlet-safe."""

    __slots__ = (
        "_closed_clock", "_coarse", "_distinct", "_labels", "_lateness", "_newest_start",
        "_newest_values", "_open", "_open_distinct", "_resolutions", "next_close_us",
    )  # fmt: skip

    def __init__(
        self, tiers: Sequence[SeriesTier], lateness_us: int, distinct: Sequence[str] = ()
    ) -> None:
        if not tiers:
            raise ValueError("series buckets need at least one tier")
        self._resolutions = tuple(t.resolution_us for t in tiers)
        self._labels = tuple(t.resolution_label for t in tiers)
        self._lateness = lateness_us
        self._open: dict[int, list[float]] = {}  # finest tier: start -> values
        self._distinct = tuple(distinct)
        # finest tier: start -> a distinct count per tag (with `distinct` tags only)
        self._open_distinct: dict[int, tuple[tuple[str, DistinctSet], ...]] = {}
        self._coarse: list[dict[int, _Aggregate]] = [{} for _ in tiers[1:]]
        self._newest_start = -_NEVER
        self._newest_values: list[float] = []
        self._closed_clock = -_NEVER
        self.next_close_us = _NEVER
        """The clock at which the next bucket closes: `close` before it finds nothing."""

    def insert(self, ts_us: int, value: float, tags: Tags = None) -> None:
        """An accepted event (never one of a closed bucket: the lateness rule sees to it)."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        if self._distinct:
            self._count(start, tags)
        if start == self._newest_start:
            self._newest_values.append(value)
            return
        values = self._open.get(start)
        if values is None:
            values = self._open[start] = []
            closes = start + resolution + self._lateness
            if closes < self.next_close_us:
                self.next_close_us = closes
        if start > self._newest_start:
            self._newest_start, self._newest_values = start, values
        values.append(value)

    def _count(self, start: int, tags: Tags) -> None:
        counts = self._open_distinct.get(start)
        if counts is None:
            counts = self._open_distinct[start] = tuple(
                (tag, DistinctSet()) for tag in self._distinct
            )
        if tags:
            for tag, values in counts:
                value = tags.get(tag)
                if value is not None:
                    values.add(value)

    def replayed(self, ts_us: int, value: float, tags: Tags = None) -> None:
        """Rebuilding: an event of the log at or before the checkpoint this state was restored
        from; dropped when its bucket had closed by then (the checkpoint holds its merge)."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        if start + resolution + self._lateness > self._closed_clock:
            self.insert(ts_us, value, tags)

    def close(self, clock_us: int) -> list[tuple[str, Point]]:
        """The buckets closed at `clock_us`, as (resolution label, point): the finest tier's
        first, then each coarser tier's, each in ascending start."""
        lateness = self._lateness
        resolution = self._resolutions[0]
        out: list[tuple[str, Point]] = []
        closed: list[tuple[int, _Aggregate]] = []
        summarise = bool(self._coarse)
        label = self._labels[0]
        for start in sorted(s for s in self._open if s + resolution + lateness <= clock_us):
            counts = self._open_distinct.pop(start, ())
            point, summary = _finest(start, self._open.pop(start), summarise, counts)
            out.append((label, point))
            if summary is not None:
                closed.append((start, summary))
            if start == self._newest_start:
                self._newest_start, self._newest_values = -_NEVER, []
        for index, buckets in enumerate(self._coarse, 1):
            resolution, label = self._resolutions[index], self._labels[index]
            for start, summary in closed:
                into = start - start % resolution
                bucket = buckets.get(into)
                if bucket is None:
                    buckets[into] = summary
                else:
                    bucket.merge(summary)
            closed = []
            for start in sorted(s for s in buckets if s + resolution + lateness <= clock_us):
                summary = buckets.pop(start)
                out.append((label, summary.point(start)))
                closed.append((start, summary))
        self._closed_clock = clock_us
        self.next_close_us = self._next_close()
        return out

    def _next_close(self) -> int:
        closes = [s + self._resolutions[0] for s in self._open]
        for index, buckets in enumerate(self._coarse, 1):
            closes += [s + self._resolutions[index] for s in buckets]
        return min(closes) + self._lateness if closes else _NEVER

    @property
    def oldest_open_us(self) -> int | None:
        """The start of the oldest open finest bucket: a rebuild needs the log's events from
        there on (None: no open bucket keeps events)."""
        return min(self._open) if self._open else None

    def __len__(self) -> int:
        """Open buckets over every tier."""
        return len(self._open) + sum(len(buckets) for buckets in self._coarse)

    def durable_state(self) -> bytes:
        out = StateWriter()
        out.uint(_VERSION_DISTINCT if self._distinct else _VERSION)
        out.sint(self._closed_clock)
        for buckets in self._coarse:
            out.uint(len(buckets))
            for start in sorted(buckets):
                out.sint(start)
                buckets[start].write(out)
        return bytes(out)

    @classmethod
    def restored(
        cls,
        tiers: Sequence[SeriesTier],
        lateness_us: int,
        data: bytes,
        distinct: Sequence[str] = (),
    ) -> SeriesBuckets:
        """From `durable_state`, of the same tiers and distinct tags; the finest tier's buckets
        then come back through `replayed`."""
        series = cls(tiers, lateness_us, distinct)
        source = StateReader(data)
        version = source.uint()
        if version not in (_VERSION, _VERSION_DISTINCT) or (
            version == _VERSION_DISTINCT and not series._distinct
        ):
            raise ValueError(f"series state of version {version}, not of these buckets")
        # A state from before the rule counted distinct values: its open coarser buckets
        # count only the events from now on.
        saved = series._distinct if version == _VERSION_DISTINCT else ()
        series._closed_clock = source.sint()
        for buckets in series._coarse:
            for _ in range(source.uint()):
                start = source.sint()
                bucket = _Aggregate.read(source, saved)
                if not saved and series._distinct:
                    bucket.distinct = tuple((tag, DistinctSet()) for tag in series._distinct)
                buckets[start] = bucket
        source.done()
        series.next_close_us = series._next_close()
        return series
