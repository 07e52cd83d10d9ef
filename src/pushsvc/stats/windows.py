"""All rolling windows of one topic over one shared, time-ordered event buffer.

Semantics (DESIGN.md, "Statistics semantics"): the topic clock ``T`` is the largest event time
accepted; window ``w`` holds the accepted events with ``ts`` in ``(T - w, T]``, like pandas'
``series.rolling(w)`` on a time index read at the newest row. Late events (``ts < T``) are
inserted in time order and ``T`` does not move back; one at or before ``T - w`` is not in
window ``w``, and one at or before ``T - max(w)`` is in no window and is not kept at all.

Layout. One buffer per topic: parallel lists ``ts``, ``vals`` (floats, for order statistics),
``xs``/``x2s`` (the exact scaled integers and their squares, see ``moments.py``), sorted by
time (ties in arrival order). Because every held ``ts`` is ``<= T``, each window is a suffix of
the buffer, so a window is just a left index plus its running sums and a ``SortedList`` of
its values; its count is ``len(buffer) - left``. Windows only ever move their left index
forward, so eviction is O(1) amortised per event per window. The widest window's left index is
the buffer's head; the dead prefix before it is deleted in one slice once it is at least
half the buffer (amortised O(1)), never per event, and never with a deque (O(n) indexing).

Not thread- or greenlet-safe: one owner (the topic's aggregator) calls it. Nothing here
yields, so a greenlet runs each call to completion.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from functools import reduce
from operator import or_

from sortedcontainers import SortedList

from pushsvc.stats.moments import moments
from pushsvc.stats.order import order_stats

__all__ = ["STAT_KEYS", "TopicWindows"]

#: Statistic names of every window's summary, in output order.
STAT_KEYS: tuple[str, ...] = (
    "count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99",
)  # fmt: skip

# Compact the buffer when its dead head is at least this long and at least half the buffer:
# big enough that the slice deletion is rare, small enough not to hold much garbage.
_COMPACT_MIN = 4096
# Scales finer than 2**-96 only come from values that need them (|x| below ~1e-13 or so);
# when such values are gone the integers are shrunk back at the next compaction.
_COARSEN_ABOVE = 96


class _Window:
    """One window's state: its left index into the buffer, exact sums and sorted values."""

    __slots__ = ("add", "label", "left", "remove", "s1", "s2", "values", "width")

    def __init__(self, width: int, label: str) -> None:
        self.width = width
        self.label = label
        self.left = 0
        self.s1 = 0
        self.s2 = 0
        self.values = SortedList()
        # Bound methods cached: they are called once per event per window.
        self.add = self.values.add
        self.remove = self.values.remove


class TopicWindows:
    """All windows of one topic, sharing one time-ordered buffer of (ts_us, value).

    ``clock_us`` is the topic clock ``T`` (None before the first event). Timestamps are integer
    microseconds; values must be finite.
    """

    __slots__ = (
        "_shift", "_ts", "_unit", "_vals", "_widest", "_windows", "_x2s", "_xs", "clock_us",
    )  # fmt: skip

    def __init__(self, widths_us: Sequence[int], labels: Sequence[str]) -> None:
        if len(widths_us) != len(labels) or not labels:
            raise ValueError("need one label per window width, and at least one window")
        if len(set(labels)) != len(labels):
            raise ValueError(f"window labels must be distinct: {list(labels)}")
        for width in widths_us:
            if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
                raise ValueError(f"window widths must be positive integers (µs), got {width!r}")
        self._windows = tuple(_Window(w, label) for w, label in zip(widths_us, labels, strict=True))
        self._widest = max(self._windows, key=lambda w: w.width)
        self.clock_us: int | None = None
        self._ts: list[int] = []
        self._vals: list[float] = []
        self._xs: list[int] = []
        self._x2s: list[int] = []
        self._shift = 0  # values are held as exact integers in units of 2**-shift
        self._unit = 1  # 2**shift

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(w.label for w in self._windows)

    @property
    def widths_us(self) -> tuple[int, ...]:
        return tuple(w.width for w in self._windows)

    def __len__(self) -> int:
        """Events held: those within the widest window."""
        return len(self._ts) - self._widest.left

    def insert(self, ts_us: int, value: float) -> None:
        """Accept one event: ``T = max(T, ts_us)``, insert it in time order, slide every window.

        Ties go after events with the same timestamp. The caller has already applied the
        lateness bound; a late event older than every window changes nothing. A non-finite
        value raises ValueError and changes nothing.
        """
        try:
            v = float(value)
            m, d = v.as_integer_ratio()
        except (OverflowError, ValueError):
            raise ValueError(f"event value must be finite, got {value!r}") from None
        clock = self.clock_us
        if clock is not None and ts_us < clock:
            if ts_us > clock - self._widest.width:
                self._insert_late(ts_us, clock, v, self._scaled(m, d))
            return
        k = d.bit_length() - 1  # d == 2**k
        if k > self._shift:
            self._refine(k)
        x = m << (self._shift - k)
        x2 = x * x
        self.clock_us = ts_us
        ts = self._ts
        vals = self._vals
        xs = self._xs
        x2s = self._x2s
        ts.append(ts_us)
        vals.append(v)
        xs.append(x)
        x2s.append(x2)
        # Hot path, deliberately inlined. The new event is in every window and ends the
        # buffer with ts > bound, so the eviction loops stop without a bounds check.
        for w in self._windows:
            w.add(v)
            left = w.left
            bound = ts_us - w.width
            if ts[left] <= bound:
                s1 = w.s1 + x
                s2 = w.s2 + x2
                remove = w.remove
                while ts[left] <= bound:
                    s1 -= xs[left]
                    s2 -= x2s[left]
                    remove(vals[left])
                    left += 1
                w.left = left
                w.s1 = s1
                w.s2 = s2
            else:
                w.s1 += x
                w.s2 += x2
        head = self._widest.left
        if head >= _COMPACT_MIN and head * 2 >= len(ts):
            self._compact()

    def _scaled(self, m: int, d: int) -> int:
        """The exact integer for the value ``m / d`` (``d == 2**k``) at the topic's scale."""
        k = d.bit_length() - 1
        if k > self._shift:
            self._refine(k)
        return m << (self._shift - k)

    def _insert_late(self, ts_us: int, clock: int, v: float, x: int) -> None:
        # Within the lateness bound the event lands near the tail, so bisect + list.insert
        # move only the few events after it. Windows it falls outside of keep their
        # content: their left index shifts by one over it.
        x2 = x * x
        p = bisect_right(self._ts, ts_us, self._widest.left)
        self._ts.insert(p, ts_us)
        self._vals.insert(p, v)
        self._xs.insert(p, x)
        self._x2s.insert(p, x2)
        for w in self._windows:
            if ts_us > clock - w.width:
                w.add(v)
                w.s1 += x
                w.s2 += x2
            else:
                w.left += 1

    def advance(self, clock_us: int) -> bool:
        """Idle tick: move ``T`` forward to ``clock_us`` and slide the windows.

        A no-op returning False if ``clock_us`` is not later than ``T`` or no event was ever
        accepted. Returns True iff some window lost events.
        """
        clock = self.clock_us
        if clock is None or clock_us <= clock:
            return False
        self.clock_us = clock_us
        ts = self._ts
        vals = self._vals
        xs = self._xs
        x2s = self._x2s
        end = len(ts)
        changed = False
        for w in self._windows:
            left = w.left
            new_left = bisect_right(ts, clock_us - w.width, left, end)
            if new_left == left:
                continue
            changed = True
            s1 = w.s1
            s2 = w.s2
            remove = w.remove
            for i in range(left, new_left):
                s1 -= xs[i]
                s2 -= x2s[i]
                remove(vals[i])
            w.left = new_left
            w.s1 = s1
            w.s2 = s2
        if changed:
            if self._widest.left == end:
                self._reset()
            elif self._widest.left >= _COMPACT_MIN and self._widest.left * 2 >= end:
                self._compact()
        return changed

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """``{label: {stat: value}}`` for every window, stats in ``STAT_KEYS`` order.

        ``count`` 0 and ``sum`` 0.0 for an empty window, every other stat None there;
        ``var``/``stddev`` None for a single value.
        """
        end = len(self._ts)
        unit = self._unit
        out: dict[str, dict[str, float | int | None]] = {}
        for w in self._windows:
            n = end - w.left
            if n == 0:
                out[w.label] = {
                    "count": 0, "sum": 0.0, "mean": None, "min": None, "max": None,
                    "var": None, "stddev": None, "p50": None, "p90": None, "p99": None,
                }  # fmt: skip
                continue
            total, mean, var, stddev = moments(n, w.s1, w.s2, unit)
            lo, hi, p50, p90, p99 = order_stats(w.values)
            out[w.label] = {
                "count": n, "sum": total, "mean": mean, "min": lo, "max": hi,
                "var": var, "stddev": stddev, "p50": p50, "p90": p90, "p99": p99,
            }  # fmt: skip
        return out

    # -- buffer maintenance (rare, O(n)) ---------------------------------------------------

    def _drop_head(self) -> None:
        head = self._widest.left
        if head:
            del self._ts[:head]
            del self._vals[:head]
            del self._xs[:head]
            del self._x2s[:head]
            for w in self._windows:
                w.left -= head

    def _compact(self) -> None:
        self._drop_head()
        if self._shift > _COARSEN_ABOVE:
            self._coarsen()

    def _refine(self, k: int) -> None:
        """Make the scale fine enough for a value of ``m * 2**-k`` (``k > shift``)."""
        self._drop_head()
        d = k - self._shift
        d2 = 2 * d
        self._xs[:] = [x << d for x in self._xs]
        self._x2s[:] = [x2 << d2 for x2 in self._x2s]
        for w in self._windows:
            w.s1 <<= d
            w.s2 <<= d2
        self._shift = k
        self._unit = 1 << k

    def _coarsen(self) -> None:
        """Shrink the integers by the powers of two every held value shares (exact)."""
        bits = reduce(or_, self._xs, 0)
        c = self._shift if bits == 0 else min(self._shift, (bits & -bits).bit_length() - 1)
        if c == 0:
            return
        c2 = 2 * c
        # Exact: every held x (and so every window's s1) is a multiple of 2**c, every x2
        # (and s2) of 2**(2c).
        self._xs[:] = [x >> c for x in self._xs]
        self._x2s[:] = [x2 >> c2 for x2 in self._x2s]
        for w in self._windows:
            w.s1 >>= c
            w.s2 >>= c2
        self._shift -= c
        self._unit = 1 << self._shift

    def _reset(self) -> None:
        # Every window is empty (their sums are exactly 0): start over at the coarsest scale.
        self._ts.clear()
        self._vals.clear()
        self._xs.clear()
        self._x2s.clear()
        for w in self._windows:
            w.left = 0
            w.s1 = 0
            w.s2 = 0
        self._shift = 0
        self._unit = 1
