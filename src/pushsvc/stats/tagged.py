"""A rule's statistics of tag values: ``distinct_<tag>`` and ``top_<tag>`` in every window.

What they are is in docs/design.md ("Distinct counts and top values"); how each is kept:

* ``ExactTags`` for exact time windows (up to ``exact_percentiles_up_to``): they hold their
  events anyway, so each holds its tagged events' values (time order, ties in arrival order,
  as the window's own statistics do) and counts both statistics exactly over them, at any
  number of values: a distinct count is a dict value -> count in the window (+1 in, -1 out,
  the count is its length), top values a ``top.RankedCounts``. Memory: one entry per
  different value held, bounded by the events the window holds.
* ``TimeTags`` for long windows: the distinct count is a ``SlidingDistinct``
  (``distinct.py``: exact up to 1,000 values, then a sliding HyperLogLog, sparse then
  dense, that adding never lowers) keyed by
  sub-bucket, so its edge is the long window's (rounded out to a sub-bucket); top values are
  kept in Space-Saving sub-buckets (``top.BucketedTop``); nothing there grows with the rate.
* ``CountTags`` for count windows: the last N events are held anyway (``CountWindows``), so
  both statistics are exact over them, at most N values per window.

Events lacking the tag are not counted (a count window still counts them among its N
events). Each window reports ``distinct_<tag>`` (an integer) and ``top_<tag>`` (a list of
``{"value", "count"}``, plus ``"error"`` when the list comes from Space-Saving) after its
other statistics, distinct tags then top tags in the rule's order: ``fill`` writes them into
the windows' dicts of the update being built (no dict of its own per event).

A top list goes into the update already encoded (an ``orjson.Fragment``, spliced into the
body as it is): every update carries every window's list, which most events leave as it was,
so it is encoded when it changes, not once per event. A Space-Saving list's ``error`` (the
sum of the window's sub-buckets' floors, ``top.BucketedTop.error``) changes only with the
ranking, so the same holds for it.
Updates are the only readers of a window's top list (alerts cannot name one).

Not thread- or greenlet-safe: one owner calls it; nothing yields.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from pushsvc.rules.names import SUB_BUCKETS
from pushsvc.stats.distinct import SlidingDistinct
from pushsvc.stats.layout import NO_CLOCK
from pushsvc.stats.state_codec import StateReader, StateWriter
from pushsvc.stats.top import BucketedTop, Ranked, RankedCounts, counters_for

__all__ = ["CountTags", "ExactTags", "TagSpec", "TimeTags"]

Tags = Mapping[str, str] | None
TagValue = int | orjson.Fragment
Windows = dict[str, dict[str, object]]
"""An update's windows by label, each its statistics by name (what ``fill`` writes into)."""

_VERSION = 1
_COMPACT_MIN = 1024


@dataclass(frozen=True, slots=True)
class TagSpec:
    """The tag statistics a rule asks for: tags to count distinct values of, and (tag, k)
    pairs to list the top k values of."""

    distinct: tuple[str, ...] = ()
    top: tuple[tuple[str, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.distinct or self.top)

    @property
    def names(self) -> tuple[str, ...]:
        """The statistics' names, in the order windows report them."""
        return (
            *(f"distinct_{tag}" for tag in self.distinct),
            *(f"top_{tag}" for tag, _ in self.top),
        )


def _exact_list(ranked: Ranked) -> orjson.Fragment:
    """An exact top list, encoded: ``[{"value": ..., "count": ...}, ...]``."""
    return orjson.Fragment(
        orjson.dumps([{"value": value, "count": count} for value, count in ranked])
    )


def _approximate_list(ranked: Ranked, error: int) -> orjson.Fragment:
    """An approximate top list, encoded: ``[{"value": ..., "count": ..., "error": ...}, ...]``."""
    return orjson.Fragment(
        orjson.dumps([{"value": value, "count": count, "error": error} for value, count in ranked])
    )


class _RankedTop:
    """One exact window's top values of one tag, and the list last encoded: most events
    change no listed value, and then the same encoding serves."""

    __slots__ = ("_cached", "_seen", "k", "name", "place", "ranked")

    def __init__(self, name: str, place: int, k: int) -> None:
        self.name, self.place, self.k = name, place, k
        self.ranked = RankedCounts()
        self._cached = _exact_list([])
        self._seen = -1

    def value(self) -> orjson.Fragment:
        ranked = self.ranked
        if ranked.version != self._seen:
            self._cached = _exact_list(ranked.top(self.k))
            self._seen = ranked.version
        return self._cached


class _ExactWindow:
    """One exact time window's tag statistics over its tagged events: each event's values
    of the rule's tags (a row, ``None`` where it lacks one), held in time order with ties in
    arrival order; per distinct tag a dict value -> count in the window, per top tag its
    ranked counts."""

    __slots__ = ("_distinct", "_head", "_rows", "_tops", "_ts", "label", "width")

    def __init__(
        self,
        label: str,
        width: int,
        distinct: Sequence[tuple[str, int]],
        top: Sequence[tuple[str, int, int]],
    ) -> None:
        self.label, self.width = label, width
        self._ts: list[int] = []
        self._rows: list[tuple[str | None, ...]] = []
        self._head = 0
        self._distinct = tuple((name, place, dict[str, int]()) for name, place in distinct)
        self._tops = tuple(_RankedTop(name, place, k) for name, place, k in top)

    def slide(self, clock: int) -> bool:
        edge = clock - self.width
        ts, head = self._ts, self._head
        end = len(ts)
        if head == end or ts[head] > edge:
            return False
        rows = self._rows
        while head < end and ts[head] <= edge:
            row = rows[head]
            head += 1
            for _, place, counts in self._distinct:
                value = row[place]
                if value is not None:
                    left = counts[value] - 1
                    if left:
                        counts[value] = left
                    else:
                        del counts[value]
            for top in self._tops:
                value = row[top.place]
                if value is not None:
                    top.ranked.add(value, -1)
        if head >= _COMPACT_MIN and head >= end >> 1:
            del ts[:head], rows[:head]
            head = 0
        self._head = head
        return True

    def add(self, ts: int, row: tuple[str | None, ...], clock: int) -> None:
        if ts <= clock - self.width:
            return
        held = self._ts
        if not held or ts >= held[-1]:
            held.append(ts)
            self._rows.append(row)
        else:
            p = bisect_right(held, ts, self._head)
            held.insert(p, ts)
            self._rows.insert(p, row)
        for _, place, counts in self._distinct:
            value = row[place]
            if value is not None:
                counts[value] = counts.get(value, 0) + 1
        for top in self._tops:
            value = row[top.place]
            if value is not None:
                top.ranked.add(value)

    def fill(self, window: dict[str, object]) -> None:
        for name, _, counts in self._distinct:
            window[name] = len(counts)
        for top in self._tops:
            window[top.name] = top.value()

    def is_empty(self) -> bool:
        return self._head == len(self._ts)


class _SlidingClock:
    """The clock protocol of the time-window tag statistics: `start_at` a late first event's
    clock, `advance` on an idle tick (True iff a window lost values); `_slide` is theirs."""

    __slots__ = ("_clock",)
    _clock: int

    @property
    def clock_us(self) -> int | None:
        return None if self._clock == NO_CLOCK else self._clock

    def start_at(self, clock_us: int) -> None:
        if self._clock == NO_CLOCK:
            self._clock = clock_us

    def advance(self, clock_us: int) -> bool:
        if self._clock == NO_CLOCK or clock_us <= self._clock:
            return False
        return self._slide(clock_us)

    def _slide(self, clock_us: int) -> bool:
        raise NotImplementedError


class ExactTags(_SlidingClock):
    """The tag statistics of a rule's exact time windows: exact (module doc); not durable,
    the event log gives them back as it gives the windows' other statistics."""

    slides = True

    __slots__ = ("_tags", "_windows")

    def __init__(self, widths_us: Sequence[int], labels: Sequence[str], spec: TagSpec) -> None:
        self._clock = NO_CLOCK
        # A row holds each event's value of every tag the rule names, once (a tag may be
        # both counted and listed).
        self._tags = tuple(dict.fromkeys((*spec.distinct, *(t for t, _ in spec.top))))
        where = {tag: i for i, tag in enumerate(self._tags)}
        distinct = [(f"distinct_{tag}", where[tag]) for tag in spec.distinct]
        top = [(f"top_{tag}", where[tag], k) for tag, k in spec.top]
        self._windows = tuple(
            _ExactWindow(label, width, distinct, top)
            for width, label in zip(widths_us, labels, strict=True)
        )

    def insert(self, ts_us: int, tags: Tags, clock_us: int) -> None:
        """One event (its tags, None for none); ``clock_us`` is the topic clock after it."""
        if clock_us > self._clock:
            self._clock = clock_us
            for window in self._windows:
                window.slide(clock_us)
        if not tags:
            return
        row = tuple(map(tags.get, self._tags))
        if row.count(None) == len(row):
            return
        for window in self._windows:
            window.add(ts_us, row, clock_us)

    def _slide(self, clock_us: int) -> bool:
        self._clock = clock_us
        changed = False
        for window in self._windows:
            changed |= window.slide(clock_us)
        return changed

    def is_empty(self) -> bool:
        return all(window.is_empty() for window in self._windows)

    def fill(self, windows: Windows) -> None:
        """Write each window's tag statistics into its dict in ``windows``."""
        for window in self._windows:
            window.fill(windows[window.label])


# How many different sub-bucket keys a long window's distinct count holds at once (the span
# of its sketch's ring). ``_Distinct`` takes the key ``(ts - 1) // step`` of an event with
# ``ts <= clock`` only if it is at least ``(clock - width) // step``, and expires to
# ``edge = (clock - width) // step - 1`` whenever the clock moves up, before the event is
# added; so live keys run from ``edge + 1`` to ``(clock - 1) // step``. With
# ``width = SUB_BUCKETS * step + r`` (``0 <= r < step``), and as ``x // s - y // s <=
# (x - y) // s + 1``: ``(clock - 1) // step - (clock - width) // step <= (width - 1) // step
# + 1``, which is ``SUB_BUCKETS + 1`` when ``r > 0`` (``SUB_BUCKETS`` when ``r == 0``). So
# a key is at most ``edge + SUB_BUCKETS + 2``: at most ``SUB_BUCKETS + 2`` live keys (62).
_DISTINCT_SPAN = SUB_BUCKETS + 2


class _Distinct:
    """One long window's distinct count of one tag, keyed by sub-bucket: ``(ts - 1) // step``."""

    __slots__ = ("_edge", "counter", "name", "step", "tag", "width")

    def __init__(self, name: str, tag: str, width: int, step: int) -> None:
        self.name, self.tag, self.width, self.step = name, tag, width, step
        self.counter = SlidingDistinct(_DISTINCT_SPAN)
        self._edge = NO_CLOCK  # the last edge expired to (a long window's moves once a
        # sub-bucket; ``TimeTags`` slides before it adds)

    def slide(self, clock: int) -> bool:
        edge = (clock - self.width) // self.step - 1
        if edge == self._edge:
            return False
        self._edge = edge
        return self.counter.expire(edge)

    def add(self, ts: int, value: str) -> None:
        key = (ts - 1) // self.step
        # Above the edge last slid to, never the edge of a clock behind it: a key at or below
        # the edge may share its ring slot with a live key.
        if key > self._edge:
            self.counter.add(value, key)

    def value(self) -> TagValue:
        return self.counter.count()

    def is_empty(self) -> bool:
        return self.counter.is_empty()

    def write(self, out: StateWriter) -> None:
        self.counter.write(out)

    def read(self, source: StateReader) -> None:
        self.counter = SlidingDistinct.read(source, _DISTINCT_SPAN)
        self._edge = NO_CLOCK


class _TopBucketed:
    """One long window's top values of one tag (``top.BucketedTop``)."""

    __slots__ = ("_cached", "_first", "_seen", "k", "name", "step", "summary", "tag", "width")

    def __init__(self, name: str, tag: str, width: int, k: int) -> None:
        self.name, self.tag, self.width, self.k = name, tag, width, k
        self.step = width // SUB_BUCKETS
        self.summary = BucketedTop(counters_for(k))
        # The list last encoded and the ranking it was read at: the error (the sum of the
        # floors) is part of the ranking, so most events leave both as they were.
        self._cached = _exact_list([])
        self._seen: tuple[int, int] | None = None
        self._first = NO_CLOCK  # the oldest sub-bucket in the window, last slid to (before
        # every add: ``TimeTags`` slides first)

    def slide(self, clock: int) -> bool:
        first = (clock - self.width) // self.step
        if first == self._first:
            return False
        self._first = first
        return self.summary.evict(first)

    def add(self, ts: int, value: str) -> None:
        b = (ts - 1) // self.step
        if b >= self._first:
            self.summary.add(b, value)

    def value(self) -> TagValue:
        summary = self.summary
        if summary.ranking != self._seen:
            listed = summary.top(self.k)
            # After reading: a read may rebuild the ranking's cached prefix, a new version.
            self._seen = summary.ranking
            if summary.exact:  # exactness and the error change only with the floors
                self._cached = _exact_list(listed)
            else:
                self._cached = _approximate_list(listed, summary.error)
        return self._cached

    def is_empty(self) -> bool:
        return not self.summary.n

    def write(self, out: StateWriter) -> None:
        self.summary.write(out)

    def read(self, source: StateReader) -> None:
        self.summary = BucketedTop.read(source, counters_for(self.k))
        self._seen = None
        self._first = NO_CLOCK


_Column = _Distinct | _TopBucketed


class TimeTags(_SlidingClock):
    """The tag statistics of a rule's long windows: durable (``to_state``), nothing growing
    with the rate (module doc)."""

    slides = True

    __slots__ = ("_columns", "_due", "_labels", "_steps", "_widths")

    def __init__(self, widths_us: Sequence[int], labels: Sequence[str], spec: TagSpec) -> None:
        self._widths = tuple(widths_us)
        self._steps = tuple(width // SUB_BUCKETS for width in self._widths)
        self._labels = tuple(labels)
        self._clock = NO_CLOCK
        # The first clock at which a window's edge moves to the next sub-bucket (a column's
        # ``slide`` changes nothing before): NO_CLOCK until the first slide, which comes
        # before the first add, after a restore too.
        self._due = NO_CLOCK
        columns: list[list[_Column]] = []
        for width, step in zip(self._widths, self._steps, strict=True):
            row: list[_Column] = [_Distinct(f"distinct_{t}", t, width, step) for t in spec.distinct]
            row += [_TopBucketed(f"top_{tag}", tag, width, k) for tag, k in spec.top]
            columns.append(row)
        self._columns = tuple(tuple(row) for row in columns)

    def insert(self, ts_us: int, tags: Tags, clock_us: int) -> None:
        """One event (its tags, None for none); ``clock_us`` is the topic clock after it."""
        if clock_us >= self._due:
            self._slide(clock_us)
        elif clock_us > self._clock:
            self._clock = clock_us
        if not tags:
            return
        for row in self._columns:
            for column in row:
                value = tags.get(column.tag)
                if value is not None:
                    column.add(ts_us, value)

    def _slide(self, clock_us: int) -> bool:
        self._clock = clock_us
        changed = False
        for row in self._columns:
            for column in row:
                changed |= column.slide(clock_us)
        self._due = min(
            ((clock_us - width) // step + 1) * step + width
            for width, step in zip(self._widths, self._steps, strict=True)
        )
        return changed

    def is_empty(self) -> bool:
        return all(column.is_empty() for row in self._columns for column in row)

    def fill(self, windows: Windows) -> None:
        """Write each window's tag statistics into its dict in ``windows``."""
        for label, row in zip(self._labels, self._columns, strict=True):
            window = windows[label]
            for column in row:
                window[column.name] = column.value()

    def to_state(self) -> bytes:
        out = StateWriter()
        out.uint(_VERSION)
        out.sint(self._clock)
        for row in self._columns:
            for column in row:
                column.write(out)
        return bytes(out)

    @classmethod
    def from_state(
        cls, widths_us: Sequence[int], labels: Sequence[str], spec: TagSpec, state: bytes
    ) -> TimeTags:
        self = cls(widths_us, labels, spec)
        if not state:
            return self  # written before the rule asked for tag statistics
        source = StateReader(state)
        if source.uint() != _VERSION:
            raise ValueError("tag statistics' state of another version")
        self._clock = source.sint()
        for row in self._columns:
            for column in row:
                column.read(source)
        source.done()
        return self


class CountTags:
    """The tag statistics of a rule's count windows ``last{N}``: exact, over a buffer of the
    last ``max(N)`` events' tag values in time order (ties in arrival order), late events in
    place, as ``CountWindows`` holds their values."""

    slides = False

    __slots__ = (
        "_cap", "_distinct", "_head", "_labels", "_rows", "_sizes", "_tags", "_tops", "_ts",
    )  # fmt: skip

    def __init__(self, sizes: Sequence[int], spec: TagSpec) -> None:
        self._sizes = tuple(sizes)
        self._labels = tuple(f"last{n}" for n in self._sizes)
        self._tags = tuple(dict.fromkeys((*spec.distinct, *(t for t, _ in spec.top))))
        self._cap = max(self._sizes)
        self._ts = array("q")
        self._rows: list[tuple[str | None, ...] | None] = []
        self._head = 0
        where = {tag: i for i, tag in enumerate(self._tags)}
        # Per window: for each distinct tag (its name, its place in a row, value -> count),
        # and for each top tag its ranked counts.
        self._distinct = tuple(
            tuple((f"distinct_{tag}", where[tag], dict[str, int]()) for tag in spec.distinct)
            for _ in self._sizes
        )
        self._tops = tuple(
            tuple(_RankedTop(f"top_{tag}", where[tag], k) for tag, k in spec.top)
            for _ in self._sizes
        )

    def is_empty(self) -> bool:
        return len(self._ts) == self._head

    def advance(self, clock_us: int) -> bool:
        return False

    def insert(self, ts_us: int, tags: Tags, clock_us: int) -> None:
        row = None
        if tags:
            values = tuple(tags.get(tag) for tag in self._tags)
            if any(v is not None for v in values):
                row = values
        self._insert(ts_us, row)

    def _insert(self, ts_us: int, row: tuple[str | None, ...] | None) -> None:
        ts = self._ts
        rows = self._rows
        head = self._head
        end = len(ts)
        held = end - head
        if held and ts_us < ts[-1]:
            p = bisect_right(ts, ts_us, head)
            if p == head and held == self._cap:
                return  # older than every event of the largest window
            ts.insert(p, ts_us)
            rows.insert(p, row)
        else:
            p = end
            ts.append(ts_us)
            rows.append(row)
        # As in CountWindows: window N held [end - N, end); it takes the event iff p lies
        # after end - N, and then, if it was full, loses the entry at end - N.
        for i, n in enumerate(self._sizes):
            if p > end - n:
                if held >= n:
                    self._count(i, rows[end - n], -1)
                self._count(i, row, 1)
        if held == self._cap:
            head += 1
            if head >= _COMPACT_MIN and head >= len(ts) >> 1:
                del ts[:head], rows[:head]
                head = 0
            self._head = head

    def _count(self, i: int, row: tuple[str | None, ...] | None, sign: int) -> None:
        if row is None:
            return
        for _, place, counts in self._distinct[i]:
            value = row[place]
            if value is not None:
                n = counts.get(value, 0) + sign
                if n:
                    counts[value] = n
                else:
                    del counts[value]
        for top in self._tops[i]:
            value = row[top.place]
            if value is not None:
                top.ranked.add(value, sign)

    def fill(self, windows: Windows) -> None:
        """Write each window's tag statistics into its dict in ``windows``."""
        for label, distinct, tops in zip(self._labels, self._distinct, self._tops, strict=True):
            window = windows[label]
            for name, _, counts in distinct:
                window[name] = len(counts)
            for top in tops:
                window[top.name] = top.value()

    def to_state(self) -> bytes:
        out = StateWriter()
        out.uint(_VERSION)
        out.uint(len(self._tags))
        out.uint(len(self._ts) - self._head)
        for at in range(self._head, len(self._ts)):
            out.sint(self._ts[at])
            row = self._rows[at]
            for value in row or (None,) * len(self._tags):
                if value is None:
                    out.uint(0)
                else:
                    out.uint(1)
                    out.text(value)
        return bytes(out)

    @classmethod
    def from_state(cls, sizes: Sequence[int], spec: TagSpec, state: bytes) -> CountTags:
        """Count windows that continue exactly where the ones that gave ``state`` stood."""
        self = cls(sizes, spec)
        if not state:
            return self  # written before the rule asked for tag statistics
        source = StateReader(state)
        if source.uint() != _VERSION:
            raise ValueError("count windows' tag state of another version")
        if source.uint() != len(self._tags):
            raise ValueError("count windows' tag state was written for other tags")
        count = source.uint()
        if count > self._cap:
            raise ValueError("count windows' tag state holds more events than the windows")
        previous = None
        for _ in range(count):
            ts_us = source.sint()
            if previous is not None and ts_us < previous:
                raise ValueError("count windows' tag state: timestamps out of order")
            previous = ts_us
            values = tuple(source.text() if source.uint() else None for _ in self._tags)
            self._insert(ts_us, values if any(v is not None for v in values) else None)
        source.done()
        return self
