"""All rolling windows of one topic over one shared, time-ordered event buffer.

Semantics (docs/design.md, "Statistics semantics"): the topic clock ``T`` is the largest event time
accepted; window ``w`` holds the accepted events with ``ts`` in ``(T - w, T]``, like pandas'
``series.rolling(w)`` on a time index read at the newest row. Late events (``ts < T``) are
inserted in time order and ``T`` does not move back; one at or before ``T - w`` is not in
window ``w``, and one at or before ``T - max(w)`` is in no window and is not kept at all.

Layout. One buffer per topic: parallel lists ``ts`` and ``vals`` sorted by time (ties in
arrival order). Every held ``ts`` is ``<= T``, so each window is a suffix of the buffer: a
left index plus, depending on the statistics selected, its exact scaled sums (``moments.py``),
a ``SortedList`` of its values (quantiles, ``order.py``), or pointers into the topic's shared
monotonic min/max lists (``extrema.py``, used when no quantile is selected). Windows only
move their left index forward, so eviction is O(1) amortised per event per window.

Speed. The per-event paths (``insert``, ``insert_many``, ``summary``, ``insert_and_summary``)
are generated per configuration by ``fastpath.py`` with every window unrolled into local
variables; they cover the common cases, an event of ordinary magnitude in order or late
within the widest window. Everything else (a late event older than every window, the first
value that needs a finer integer scale, values beyond ``HUGE``, idle ticks, buffer
maintenance) runs through the plain methods of this class, which the fast paths call after
writing their locals back. The scalar state lives in one flat list (``_st``, layout below) so
that moving it in and out of locals is one unpack and one list display.

Bounded pauses. The dead head of the buffer is deleted in slices of at most
``max(_COMPACT_MIN, held / 16)`` entries, so that no event pays for freeing half a buffer at
once (measured: docs/performance.md, 'What the aggregator's shape saves'), and changing the
integer scale is O(windows) because no per-event integer is stored (``moments.py``).

Not thread- or greenlet-safe: one owner (the topic's aggregator) calls it. Nothing here
yields, so a greenlet runs each call to completion.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from sortedcontainers import SortedList

from pushsvc.stats.extrema import Extrema
from pushsvc.stats.layout import (
    CLOCK,
    FUNIT,
    HUGE,
    INV,
    LEFT,
    LIMIT,
    MAX_FAST_SHIFT,
    MAXP,
    MINP,
    MOMENTS_1,
    MOMENTS_2,
    NO_CLOCK,
    QUANTILE_OF,
    S1,
    S2,
    SHIFT,
    STAT_KEYS,
    TOPIC_FIELDS,
    WSTRIDE,
    initial_state,
    validate,
)
from pushsvc.stats.moments import moments, scaled
from pushsvc.stats.order import order_stats_for

__all__ = ["TopicWindows"]

# Delete the buffer's dead head once it is at least this long (and 1/16 of the buffer): the
# deletion frees each dead entry, so its size bounds the pause.
_COMPACT_MIN = 8192


def _scale_floats(shift: int) -> tuple[float, float]:
    """``(2.0**shift, 2.0**-shift)``; zeros past the double range (only the exact path runs)."""
    if shift > 1000:
        return 0.0, 0.0
    return 2.0**shift, 2.0**-shift


class TopicWindows:
    """All windows of one topic, sharing one time-ordered buffer of (ts_us, value).

    ``stats`` selects the statistics computed and reported (any of ``STAT_KEYS``; output in
    ``STAT_KEYS`` order). ``clock_us`` is the topic clock ``T`` (None before the first event).
    Timestamps are integer microseconds; values must be finite.

    Constructed directly it is the reference implementation; ``WindowSpec.new()``
    (``spec.py``) gives an instance of a subclass generated per (widths, labels, stats) with
    the fast paths compiled in (``fastpath.py``), which the oracle tests compare with it.
    """

    __slots__ = (
        "_cat", "_exc_until", "_ext", "_labels", "_m1", "_m2", "_nshift", "_ostats",
        "_sorted", "_st", "_stats", "_ts", "_vals", "_wide", "_widths",
    )  # fmt: skip

    def __init__(
        self,
        widths_us: Sequence[int],
        labels: Sequence[str],
        *,
        stats: Sequence[str] = STAT_KEYS,
    ) -> None:
        self._widths, self._labels, self._stats = validate(widths_us, labels, stats)
        selected = set(self._stats)
        self._m1 = bool(selected & MOMENTS_1)
        self._m2 = bool(selected & MOMENTS_2)
        qs = tuple(QUANTILE_OF[name] for name in self._stats if name in QUANTILE_OF)
        self._sorted = tuple(SortedList() for _ in self._widths) if qs else ()
        self._ostats = order_stats_for(qs)
        self._ext = Extrema() if not qs and selected & {"min", "max"} else None
        self._wide = max(range(len(self._widths)), key=self._widths.__getitem__)
        self._ts: list[int] = []
        self._vals: list[float] = []
        self._cat = _COMPACT_MIN
        self._nshift = 0  # scale needed by the fast-path values held (see MAX_FAST_SHIFT)
        self._exc_until: int | None = None  # newest ts of a value beyond the fast path
        limit = HUGE if self._m1 else math.inf
        self._st: list[Any] = initial_state(len(self._widths), limit=limit)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def widths_us(self) -> tuple[int, ...]:
        return self._widths

    @property
    def stats(self) -> tuple[str, ...]:
        """The statistics reported, in ``STAT_KEYS`` order."""
        return self._stats

    @property
    def clock_us(self) -> int | None:
        clock = self._st[CLOCK]
        return None if clock == NO_CLOCK else clock

    @property
    def _shift(self) -> int:
        """Exponent of the integer scale: values are held as exact multiples of 2**-shift."""
        shift: int = self._st[SHIFT]
        return shift

    def __len__(self) -> int:
        """Events held: those within the widest window."""
        left: int = self._st[TOPIC_FIELDS + self._wide * WSTRIDE + LEFT]
        return len(self._ts) - left

    def start_at(self, clock_us: int) -> None:
        """Before the first event: become an empty topic whose clock ``T`` is ``clock_us`` --
        the state idle ticks leave once every event has left every window (what a rebuild
        restores when the log no longer holds any of the topic's events)."""
        if self._st[CLOCK] != NO_CLOCK:
            raise ValueError("start_at is for a topic that has no clock yet")
        self._st[CLOCK] = clock_us

    # The generated subclass overrides these four with unrolled versions of the same thing.

    def insert(self, ts_us: int, value: float) -> None:
        """Accept one event: ``T = max(T, ts_us)``, insert it in time order, slide every window.

        Ties go after events with the same timestamp. The caller has already applied the
        lateness bound; a late event older than every window changes nothing. A non-finite
        value raises ValueError and changes nothing.
        """
        self._insert_slow(ts_us, value)

    def insert_many(
        self, items: Sequence[tuple[int, float]]
    ) -> list[dict[str, dict[str, float | int | None]]]:
        """``insert`` each ``(ts_us, value)`` in order; the ``summary()`` after each one.

        Identical to calling ``insert`` then ``summary`` per item. A bad value raises
        ValueError; the items before it have been applied (as with those calls).
        """
        out = []
        for ts_us, value in items:
            self._insert_slow(ts_us, value)
            out.append(self._summary_exact())
        return out

    def insert_and_summary(
        self, ts_us: int, value: float
    ) -> dict[str, dict[str, float | int | None]]:
        """``insert`` then ``summary`` (a group's event: the generated version loads and
        stores the state once)."""
        self._insert_slow(ts_us, value)
        return self._summary_exact()

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """``{label: {stat: value}}`` for every window, the selected stats in STAT_KEYS order.

        ``count`` 0 and ``sum`` 0.0 for an empty window, every other stat None there;
        ``var``/``stddev`` None for a single value.
        """
        return self._summary_exact()

    # -- general paths ---------------------------------------------------------------------

    def _insert_slow(self, ts_us: int, value: float) -> None:
        try:
            v = float(value)
            m, d = v.as_integer_ratio()
        except (OverflowError, ValueError):
            raise ValueError(f"event value must be finite, got {value!r}") from None
        st = self._st
        clock = st[CLOCK]
        late = ts_us < clock
        if late and ts_us <= clock - self._widths[self._wide]:
            return  # older than every window: in none of them
        x = 0
        if self._m1:
            k = d.bit_length() - 1  # d == 2**k
            if k > MAX_FAST_SHIFT or not -HUGE < v < HUGE:
                st[LIMIT] = 0.0  # the fast paths stand aside until this value has left
                if self._exc_until is None or ts_us > self._exc_until:
                    self._exc_until = ts_us
            elif k > self._nshift:
                self._nshift = k
            if k > st[SHIFT]:
                self._set_shift(k)
            x = m << (st[SHIFT] - k)
        if late:
            self._insert_late(ts_us, clock, v, x)
        else:
            self._append(ts_us, v, x)
        self._maintain()

    def _append(self, ts_us: int, v: float, x: int) -> None:
        st = self._st
        st[CLOCK] = ts_us
        self._ts.append(ts_us)
        self._vals.append(v)
        if self._ext is not None:
            self._ext.append(ts_us, v)
        x2 = x * x if self._m2 else 0  # S2 only where var or stddev is asked, as the fast path
        for i, width in enumerate(self._widths):
            o = TOPIC_FIELDS + i * WSTRIDE
            st[o + S1] += x
            st[o + S2] += x2
            if self._sorted:
                self._sorted[i].add(v)
            self._evict(i, ts_us - width)
        if self._ext is not None:
            self._point(ts_us)

    def _insert_late(self, ts_us: int, clock: int, v: float, x: int) -> None:
        # Within the lateness bound the event lands near the tail, so bisect + list.insert
        # move only the few events after it. Windows it falls outside of keep their
        # content: their left index shifts by one over it.
        st = self._st
        head = st[TOPIC_FIELDS + self._wide * WSTRIDE + LEFT]
        p = bisect_right(self._ts, ts_us, head)
        self._ts.insert(p, ts_us)
        self._vals.insert(p, v)
        x2 = x * x if self._m2 else 0
        for i, width in enumerate(self._widths):
            o = TOPIC_FIELDS + i * WSTRIDE
            if ts_us > clock - width:
                st[o + S1] += x
                st[o + S2] += x2
                if self._sorted:
                    self._sorted[i].add(v)
            else:
                st[o + LEFT] += 1
        if self._ext is not None:
            self._ext.insert_late(ts_us, v)
            self._point(clock)

    def _evict(self, i: int, bound: int) -> bool:
        """Move window ``i``'s left edge past the events with ts <= bound; True if any left."""
        st = self._st
        o = TOPIC_FIELDS + i * WSTRIDE
        ts = self._ts
        left = st[o + LEFT]
        new_left = bisect_right(ts, bound, left)
        if new_left == left:
            return False
        shift = st[SHIFT]
        s1 = st[o + S1]
        s2 = st[o + S2]
        sorted_values = self._sorted[i] if self._sorted else None
        squares = self._m2
        for u in self._vals[left:new_left]:
            if self._m1:
                y = scaled(u, shift)
                s1 -= y
                if squares:
                    s2 -= y * y
            if sorted_values is not None:
                sorted_values.remove(u)
        st[o + LEFT] = new_left
        st[o + S1] = s1
        st[o + S2] = s2
        return True

    def _point(self, clock: int) -> None:
        assert self._ext is not None  # only called with min/max kept by Extrema
        st = self._st
        for i, width in enumerate(self._widths):
            o = TOPIC_FIELDS + i * WSTRIDE
            st[o + MAXP], st[o + MINP] = self._ext.pointers(clock - width)

    def advance(self, clock_us: int) -> bool:
        """Idle tick: move ``T`` forward to ``clock_us`` and slide the windows.

        A no-op returning False if ``clock_us`` is not later than ``T`` or no event was ever
        accepted. Returns True iff some window lost events.
        """
        st = self._st
        if st[CLOCK] == NO_CLOCK or clock_us <= st[CLOCK]:
            return False
        st[CLOCK] = clock_us
        changed = False
        for i, width in enumerate(self._widths):
            changed |= self._evict(i, clock_us - width)
        if changed:
            if self._ext is not None:
                self._point(clock_us)
            if len(self) == 0:
                self._reset()
            else:
                self._maintain()
        return changed

    def _maintain(self) -> None:
        """Leave the exact path once its values are gone; delete the buffer's dead head."""
        st = self._st
        if self._exc_until is not None and (
            st[CLOCK] - self._widths[self._wide] >= self._exc_until
        ):
            # Every value that needed the exact path is out of every window, and every value
            # held needs at most 2**-_nshift: the sums shrink exactly.
            self._exc_until = None
            self._set_shift(self._nshift)
            st[LIMIT] = HUGE
        if st[TOPIC_FIELDS + self._wide * WSTRIDE + LEFT] >= self._cat:
            self._compact()

    def _set_shift(self, shift: int) -> None:
        """Rescale every window's sums to ``2**-shift`` (exact: every held value fits it)."""
        st = self._st
        d = shift - st[SHIFT]
        for i in range(len(self._widths)):
            o = TOPIC_FIELDS + i * WSTRIDE
            if d >= 0:
                st[o + S1] <<= d
                st[o + S2] <<= 2 * d
            else:
                st[o + S1] >>= -d
                st[o + S2] >>= -2 * d
        st[SHIFT] = shift
        st[FUNIT], st[INV] = _scale_floats(shift)

    def _compact(self) -> None:
        st = self._st
        ow = TOPIC_FIELDS + self._wide * WSTRIDE
        head = st[ow + LEFT]
        del self._ts[:head], self._vals[:head]
        dmax = dmin = 0
        if self._ext is not None:
            dmax, dmin = self._ext.drop_dead(st[ow + MAXP], st[ow + MINP])
        for i in range(len(self._widths)):
            o = TOPIC_FIELDS + i * WSTRIDE
            st[o + LEFT] -= head
            st[o + MAXP] -= dmax
            st[o + MINP] -= dmin
        self._cat = max(_COMPACT_MIN, len(self._ts) >> 4)

    def _reset(self) -> None:
        # Every window is empty (their sums are exactly 0): start over at the coarsest scale.
        st = self._st
        self._ts.clear()
        self._vals.clear()
        if self._ext is not None:
            self._ext.clear()
        for i in range(len(self._widths)):
            o = TOPIC_FIELDS + i * WSTRIDE
            st[o : o + WSTRIDE] = [0, 0, 0, 1, 1]
        self._nshift = 0
        self._exc_until = None
        self._set_shift(0)
        st[LIMIT] = HUGE if self._m1 else math.inf

    def _summary_exact(self) -> dict[str, dict[str, float | int | None]]:
        """``summary`` in the general form: any scale, results beyond the double range."""
        st = self._st
        end = len(self._ts)
        unit = 1 << st[SHIFT]
        out: dict[str, dict[str, float | int | None]] = {}
        for i, label in enumerate(self._labels):
            o = TOPIC_FIELDS + i * WSTRIDE
            n = end - st[o + LEFT]
            full: dict[str, float | int | None] = dict.fromkeys(STAT_KEYS)
            full["count"] = n
            full["sum"] = 0.0
            if n:
                moments_ = moments(n, st[o + S1], st[o + S2] if self._m2 else None, unit)
                full["sum"], full["mean"], full["var"], full["stddev"] = moments_
                if self._sorted:
                    ordered = self._ostats(self._sorted[i])
                    full["min"], full["max"] = ordered[:2]
                    qs = iter(ordered[2:])
                    for name in STAT_KEYS[7:]:
                        if name in self._stats:
                            full[name] = next(qs)
                elif self._ext is not None:
                    full["max"] = self._ext.mxv[st[o + MAXP]]
                    full["min"] = self._ext.mnv[st[o + MINP]]
            out[label] = {name: full[name] for name in self._stats}
        return out
