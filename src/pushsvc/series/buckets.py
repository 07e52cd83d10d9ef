"""`SeriesBuckets`: one topic's (or one group's) open buckets of every series tier.

The finest tier's open bucket keeps its events' values (an append per event: the only cost a
series adds to an event); when it closes it is sorted once for exact min, max and the
percentiles pandas' linear `quantile` gives, its sum, mean and var are read from the exact
integer sums of its values (`ExactSums`: each the exact value correctly rounded, whatever
order the values came in), and it is summarised into a `BucketSummary` (count, sum, mean and
M2 for the variance, min, max, a DDSketch of its values: `pushsvc.series.bucket_summary`).
Each coarser tier's open bucket is the merge of the next finer tier's closed buckets in it —
moments by Chan's parallel formulas, sketches bin by bin — so its count, sum, min and max are
exact, mean and var exact to rounding, and its percentiles within the sketch's 1 % relative
error (`pushsvc.stats.sketch`).

A bucket `[t, t + resolution)` is published (becomes a point) when the clock reaches
`t + resolution + lateness`, and kept until it reaches `t + resolution + grace`: no accepted
event can land in it after that (`pushsvc.core.lateness`). With the grace equal to the
lateness (a rule without a grace of its own) that is one moment, as it always was. With a
longer grace, a late event into a published bucket amends it (the finest tier holds the
published buckets' values), and the bucket's point is published again, a *correction* of one
revision more, when the clock passes the next whole second after the amendment
(`CORRECTION_STEP_US`: late events between are coalesced) or the bucket's grace ends, with
the coarser buckets over it. A late event into a bucket the clock passed while it had none
makes its first point then too. A coarser bucket's value is the merge of its finer buckets
past the grace (kept merged) then of its published finer buckets in ascending start, the
order they join that merge in, so that it is the same whichever way it is reached. A coarser
bucket is published at the same clock as its last finer bucket, right after it. Buckets
without events make no point. A published coarser bucket over the finest tier keeps what its
value merges, so that a correction is a merge per finer bucket, not a summary of each one's
values: one sketch of their values, made at its first publication (a late value is added to
it; a sketch's counts add up the same in any order, so the value is the same), and from its
first correction each finest bucket's *part* (its summary without a sketch, made again only
when a late event changes it).
A corrected finest bucket keeps its exact sums likewise, a late value added to them, so that
its next corrections read its moments without a pass over its values.

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
of count 0 (`pushsvc.rules.point`); an event with a value and a message counts in both. A
late message within the grace amends its published bucket's counts, as a late value does.

Rebuilding (`pushsvc.core.checkpoint`): `durable_state` holds the coarser tiers' merges
and the clock of the last close, not the finest tier's values, which the event log gives
back (it keeps them from the oldest bucket within the grace, `oldest_open_us`): `replayed`
puts an event of the log back into the finest tier unless its bucket had passed the grace
(and was merged) by then. With a grace beyond the lateness it also holds what is published
within the grace (each bucket's start and revision, the finest ones' amended flag) and when
the corrections are due, so that a rebuilt state publishes the same corrections, once.
Its version says what each bucket holds (`pushsvc.series.bucket_state`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pushsvc.rules.point import Point
from pushsvc.rules.tiers import SeriesTier
from pushsvc.series.bucket_state import read_form, write_form
from pushsvc.series.bucket_summary import (
    ACCURACY,
    BucketSummary,
    Messages,
    TagCounts,
    empty_top,
    finest,
    sketch_of,
)
from pushsvc.stats.distinct import DistinctSet
from pushsvc.stats.moments import ExactSums
from pushsvc.stats.sketch import Sketch
from pushsvc.stats.state_codec import StateReader, StateWriter

if TYPE_CHECKING:  # a series without `anomaly` never loads the detector
    from pushsvc.series.forecasting import BucketForecaster
    from pushsvc.series.scoring import BucketScorer

__all__ = ["ACCURACY", "CORRECTION_STEP_US", "SeriesBuckets"]

CORRECTION_STEP_US = 1_000_000
"""Amendments are published when the clock passes the next whole multiple of this after them
(or a bucket's grace ends): the late events of one such step into a bucket make one
correction of it."""
_NEVER = 2**63
Tags = Mapping[str, str] | None


class _Live:
    """A published bucket its grace still keeps: how many corrections it has had, and its
    summary while that is current (None: made again when asked for, as a late event beneath
    it or a restore leaves it); a finest bucket's is its part, without the sketch of its
    values (`finest`), which it holds anyway. A finest bucket keeps the exact sums of its
    values from its first correction on, a late value added to them, so that its next
    corrections read its moments without a pass over its values."""

    __slots__ = ("revision", "summary", "sums")

    def __init__(self, revision: int, summary: BucketSummary | None) -> None:
        self.revision = revision
        self.summary = summary
        self.sums: ExactSums | None = None


class SeriesBuckets:
    """Open buckets of `tiers` (finest first, each resolution a multiple of the previous,
    `pushsvc.rules.tiers`), published at the lateness `lateness_us` and kept, to be
    corrected, until `grace_us` (at least the lateness; None: the lateness, nothing to
    correct). Not greenlet-safe."""

    __slots__ = (
        "_below", "_closed_clock", "_coarse", "_correct_at", "_dirty", "_distinct", "_grace",
        "_held", "_held_messages", "_held_tags", "_labels", "_lateness", "_live",
        "_newest_start", "_newest_values", "_open", "_open_messages", "_open_tags",
        "_resolutions", "_tagged", "_top", "_waiting", "forecaster", "next_close_us", "scorer",
    )  # fmt: skip

    def __init__(
        self,
        tiers: Sequence[SeriesTier],
        lateness_us: int,
        distinct: Sequence[str] = (),
        top: Sequence[tuple[str, int]] = (),
        grace_us: int | None = None,
    ) -> None:
        if not tiers:
            raise ValueError("series buckets need at least one tier")
        self._resolutions = tuple(t.resolution_us for t in tiers)
        self._labels = tuple(t.resolution_label for t in tiers)
        self._lateness = lateness_us
        self._grace = lateness_us if grace_us is None else max(grace_us, lateness_us)
        self._open: dict[int, list[float]] = {}  # finest tier, unpublished: start -> values
        self._distinct = tuple(distinct)
        self._top = tuple(top)
        self._tagged = bool(self._distinct or self._top)
        # finest tier: start -> its counts of tag values (with `distinct` or `top` tags only)
        self._open_tags: dict[int, TagCounts] = {}
        # finest tier: start -> its messages by type
        self._open_messages: dict[int, Messages] = {}
        # Finest tier, published and within the grace: start -> values (and tag counts).
        self._held: dict[int, list[float]] = {}
        self._held_tags: dict[int, TagCounts] = {}
        self._held_messages: dict[int, Messages] = {}
        # Kept while it stays current, so that a late event costs its coarser buckets'
        # corrections a merge per finest bucket rather than a summary of each one's values:
        # the sketch of the values of the held finest buckets of each published bucket of
        # the second tier (by its start), made when it is first published, and each held
        # finest bucket's part (its `_Live` summary), made when it is first corrected.
        self._below: dict[int, Sketch] = {}
        # Each tier's published buckets within the grace (the finest's: those of `_held`).
        self._live: list[dict[int, _Live]] = [{} for _ in tiers]
        # Each coarser tier: start -> the merge of its finer buckets past the grace (all of
        # them once it is past the grace itself), and the starts of its unpublished buckets.
        self._coarse: list[dict[int, BucketSummary]] = [{} for _ in tiers[1:]]
        self._waiting: list[set[int]] = [set() for _ in tiers[1:]]
        self._dirty: set[int] = set()  # held finest buckets amended since last published
        self._correct_at = _NEVER  # the clock at which the amendments are published
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

    @property
    def grace_us(self) -> int:
        """How long after its end a bucket is kept to be corrected (at least the lateness)."""
        return self._grace

    def insert(
        self, ts_us: int, value: float, tags: Tags = None, clock_us: int | None = None
    ) -> None:
        """An accepted event (never one of a bucket past the grace: the lateness rule sees to
        it), at the topic's clock `clock_us` (None: the clock of the last `closed`). One of a
        published bucket amends it: its correction is due at the next whole
        `CORRECTION_STEP_US` of that clock, so the late events of one batch, which all come
        at one clock, make one correction."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        if start == self._newest_start:
            if self._tagged:
                self._count(start, tags)
            self._newest_values.append(value)
            return
        values = self._open.get(start)
        if values is None:
            held = self._held.get(start)
            if held is not None:
                self._amend(start, held, value, tags, clock_us)
                return
            values = self._open[start] = []
            closes = start + resolution + self._lateness
            if closes <= self._closed_clock:
                # Late into a bucket the clock passed while it had no event: its point goes
                # out with the corrections.
                closes = self._due(start + resolution, clock_us)
            if closes < self.next_close_us:
                self.next_close_us = closes
        if self._tagged:
            self._count(start, tags)
        if start > self._newest_start:
            self._newest_start, self._newest_values = start, values
        values.append(value)

    def message(self, ts_us: int, kind: str, clock_us: int | None = None) -> None:
        """An accepted message of type `kind` (with or without a value: its value, if any, is
        `insert`ed apart), counted in its finest bucket, which it opens if it has none; one
        of a published bucket within the grace amends it, as a late value does (`clock_us`
        as `insert`'s)."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        held = self._held.get(start)
        if held is not None and start not in self._open:
            amended = self._held_messages.setdefault(start, {})
            amended[kind] = amended.get(kind, 0) + 1
            self._stale(start)
            self._dirty.add(start)
            closes = self._due(start + resolution, clock_us)
            if closes < self.next_close_us:
                self.next_close_us = closes
            return
        counts = self._open_messages.get(start)
        if counts is None:
            counts = self._open_messages[start] = {}
            if start not in self._open:
                # A bucket of messages so far: no value, and tags counted from its values.
                self._open[start] = []
                if self._tagged:
                    self._count(start, None)
                closes = start + resolution + self._lateness
                if closes <= self._closed_clock:
                    # Late into a bucket the clock passed while it had no event: its point
                    # goes out with the corrections.
                    closes = self._due(start + resolution, clock_us)
                if closes < self.next_close_us:
                    self.next_close_us = closes
        counts[kind] = counts.get(kind, 0) + 1

    def message_replayed(self, ts_us: int, kind: str) -> None:
        """Rebuilding: `message` for a message of the log at or before the checkpoint (into its
        published bucket's counts when the checkpoint kept it so, dropped when its bucket had
        passed the grace by then, as `replayed` does with a value)."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        if start in self._held:
            counts = self._held_messages.setdefault(start, {})
            counts[kind] = counts.get(kind, 0) + 1
            self._stale(start)
        elif start + resolution + self._grace > self._closed_clock:
            correct_at = self._correct_at  # checkpointed, as in `replayed`
            self.message(ts_us, kind)
            self._correct_at = correct_at

    def _amend(
        self, start: int, held: list[float], value: float, tags: Tags, clock_us: int | None
    ) -> None:
        """A late event into a published bucket within the grace."""
        self._hold(start, held, value)
        if self._tagged:
            self._count_held(start, tags)
        self._dirty.add(start)
        closes = self._due(start + self._resolutions[0], clock_us)
        if closes < self.next_close_us:
            self.next_close_us = closes

    def _due(self, end: int, clock_us: int | None) -> int:
        """An amendment of the bucket ending at `end` made now, at `clock_us`: the corrections
        go out at the next whole `CORRECTION_STEP_US` of the clock, or at the end of its grace
        if sooner. The clock, not that of the last `closed`: idle ticks move the clock on
        without closing anything, and a step of that older clock, passed already, would
        publish the correction at once, with the first late event of a batch only."""
        closed = self._closed_clock if clock_us is None else max(clock_us, self._closed_clock)
        due = closed - closed % CORRECTION_STEP_US + CORRECTION_STEP_US
        if due < self._correct_at:
            self._correct_at = due
        return min(self._correct_at, end + self._grace)

    def _hold(self, start: int, held: list[float], value: float) -> None:
        """`value` into the held finest bucket `start`, and into what is kept of it."""
        held.append(value)
        sums = self._live[0][start].sums
        if sums is not None:
            sums.add(value)
        self._add_below(start, value)
        self._stale(start)

    def _add_below(self, start: int, value: float) -> None:
        """A value into the held finest bucket `start`: into its second-tier bucket's sketch
        of them, kept from the first (made from the bucket's summary while that is current:
        its sketch less that of its merge)."""
        if len(self._resolutions) < 2:
            return
        into = start - start % self._resolutions[1]
        below = self._below.get(into)
        if below is None:
            entry = self._live[1].get(into)
            if entry is None or entry.summary is None:
                return  # made from the values when next asked for
            below = self._below[into] = self._copy(entry.summary).sketch
            merged = self._coarse[0].get(into)
            if merged is not None:
                below.subtract(merged.sketch)
        below.add(value)

    def _stale(self, start: int) -> None:
        """The finest bucket `start` changed: its summary and its coarser buckets' are made
        again when next asked for."""
        entry = self._live[0].get(start)
        if entry is not None:
            entry.summary = None
        for index in range(1, len(self._resolutions)):
            resolution = self._resolutions[index]
            entry = self._live[index].get(start - start % resolution)
            if entry is not None:
                entry.summary = None

    def _count_held(self, start: int, tags: Tags) -> None:
        """`_count` for a published bucket within the grace."""
        counts = self._held_tags.get(start)
        if counts is None:
            counts = self._held_tags[start] = TagCounts(self._distinct, self._top)
        if tags:
            counts.add(tags)

    def _count(self, start: int, tags: Tags) -> None:
        counts = self._open_tags.get(start)
        if counts is None:
            counts = self._open_tags[start] = TagCounts(self._distinct, self._top)
        if tags:
            counts.add(tags)

    def replayed(self, ts_us: int, value: float, tags: Tags = None) -> None:
        """Rebuilding: an event of the log at or before the checkpoint this state was restored
        from; dropped when its bucket had passed the grace by then (the checkpoint holds its
        merge), into its published bucket's values when the checkpoint kept it so, else into
        its open bucket."""
        resolution = self._resolutions[0]
        start = ts_us - ts_us % resolution
        held = self._held.get(start)
        if held is not None:
            self._hold(start, held, value)
            if self._tagged:
                self._count_held(start, tags)
        elif start + resolution + self._grace > self._closed_clock:
            # When its amendments are due was checkpointed, made at the clock of each: one
            # replayed must not move it (this clock is the checkpoint's, not the event's).
            correct_at = self._correct_at
            self.insert(ts_us, value, tags)
            self._correct_at = correct_at

    def close(self, clock_us: int) -> list[tuple[str, Point]]:
        """`closed` without the revisions: (resolution label, point)."""
        return [(label, point) for label, point, _ in self.closed(clock_us)]

    def closed(self, clock_us: int) -> list[tuple[str, Point, int]]:
        """The buckets published at `clock_us`, as (resolution label, point, revision: 0 the
        first time, then one more for each correction): the finest tier's first, then each
        coarser tier's, each in ascending start."""
        correcting = clock_us >= self._correct_at
        # Each tier hands the next its buckets past the grace (`finals`, to merge) and those
        # it published or corrected now (`changed`, whose coarser buckets are so too).
        finals: list[tuple[int, BucketSummary]] = []
        changed: list[int] = []
        tier = self._publish_open(clock_us, correcting, finals, changed)
        if self._dirty:
            tier += self._correct_amended(clock_us, correcting, changed)
        if correcting and not self._dirty:
            self._correct_at = _NEVER
        if self._held:
            self._release_held(clock_us, finals)
        label = self._labels[0]
        tier.sort(key=_start)
        out = [(label, point, revision) for _, point, revision in tier]
        for index in range(1, len(self._resolutions)):
            tier, finals, changed = self._close_coarser(index, clock_us, finals, changed)
            label = self._labels[index]
            out += [(label, point, revision) for _, point, revision in tier]
        self._closed_clock = clock_us
        self.next_close_us = self._next_close()
        return self._scored(out, clock_us)

    def _publish_open(
        self,
        clock_us: int,
        correcting: bool,
        finals: list[tuple[int, BucketSummary]],
        changed: list[int],
    ) -> list[tuple[int, Point, int]]:
        """`closed`'s first publications of the finest tier: its open buckets the clock
        passed the lateness of (one late into a bucket the clock had passed goes out with the
        corrections). One past the grace too is summarised into `finals`; the others are held
        for the grace."""
        lateness, grace, before = self._lateness, self._grace, self._closed_clock
        resolution = self._resolutions[0]
        summarise = bool(self._coarse)
        tier: list[tuple[int, Point, int]] = []
        for start in sorted(s for s in self._open if s + resolution + lateness <= clock_us):
            end = start + resolution
            final = end + grace <= clock_us
            if not (correcting or final or end + lateness > before):
                continue  # late into a passed bucket: goes out with the corrections
            counts = self._open_tags.pop(start, None)
            values = self._open.pop(start)
            by_type = self._open_messages.pop(start, None)
            # (a bucket kept for the grace is summarised when it passes it, or when a
            # coarser bucket's value asks for its part)
            point, summary = finest(start, values, summarise and final, counts, by_type)
            tier.append((start, point, 0))
            changed.append(start)
            if start == self._newest_start:
                self._newest_start, self._newest_values = -_NEVER, []
            if final:
                if summary is not None:
                    finals.append((start, summary))
            else:
                self._held[start] = values
                if summarise:  # (a late event's first, into a published second-tier bucket)
                    below = self._below.get(start - start % self._resolutions[1])
                    if below is not None:
                        sketch_of(values, below)
                if counts is not None:
                    self._held_tags[start] = counts
                if by_type is not None:
                    self._held_messages[start] = by_type
                self._live[0][start] = _Live(0, None)  # its summary is made again when asked
        return tier

    def _correct_amended(
        self, clock_us: int, correcting: bool, changed: list[int]
    ) -> list[tuple[int, Point, int]]:
        """`closed`'s corrections of the finest tier: its amended buckets, when their
        corrections are due or their grace ends, each of one revision more."""
        resolution, grace, live = self._resolutions[0], self._grace, self._live[0]
        summarise = bool(self._coarse)
        tier: list[tuple[int, Point, int]] = []
        for start in sorted(
            s for s in self._dirty if correcting or s + resolution + grace <= clock_us
        ):
            self._dirty.discard(start)
            entry = live[start]
            entry.revision += 1
            counts = self._held_tags.get(start)
            by_type = self._held_messages.get(start)
            held = self._held[start]
            sums = entry.sums
            if sums is None:
                sums = entry.sums = ExactSums.of(held)
            point, part = finest(start, held, summarise, counts, by_type, sketch=False, sums=sums)
            entry.summary = part  # what its coarser buckets' corrections merge
            tier.append((start, point, entry.revision))
            changed.append(start)
        return tier

    def _release_held(self, clock_us: int, finals: list[tuple[int, BucketSummary]]) -> None:
        """The held finest buckets past the grace: let go of, summarised into `finals` for
        their coarser buckets' merges (which their values join, out of the kept sketch)."""
        resolution, grace, live = self._resolutions[0], self._grace, self._live[0]
        for start in sorted(s for s in self._held if s + resolution + grace <= clock_us):
            values = self._held.pop(start)
            counts = self._held_tags.pop(start, None)
            by_type = self._held_messages.pop(start, None)
            live.pop(start)
            if self._coarse:
                summary = finest(start, values, True, counts, by_type)[1]
                assert summary is not None
                finals.append((start, summary))
                below = self._below.get(start - start % self._resolutions[1])
                if below is not None:  # its values join its coarser bucket's merge
                    below.subtract(summary.sketch)

    def _close_coarser(
        self,
        index: int,
        clock_us: int,
        finer_finals: list[tuple[int, BucketSummary]],
        finer_changed: list[int],
    ) -> tuple[list[tuple[int, Point, int]], list[tuple[int, BucketSummary]], list[int]]:
        """`closed` for coarser tier `index`, given what the finer tier let go of past the
        grace (merged here) and published or corrected now (which amends or readies the
        buckets over it): this tier's points, and the same two lists for the next tier."""
        lateness, grace = self._lateness, self._grace
        resolution = self._resolutions[index]
        buckets, waiting, live = (
            self._coarse[index - 1],
            self._waiting[index - 1],
            self._live[index],
        )
        finer_finals.sort(key=_start)
        for start, summary in finer_finals:
            into = start - start % resolution
            bucket = buckets.get(into)
            if bucket is None:
                buckets[into] = summary
            else:
                bucket.merge(summary)
        amended: set[int] = set()
        for start in finer_changed:
            into = start - start % resolution
            if into in live:
                amended.add(into)
            else:
                waiting.add(into)
        tier: list[tuple[int, Point, int]] = []
        finals: list[tuple[int, BucketSummary]] = []
        changed: list[int] = []
        for start in sorted(s for s in waiting if s + resolution + lateness <= clock_us):
            waiting.discard(start)
            changed.append(start)
            if start + resolution + grace <= clock_us:  # every finer bucket is final
                summary = buckets.pop(start)
                finals.append((start, summary))
            else:
                # (what it merges of its finer buckets is kept once a correction needs it)
                summary = self._value(index, start, keep=False)
                live[start] = _Live(0, summary)
            tier.append((start, summary.point(start), 0))
        for start in sorted(amended):
            entry = live[start]
            entry.revision += 1
            entry.summary = summary = self._value(index, start)
            tier.append((start, summary.point(start), entry.revision))
            changed.append(start)
        if live:
            for start in sorted(s for s in live if s + resolution + grace <= clock_us):
                del live[start]
                if index == 1:
                    self._below.pop(start, None)
                finals.append((start, buckets.pop(start)))
        tier.sort(key=_start)
        return tier, finals, changed

    def _scored(
        self, out: list[tuple[str, Point, int]], clock_us: int
    ) -> list[tuple[str, Point, int]]:
        """`closed`'s points, scored (a rule's `anomaly`) and then learnt from (its
        `forecast`), each on its one tier's first publications."""
        scorer = self.scorer
        if scorer is not None:
            # In `out`'s order: a tier's points in ascending start, as the detector needs.
            # (A rule that scores is published at its grace: nothing of it is corrected.)
            scored = scorer.label
            out = [
                (label, scorer.score(p, clock_us) if label == scored and not r else p, r)
                for label, p, r in out
            ]
        forecaster = self.forecaster
        if forecaster is not None:
            for label, p, r in out:
                if label == forecaster.label and not r:
                    forecaster.learn(p)
        return out

    def _value(self, index: int, start: int, keep: bool = True) -> BucketSummary:
        """The summary of bucket `start` of coarser tier `index` as it stands: its merge of
        finer buckets past the grace, then each of its finer buckets within it, in ascending
        start (the order they join that merge in, so that the value is the same either way).
        Over the finest tier, each finer bucket's part without its sketch (kept, with `keep`),
        then the sketch of their values at once (a sketch's counts add up the same in any
        order), which is kept whatever `keep` says: it is what a correction needs most."""
        merged = self._coarse[index - 1].get(start)
        summary = None if merged is None else self._copy(merged)
        finer = self._resolutions[index - 1]
        live = self._live[index - 1]
        below = False
        for child in range(start, start + self._resolutions[index], finer):
            if child in live:
                below = True
                part = self._summary(index - 1, child, keep)
                if summary is None:
                    summary = self._copy(part)
                else:
                    summary.merge(part)
        assert summary is not None, "a published bucket has a published finer bucket"
        if index == 1 and below:
            summary.sketch.merge(self._sketch_below(start))
        return summary

    def _summary(self, index: int, start: int, keep: bool = True) -> BucketSummary:
        """The current summary of a published bucket within the grace (of the finest tier,
        its part: `finest` without `sketch`)."""
        entry = self._live[index][start]
        summary = entry.summary
        if summary is None:
            if index == 0:
                values, counts = self._held[start], self._held_tags.get(start)
                by_type = self._held_messages.get(start)
                summary = finest(
                    start, values, True, counts, by_type, sketch=False, sums=entry.sums
                )[1]
                assert summary is not None
                if not keep:
                    return summary
            else:
                summary = self._value(index, start)
            entry.summary = summary
        return summary

    def _sketch_below(self, start: int) -> Sketch:
        """The sketch of the values of the held finest buckets of the second-tier bucket
        `start`, kept from now on while it is published within the grace: made once, at its
        first publication, not again at its first correction."""
        below = self._below.get(start)
        if below is None:
            below = self._below[start] = Sketch(ACCURACY)
            held, finer = self._held, self._resolutions[0]
            for child in range(start, start + self._resolutions[1], finer):
                values = held.get(child)
                if values:
                    values.sort()
                    sketch_of(values, below)
        return below

    def _copy(self, summary: BucketSummary) -> BucketSummary:
        """A summary to merge into, leaving `summary` as it is: its sketch merged into an
        empty one, and its tag counts through their stored form."""
        if not self._tagged:
            sketch = Sketch(ACCURACY)
            sketch.merge(summary.sketch)
            return BucketSummary(
                summary.count, summary.total, summary.mean, summary.m2, summary.low,
                summary.high, sketch, messages=dict(summary.messages),
            )  # fmt: skip
        out = StateWriter()
        summary.write(out, True)
        source = StateReader(bytes(out))
        copied = BucketSummary.read(source, self._distinct, self._top, True, True)
        source.done()
        return copied

    def _next_close(self) -> int:
        lateness, grace, closed = self._lateness, self._grace, self._closed_clock
        resolution = self._resolutions[0]
        closes = [self._correct_at]
        for start in self._open:
            end = start + resolution
            closes.append(
                end + lateness if end + lateness > closed else min(self._correct_at, end + grace)
            )
        if self._held:
            closes.append(min(self._held) + resolution + grace)
        for index, waiting in enumerate(self._waiting, 1):
            resolution = self._resolutions[index]
            if waiting:
                closes.append(min(waiting) + resolution + lateness)
            if self._live[index]:
                closes.append(min(self._live[index]) + resolution + grace)
        return min(closes)

    @property
    def oldest_open_us(self) -> int | None:
        """The start of the oldest finest bucket that keeps its events (open, or published
        and within the grace): a rebuild needs the log's events from there on (None: none)."""
        starts = [*self._open, *self._held]
        return min(starts) if starts else None

    @property
    def corrections_due(self) -> bool:
        """Whether an amendment waits for its correction (the clock to reach it)."""
        return self._correct_at != _NEVER

    def __len__(self) -> int:
        """Buckets kept over every tier (open, or published and within the grace)."""
        coarse = sum(
            len(waiting | buckets.keys() | live.keys())
            for waiting, buckets, live in zip(
                self._waiting, self._coarse, self._live[1:], strict=True
            )
        )
        return len(self._open) + len(self._held) + coarse

    def durable_state(self) -> bytes:
        out = StateWriter()
        late = self._grace > self._lateness
        messages = any(b.messages for buckets in self._coarse for b in buckets.values())
        write_form(out, bool(self._distinct), bool(self._top), messages, late)
        out.sint(self._closed_clock)
        for buckets in self._coarse:
            out.uint(len(buckets))
            for start in sorted(buckets):
                out.sint(start)
                buckets[start].write(out, messages)
        if late:
            self._write_late(out)
        return bytes(out)

    def _write_late(self, out: StateWriter) -> None:
        """The state's late section: when the corrections are due, and what is published
        within the grace (each bucket's start and revision, the finest ones' amended flag)."""
        correct_at = self._correct_at
        out.uint(correct_at != _NEVER)
        if correct_at != _NEVER:
            out.sint(correct_at)
        for index, live in enumerate(self._live):
            out.uint(len(live))
            for start in sorted(live):
                out.sint(start)
                out.uint(live[start].revision)
                if not index:
                    out.uint(start in self._dirty)

    @classmethod
    def restored(
        cls,
        tiers: Sequence[SeriesTier],
        lateness_us: int,
        data: bytes,
        distinct: Sequence[str] = (),
        top: Sequence[tuple[str, int]] = (),
        grace_us: int | None = None,
    ) -> SeriesBuckets:
        """From `durable_state`, of the same tiers, distinct tags and top tags; the finest
        tier's buckets then come back through `replayed`."""
        series = cls(tiers, lateness_us, distinct, top, grace_us)
        source = StateReader(data)
        form = read_form(source, series._distinct, series._top)
        series._closed_clock = source.sint()
        for buckets in series._coarse:
            for _ in range(source.uint()):
                start = source.sint()
                bucket = BucketSummary.read(
                    source, form.distinct, form.top, form.sparse, form.messages
                )
                if not form.distinct and series._distinct:
                    bucket.distinct = tuple((tag, DistinctSet()) for tag in series._distinct)
                if not form.top and series._top:
                    bucket.top = empty_top(series._top)
                buckets[start] = bucket
        if form.late:
            series._read_late(source)
        source.done()
        series._rewait()
        series.next_close_us = series._next_close()
        return series

    def _read_late(self, source: StateReader) -> None:
        """The state's late section (`_write_late`) back."""
        if source.uint():
            self._correct_at = source.sint()
        for index, live in enumerate(self._live):
            for _ in range(source.uint()):
                start = source.sint()
                live[start] = _Live(source.uint(), None)
                if not index:
                    self._held[start] = []
                    if source.uint():
                        self._dirty.add(start)

    def _rewait(self) -> None:
        """Restored: each coarser tier's unpublished buckets, from the merges and the finer
        buckets published within the grace. A state kept without the late section (of a
        rule without a grace beyond the lateness, or from before corrections) has published
        nothing within a grace."""
        for index, waiting in enumerate(self._waiting, 1):
            resolution = self._resolutions[index]
            below = self._live[index - 1]
            waiting.update(self._coarse[index - 1])
            waiting.update(start - start % resolution for start in below)
            waiting.difference_update(self._live[index])


def _start(entry: tuple[int, Point, int] | tuple[int, BucketSummary]) -> int:
    return entry[0]
