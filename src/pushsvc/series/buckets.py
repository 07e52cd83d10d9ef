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

A rule's `distinct` and `top` tags are counted per bucket too: each finest bucket keeps a
`DistinctSet` per distinct tag (exact up to 1,000 values, then a HyperLogLog, sparse then
dense, `pushsvc.stats.distinct`) and a `SpaceSaving` summary of m = max(1000, 20 k) counters per top
tag (exact up to m values), which coarser buckets merge (the union's count; `MergedTop`,
`pushsvc.stats.top`, whose every count stays within `[c, c + N/m]` over N tagged events, and
which monitors every value with `c > N/m`), and the point carries the counts and each top tag's
k most frequent values (with `"error"`, the merged floor, once a finer bucket replaced a value).

A topic's messages are counted by type per bucket too (the topic's own buckets: a group's
count none, as a group's windows do not): the finest bucket keeps a count per type, coarser
buckets add up those of the finer buckets in them, so every tier's counts are exact. The
counts are bounded as the windows' are (`pushsvc.stats.message_counts`): by the messages
themselves, a type each at most. A bucket that held messages and no value still makes a point,
of count 0 (`pushsvc.rules.point`); an event with a value and a message counts in both.

Rebuilding (`pushsvc.core.checkpoint`): `durable_state` holds the coarser tiers' open
buckets and the clock of the last close, not the finest tier's values, which the event log
gives back: `replayed` puts an event of the log back into the finest tier unless its bucket
had closed (and was merged) by then. Its version says what each bucket holds: 1 the
statistics, 2 also the distinct sets, 3 also the top summaries (after the distinct sets, if
the rule has both), 4 and 5 as 2 and 3 with distinct sets that may be sparse (written with
distinct tags: an older reader refuses them rather than misread a sparse set); 6 is one of
1, 3, 4 or 5 (the next number says which) with each bucket's message counts after the rest,
written only when an open coarser bucket holds messages (so a state without any reads where
this version is unknown); a state of an older version restores into buckets with more tags,
which then count those from the restore on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pushsvc.rules.point import Point, TopList
from pushsvc.rules.tiers import SeriesTier
from pushsvc.stats.distinct import DistinctSet
from pushsvc.stats.sketch import Sketch
from pushsvc.stats.state_codec import StateReader, StateWriter
from pushsvc.stats.top import MergedTop, SpaceSaving, counters_for

if TYPE_CHECKING:  # a series without `anomaly` never loads the detector
    from pushsvc.series.forecasting import BucketForecaster
    from pushsvc.series.scoring import BucketScorer

__all__ = ["ACCURACY", "SeriesBuckets"]

ACCURACY = 0.01
"""The coarser tiers' percentiles: relative error at most this (DDSketch)."""
_QS = (0.5, 0.9, 0.99)
_VERSION = 1
_VERSION_DISTINCT = 2
"""The state of buckets with distinct counts (version 1 has none)."""
_VERSION_TOP = 3
"""The state of buckets with top values (and the distinct counts the rule keeps, if any)."""
_VERSION_SPARSE_DISTINCT = 4
_VERSION_SPARSE_TOP = 5
"""As 2 and 3, with distinct sets that may be sparse (`DistinctSet`'s kind 2)."""
_VERSION_MESSAGES = 6
"""One of the versions above (the next number), each bucket followed by its message counts."""
_NEVER = 2**63
Tags = Mapping[str, str] | None
TopTags = tuple[tuple[str, int], ...]
"""A rule's top tags: (tag, k)."""
Distinct = tuple[tuple[str, DistinctSet], ...]
Top = tuple[tuple[str, int, MergedTop], ...]
Messages = dict[str, int]
"""A bucket's messages: count by type."""


class _TagCounts:
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


def _empty_top(top: TopTags) -> Top:
    return tuple((tag, k, MergedTop(counters_for(k))) for tag, k in top)


def _listed(top: Top) -> tuple[TopList, ...]:
    return tuple(
        TopList(tag, tuple(summary.top(k)), None if summary.exact else summary.error)
        for tag, k, summary in top
    )


class _Aggregate:
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

    def merge(self, other: _Aggregate) -> None:
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
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        self.sketch.merge(other.sketch)
        if other.messages:
            mine_by_type = self.messages
            for kind, count in other.messages.items():
                mine_by_type[kind] = mine_by_type.get(kind, 0) + count
        for (_, mine), (_, theirs) in zip(self.distinct, other.distinct, strict=True):
            mine.merge(theirs)
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
    ) -> _Aggregate:
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


def _finest(
    t_us: int,
    values: list[float],
    summarise: bool,
    tags: _TagCounts | None = None,
    messages: Messages | None = None,
) -> tuple[Point, _Aggregate | None]:
    """The exact point of a finest-tier bucket (and its distinct counts, top values and
    message counts), and (`summarise`) its mergeable summary."""
    if not values:
        return _finest_without_values(t_us, summarise, tags, messages)
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
    sketch = Sketch(ACCURACY)
    run_value, run = values[0], 0
    for value in values:  # sorted: equal values come in runs, one bin update each
        if value == run_value:
            run += 1
        else:
            sketch.add(run_value, run)
            run_value, run = value, 1
    sketch.add(run_value, run)
    return point, _Aggregate(n, total, mean, m2, low, high, sketch, distinct, top, messages)


def _finest_without_values(
    t_us: int, summarise: bool, tags: _TagCounts | None, messages: Messages | None
) -> tuple[Point, _Aggregate | None]:
    """`_finest` of a bucket that held messages and no value."""
    distinct = tags.distinct if tags is not None else ()
    top = tags.merged_top() if tags is not None else ()
    counts = tuple((tag, tag_values.count()) for tag, tag_values in distinct)
    point = _without_values(t_us, counts, _listed(top), _sorted(messages))
    if not summarise:
        return point, None
    empty = Sketch(ACCURACY)
    return point, _Aggregate(0, 0.0, 0.0, 0.0, math.inf, -math.inf, empty, distinct, top, messages)


class SeriesBuckets:
    """Open buckets of `tiers` (finest first, each resolution a multiple of the previous,
    `pushsvc.rules.tiers`) under the allowed lateness `lateness_us`. Not greenlet-safe."""

    __slots__ = (
        "_closed_clock", "_coarse", "_distinct", "_labels", "_lateness", "_newest_start",
        "_newest_values", "_open", "_open_messages", "_open_tags", "_resolutions", "_tagged",
        "_top",
        "forecaster", "next_close_us", "scorer",
    )  # fmt: skip

    def __init__(
        self,
        tiers: Sequence[SeriesTier],
        lateness_us: int,
        distinct: Sequence[str] = (),
        top: Sequence[tuple[str, int]] = (),
    ) -> None:
        if not tiers:
            raise ValueError("series buckets need at least one tier")
        self._resolutions = tuple(t.resolution_us for t in tiers)
        self._labels = tuple(t.resolution_label for t in tiers)
        self._lateness = lateness_us
        self._open: dict[int, list[float]] = {}  # finest tier: start -> values
        self._distinct = tuple(distinct)
        self._top = tuple(top)
        self._tagged = bool(self._distinct or self._top)
        # finest tier: start -> its counts of tag values (with `distinct` or `top` tags only)
        self._open_tags: dict[int, _TagCounts] = {}
        # finest tier: start -> its messages by type (the buckets that held a message only)
        self._open_messages: dict[int, Messages] = {}
        self._coarse: list[dict[int, _Aggregate]] = [{} for _ in tiers[1:]]
        self._newest_start = -_NEVER
        self._newest_values: list[float] = []
        self._closed_clock = -_NEVER
        self.next_close_us = _NEVER
        """The clock at which the next bucket closes: `close` before it finds nothing."""
        self.scorer: BucketScorer | None = None
        """Scores the points of one tier as they close (a rule's `anomaly`); its state is
        checkpointed apart from `durable_state` (`BucketScorer.to_bytes`)."""
        self.forecaster: BucketForecaster | None = None
        """Learns the points of one tier as they close (a rule's `forecast`), after they are
        scored; checkpointed apart too (`BucketForecaster.to_bytes`)."""

    def insert(self, ts_us: int, value: float, tags: Tags = None) -> None:
        """An accepted event (never one of a closed bucket: the lateness rule sees to it)."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        if self._tagged:
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

    def message(self, ts_us: int, kind: str) -> None:
        """An accepted message of type `kind` (with or without a value: its value, if any, is
        `insert`ed apart), counted in its finest bucket, which it opens if it has none."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        counts = self._open_messages.get(start)
        if counts is None:
            counts = self._open_messages[start] = {}
            if start not in self._open:
                # A bucket of messages so far: no value, and tags counted from its values.
                self._open[start] = []
                if self._tagged:
                    self._count(start, None)
                closes = start + resolution + self._lateness
                if closes < self.next_close_us:
                    self.next_close_us = closes
        counts[kind] = counts.get(kind, 0) + 1

    def message_replayed(self, ts_us: int, kind: str) -> None:
        """Rebuilding: `message` for a message of the log at or before the checkpoint (dropped
        when its bucket had closed by then, as `replayed` drops a value)."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        if start + resolution + self._lateness > self._closed_clock:
            self.message(ts_us, kind)

    def _count(self, start: int, tags: Tags) -> None:
        counts = self._open_tags.get(start)
        if counts is None:
            counts = self._open_tags[start] = _TagCounts(self._distinct, self._top)
        if tags:
            counts.add(tags)

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
            counts = self._open_tags.pop(start, None)
            by_type = self._open_messages.pop(start, None)
            point, summary = _finest(start, self._open.pop(start), summarise, counts, by_type)
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
        scorer = self.scorer
        if scorer is not None:
            # In `out`'s order: a tier's points in ascending start, as the detector needs.
            scored = scorer.label
            out = [(label, scorer.score(p, clock_us) if label == scored else p) for label, p in out]
        forecaster = self.forecaster
        if forecaster is not None:
            for label, p in out:
                if label == forecaster.label:
                    forecaster.learn(p)
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
        messages = any(b.messages for buckets in self._coarse for b in buckets.values())
        if messages:
            out.uint(_VERSION_MESSAGES)
        if self._top:
            out.uint(_VERSION_SPARSE_TOP if self._distinct else _VERSION_TOP)
        else:
            out.uint(_VERSION_SPARSE_DISTINCT if self._distinct else _VERSION)
        out.sint(self._closed_clock)
        for buckets in self._coarse:
            out.uint(len(buckets))
            for start in sorted(buckets):
                out.sint(start)
                buckets[start].write(out, messages)
        return bytes(out)

    @classmethod
    def restored(
        cls,
        tiers: Sequence[SeriesTier],
        lateness_us: int,
        data: bytes,
        distinct: Sequence[str] = (),
        top: Sequence[tuple[str, int]] = (),
    ) -> SeriesBuckets:
        """From `durable_state`, of the same tiers, distinct tags and top tags; the finest
        tier's buckets then come back through `replayed`."""
        series = cls(tiers, lateness_us, distinct, top)
        source = StateReader(data)
        version = source.uint()
        messages = version == _VERSION_MESSAGES
        if messages:
            version = source.uint()
            if version in (_VERSION_DISTINCT, _VERSION_MESSAGES):  # never written with counts
                raise ValueError(f"series state of version 6 over {version}, not of these buckets")
        with_distinct = (_VERSION_DISTINCT, _VERSION_SPARSE_DISTINCT)
        with_top = (_VERSION_TOP, _VERSION_SPARSE_TOP)
        if (
            version not in (_VERSION, *with_distinct, *with_top)
            or (version in with_distinct and not series._distinct)
            or (version in with_top and not series._top)
            or (version == _VERSION_SPARSE_TOP and not series._distinct)
        ):
            raise ValueError(f"series state of version {version}, not of these buckets")
        # A state from before the rule counted distinct (or top) values: its open coarser
        # buckets count only the events from now on.
        saved = series._distinct if version != _VERSION else ()
        saved_top = series._top if version in with_top else ()
        sparse = version in (_VERSION_SPARSE_DISTINCT, _VERSION_SPARSE_TOP)
        series._closed_clock = source.sint()
        for buckets in series._coarse:
            for _ in range(source.uint()):
                start = source.sint()
                bucket = _Aggregate.read(source, saved, saved_top, sparse, messages)
                if not saved and series._distinct:
                    bucket.distinct = tuple((tag, DistinctSet()) for tag in series._distinct)
                if not saved_top and series._top:
                    bucket.top = _empty_top(series._top)
                buckets[start] = bucket
        source.done()
        series.next_close_us = series._next_close()
        return series
