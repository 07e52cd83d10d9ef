"""All rolling windows of one topic over one shared, time-ordered event buffer.

Semantics (DESIGN.md, "Statistics semantics"): the topic clock ``T`` is the largest event time
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

Speed. The per-event paths (``insert``, ``insert_many``, ``summary``) are generated per
configuration by ``fastpath.py`` with every window unrolled into local variables; they cover
the common case, an in-order event of ordinary magnitude. Everything else (late events, the
first value that needs a finer integer scale, values beyond ``_HUGE``, idle ticks, buffer
maintenance) runs through the plain methods of this class, which the fast paths call after
writing their locals back. The scalar state lives in one flat list (``_st``, layout below) so
that moving it in and out of locals is one unpack and one list display.

Bounded pauses. The dead head of the buffer is deleted in slices of at most
``max(_COMPACT_MIN, held / 16)`` entries (freeing objects costs ~25 ns each, so one slice of
a 100k buffer costs ~0.1 ms, where halving it would cost milliseconds), and changing the
integer scale is O(windows) because no per-event integer is stored (``moments.py``).

Not thread- or greenlet-safe: one owner (the topic's aggregator) calls it. Nothing here
yields, so a greenlet runs each call to completion.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import ClassVar

from sortedcontainers import SortedList

from pushsvc.stats.extrema import Extrema
from pushsvc.stats.moments import moments, scaled
from pushsvc.stats.order import QUANTILES, order_stats_for

__all__ = ["SCALAR_STATS", "STAT_KEYS", "TopicWindows"]

#: Statistic names of every window's summary, in output order.
STAT_KEYS: tuple[str, ...] = (
    "count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99",
)  # fmt: skip
#: Every statistic except the quantiles: O(1) per event, no sorted list kept.
SCALAR_STATS: tuple[str, ...] = STAT_KEYS[:7]

_QUANTILE_OF = dict(QUANTILES)
_MOMENTS_1 = frozenset({"sum", "mean", "var", "stddev"})  # need S1 = sum(x)
_MOMENTS_2 = frozenset({"var", "stddev"})  # need S2 = sum(x * x)

# Delete the buffer's dead head once it is at least this long (and 1/16 of the buffer): the
# deletion frees each dead entry, so its size bounds the pause.
_COMPACT_MIN = 8192
# The fast paths hold values whose integer needs a scale of at most 2**-_MAX_FAST_SHIFT and
# whose magnitude is below _HUGE, so that ``int(v * 2.0**shift)`` is exact and every scaled
# moment stays a normal double (var * 4**shift < 2**(2*380 + 2 + 256) < 2**1023, see
# ``fastpath.py``). A value outside that (1e-300, 1e200) switches the topic to the exact
# general path until it has left every window.
_MAX_FAST_SHIFT = 128
_HUGE = 2.0**380
_NO_CLOCK = -(1 << 63)

# The flat state list ``_st``: topic fields, then _WSTRIDE fields per window.
_CLOCK, _SHIFT, _FUNIT, _INV, _LIMIT = range(5)
_TOPIC_FIELDS = 5
_LEFT, _S1, _S2, _MAXP, _MINP = range(5)
_WSTRIDE = 5


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

    Instances are of a subclass generated per (widths, labels, stats) with the fast paths
    compiled in (``fastpath.py``); ``isinstance(x, TopicWindows)`` holds.
    """

    __slots__ = (
        "_cat", "_exc_until", "_ext", "_labels", "_m1", "_m2", "_nshift", "_ostats",
        "_sorted", "_st", "_stats", "_ts", "_vals", "_wide", "_widths",
    )  # fmt: skip

    # One generated subclass per configuration (an aggregator has one for all its topics).
    _classes: ClassVar[dict[tuple, type[TopicWindows]]] = {}

    def __new__(
        cls,
        widths_us: Sequence[int],
        labels: Sequence[str],
        *,
        stats: Sequence[str] = STAT_KEYS,
    ) -> TopicWindows:
        if cls is not TopicWindows:
            return super().__new__(cls)
        widths, labels_, selected = _validate(widths_us, labels, stats)
        key = (widths, labels_, selected)
        special = cls._classes.get(key)
        if special is None:
            from pushsvc.stats.fastpath import specialise

            special = cls._classes[key] = specialise(cls, widths, labels_, selected)
        return super().__new__(special)

    def __init__(
        self,
        widths_us: Sequence[int],
        labels: Sequence[str],
        *,
        stats: Sequence[str] = STAT_KEYS,
    ) -> None:
        self._widths, self._labels, self._stats = _validate(widths_us, labels, stats)
        selected = set(self._stats)
        self._m1 = bool(selected & _MOMENTS_1)
        self._m2 = bool(selected & _MOMENTS_2)
        qs = tuple(_QUANTILE_OF[name] for name in self._stats if name in _QUANTILE_OF)
        self._sorted = tuple(SortedList() for _ in self._widths) if qs else ()
        self._ostats = order_stats_for(qs)
        self._ext = Extrema() if not qs and selected & {"min", "max"} else None
        self._wide = max(range(len(self._widths)), key=self._widths.__getitem__)
        self._ts: list[int] = []
        self._vals: list[float] = []
        self._cat = _COMPACT_MIN
        self._nshift = 0  # scale needed by the fast-path values held (see _MAX_FAST_SHIFT)
        self._exc_until: int | None = None  # newest ts of a value beyond the fast path
        limit = _HUGE if self._m1 else math.inf
        self._st: list = [_NO_CLOCK, 0, 1.0, 1.0, limit] + [0, 0, 0, 1, 1] * len(self._widths)

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
        clock = self._st[_CLOCK]
        return None if clock == _NO_CLOCK else clock

    @property
    def _shift(self) -> int:
        """Exponent of the integer scale: values are held as exact multiples of 2**-shift."""
        return self._st[_SHIFT]

    def __len__(self) -> int:
        """Events held: those within the widest window."""
        return len(self._ts) - self._st[_TOPIC_FIELDS + self._wide * _WSTRIDE + _LEFT]

    # The generated subclass overrides these three with unrolled versions of the same thing.

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
        clock = st[_CLOCK]
        late = ts_us < clock
        if late and ts_us <= clock - self._widths[self._wide]:
            return  # older than every window: in none of them
        x = 0
        if self._m1:
            k = d.bit_length() - 1  # d == 2**k
            if k > _MAX_FAST_SHIFT or not -_HUGE < v < _HUGE:
                st[_LIMIT] = 0.0  # the fast paths stand aside until this value has left
                if self._exc_until is None or ts_us > self._exc_until:
                    self._exc_until = ts_us
            elif k > self._nshift:
                self._nshift = k
            if k > st[_SHIFT]:
                self._set_shift(k)
            x = m << (st[_SHIFT] - k)
        if late:
            self._insert_late(ts_us, clock, v, x)
        else:
            self._append(ts_us, v, x)
        self._maintain()

    def _append(self, ts_us: int, v: float, x: int) -> None:
        st = self._st
        st[_CLOCK] = ts_us
        self._ts.append(ts_us)
        self._vals.append(v)
        if self._ext is not None:
            self._ext.append(ts_us, v)
        x2 = x * x
        for i, width in enumerate(self._widths):
            o = _TOPIC_FIELDS + i * _WSTRIDE
            st[o + _S1] += x
            st[o + _S2] += x2
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
        head = st[_TOPIC_FIELDS + self._wide * _WSTRIDE + _LEFT]
        p = bisect_right(self._ts, ts_us, head)
        self._ts.insert(p, ts_us)
        self._vals.insert(p, v)
        x2 = x * x
        for i, width in enumerate(self._widths):
            o = _TOPIC_FIELDS + i * _WSTRIDE
            if ts_us > clock - width:
                st[o + _S1] += x
                st[o + _S2] += x2
                if self._sorted:
                    self._sorted[i].add(v)
            else:
                st[o + _LEFT] += 1
        if self._ext is not None:
            self._ext.insert_late(ts_us, v)
            self._point(clock)

    def _evict(self, i: int, bound: int) -> bool:
        """Move window ``i``'s left edge past the events with ts <= bound; True if any left."""
        st = self._st
        o = _TOPIC_FIELDS + i * _WSTRIDE
        ts = self._ts
        left = st[o + _LEFT]
        new_left = bisect_right(ts, bound, left)
        if new_left == left:
            return False
        shift = st[_SHIFT]
        s1 = st[o + _S1]
        s2 = st[o + _S2]
        sorted_values = self._sorted[i] if self._sorted else None
        for u in self._vals[left:new_left]:
            if self._m1:
                y = scaled(u, shift)
                s1 -= y
                s2 -= y * y
            if sorted_values is not None:
                sorted_values.remove(u)
        st[o + _LEFT] = new_left
        st[o + _S1] = s1
        st[o + _S2] = s2
        return True

    def _point(self, clock: int) -> None:
        st = self._st
        for i, width in enumerate(self._widths):
            o = _TOPIC_FIELDS + i * _WSTRIDE
            st[o + _MAXP], st[o + _MINP] = self._ext.pointers(clock - width)

    def advance(self, clock_us: int) -> bool:
        """Idle tick: move ``T`` forward to ``clock_us`` and slide the windows.

        A no-op returning False if ``clock_us`` is not later than ``T`` or no event was ever
        accepted. Returns True iff some window lost events.
        """
        st = self._st
        if st[_CLOCK] == _NO_CLOCK or clock_us <= st[_CLOCK]:
            return False
        st[_CLOCK] = clock_us
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
            st[_CLOCK] - self._widths[self._wide] >= self._exc_until
        ):
            # Every value that needed the exact path is out of every window, and every value
            # held needs at most 2**-_nshift: the sums shrink exactly.
            self._exc_until = None
            self._set_shift(self._nshift)
            st[_LIMIT] = _HUGE
        if st[_TOPIC_FIELDS + self._wide * _WSTRIDE + _LEFT] >= self._cat:
            self._compact()

    def _set_shift(self, shift: int) -> None:
        """Rescale every window's sums to ``2**-shift`` (exact: every held value fits it)."""
        st = self._st
        d = shift - st[_SHIFT]
        for i in range(len(self._widths)):
            o = _TOPIC_FIELDS + i * _WSTRIDE
            if d >= 0:
                st[o + _S1] <<= d
                st[o + _S2] <<= 2 * d
            else:
                st[o + _S1] >>= -d
                st[o + _S2] >>= -2 * d
        st[_SHIFT] = shift
        st[_FUNIT], st[_INV] = _scale_floats(shift)

    def _compact(self) -> None:
        st = self._st
        ow = _TOPIC_FIELDS + self._wide * _WSTRIDE
        head = st[ow + _LEFT]
        del self._ts[:head], self._vals[:head]
        dmax = dmin = 0
        if self._ext is not None:
            dmax, dmin = self._ext.drop_dead(st[ow + _MAXP], st[ow + _MINP])
        for i in range(len(self._widths)):
            o = _TOPIC_FIELDS + i * _WSTRIDE
            st[o + _LEFT] -= head
            st[o + _MAXP] -= dmax
            st[o + _MINP] -= dmin
        self._cat = max(_COMPACT_MIN, len(self._ts) >> 4)

    def _reset(self) -> None:
        # Every window is empty (their sums are exactly 0): start over at the coarsest scale.
        st = self._st
        self._ts.clear()
        self._vals.clear()
        if self._ext is not None:
            self._ext.clear()
        for i in range(len(self._widths)):
            o = _TOPIC_FIELDS + i * _WSTRIDE
            st[o : o + _WSTRIDE] = [0, 0, 0, 1, 1]
        self._nshift = 0
        self._exc_until = None
        self._set_shift(0)
        st[_LIMIT] = _HUGE if self._m1 else math.inf

    def _summary_exact(self) -> dict[str, dict[str, float | int | None]]:
        """``summary`` in the general form: any scale, results beyond the double range."""
        st = self._st
        end = len(self._ts)
        unit = 1 << st[_SHIFT]
        out: dict[str, dict[str, float | int | None]] = {}
        for i, label in enumerate(self._labels):
            o = _TOPIC_FIELDS + i * _WSTRIDE
            n = end - st[o + _LEFT]
            full: dict[str, float | int | None] = dict.fromkeys(STAT_KEYS)
            full["count"] = n
            full["sum"] = 0.0
            if n:
                moments_ = moments(n, st[o + _S1], st[o + _S2], unit)
                full["sum"], full["mean"], full["var"], full["stddev"] = moments_
                if self._sorted:
                    ordered = self._ostats(self._sorted[i])
                    full["min"], full["max"] = ordered[:2]
                    qs = iter(ordered[2:])
                    for name in STAT_KEYS[7:]:
                        if name in self._stats:
                            full[name] = next(qs)
                elif self._ext is not None:
                    full["max"] = self._ext.mxv[st[o + _MAXP]]
                    full["min"] = self._ext.mnv[st[o + _MINP]]
            out[label] = {name: full[name] for name in self._stats}
        return out


def _validate(
    widths_us: Sequence[int], labels: Sequence[str], stats: Sequence[str]
) -> tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
    if len(widths_us) != len(labels) or not labels:
        raise ValueError("need one label per window width, and at least one window")
    if len(set(labels)) != len(labels):
        raise ValueError(f"window labels must be distinct: {list(labels)}")
    for width in widths_us:
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise ValueError(f"window widths must be positive integers (µs), got {width!r}")
    if isinstance(stats, str):
        raise ValueError(f"stats must be a sequence of names, got the string {stats!r}")
    for name in stats:
        if name not in STAT_KEYS:
            raise ValueError(f"unknown statistic {name!r}; known: {', '.join(STAT_KEYS)}")
    if not stats:
        raise ValueError("select at least one statistic")
    selected = tuple(name for name in STAT_KEYS if name in set(stats))
    return tuple(widths_us), tuple(labels), selected
