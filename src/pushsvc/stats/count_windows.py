"""Count windows: the last N accepted events of a topic (or group) in ``ts`` order.

Semantics (docs/design.md, "Analytics rules"): window ``lastN`` holds the last N accepted
events in ``ts`` order (ties in arrival order), whatever their age, so the clock and idle
ticks never change it. pandas is the oracle: ``rolling(N, min_periods=1)`` over the accepted
events sorted stably by time, read at the newest row. ``min_periods=1`` is a choice: pandas'
default for ``rolling(N)`` is ``min_periods=N``, which makes every statistic NaN -- ``count``
included -- until N events have arrived. Here a window with fewer than N events reports the
statistics of the events it has (what ``min_periods=1`` gives: count, sum, mean, min, max and
the quantiles of those events, var and stddev NaN -- None here -- below two of them), so a
fresh topic's first updates are not empty.

``rate`` is ``(count - 1) / (newest ts - oldest ts)`` in events per second, computed as one
correctly rounded ``int / int`` division of the exact integers (timestamps are microseconds);
None below two events or when they all have the same ``ts``.

A late event goes in place. A full window then loses its oldest event, unless the late event
is older than all N it holds: it would be the one to leave, so that window does not change.
An event older than every event the largest window holds is in no window and is not kept.

Layout. Every window is a suffix of one buffer holding the last ``max(sizes)`` events in
``ts`` order: parallel ``array`` columns (8 bytes per timestamp and per value, no Python
object per event), with a dead head that is deleted once it is 1/16 of the buffer (one
memmove, freeing nothing). Per window, depending on the statistics selected: the exact scaled
sums S1 and S2 (``moments.py``; one integer scale for the whole buffer, the finest any held
value needs, so it gets coarser again once a tiny value has left) and a ``SortedList`` of its
values (min, max and the quantiles, ``order.py``).

Cost per event: O(log N) per window (one ``SortedList`` add and at most one remove, O(1)
integer sums). A late event also moves the buffer entries after it (``array.insert``, a
memmove of at most ``8 * max(sizes)`` bytes per column) -- the reason for ``MAX_SIZE``.

State. Everything is a function of the buffer's content: the sums are exact integers at the
scale the content needs, the sorted lists hold the windows' values. ``to_state`` is therefore
just the buffer (a little-endian int64 column and a float64 column) and ``from_state``
rebuilds the rest, which then continues bit-identically.

Not thread- or greenlet-safe: one owner calls it; nothing here yields.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise

from sortedcontainers import SortedList

from pushsvc.rules.names import MAX_COUNT_WINDOW
from pushsvc.stats.layout import ALL_STATS, MOMENTS_1, QUANTILE_OF, select_stats
from pushsvc.stats.moments import moments, scaled
from pushsvc.stats.order import order_stats_for

__all__ = ["MAX_SIZE", "CountWindows"]

#: The largest N a count window may have. Every topic and every group of a rule keeps the
#: largest window's events: 16 bytes each in the buffer, plus a float object in the sorted
#: list of each window with min/max/quantiles (~40 bytes each), so 100,000 events are ~6 MB for
#: one topic or group (a rule with 100 groups: ~0.6 GB), ~1.6 MB of serialised state to write
#: on each snapshot, and a late event's memmove of up to 0.8 MB per column. Past that, a time
#: window or a long window is the right tool.
MAX_SIZE = MAX_COUNT_WINDOW

_MICROS = 1_000_000
_COMPACT_MIN = 1024
_STATE_VERSION = 1
_HEADER = struct.Struct("<BI")  # format version, events held
_EMPTY: dict[str, float | int | None] = {"count": 0, "sum": 0.0} | dict.fromkeys(ALL_STATS[2:])


def _validate(
    sizes: Sequence[int], stats: Sequence[str]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The sizes as given and the statistics in ``ALL_STATS`` order, checked."""
    if isinstance(sizes, str | bytes) or not sizes:
        raise ValueError(f"count windows need at least one size N (last = [N, ...]), got {sizes!r}")
    for n in sizes:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"count window sizes must be positive integers, got {n!r}")
        if n > MAX_SIZE:
            raise ValueError(f"count window size {n} is above the limit of {MAX_SIZE} events")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"count window sizes must be distinct, got {list(sizes)}")
    return tuple(sizes), select_stats(stats)


def _exponent(value: float) -> int:
    """The ``k`` of ``value = m * 2**-k`` in lowest terms (0 for an integer)."""
    return value.as_integer_ratio()[1].bit_length() - 1


class CountWindows:
    """Count windows ``last{N}`` for ``sizes`` (in the order given) over one shared buffer.

    ``stats``: any of ``ALL_STATS``, reported in that order. Timestamps are integer
    microseconds (int64); values must be finite.
    """

    slides = False
    """The clock does not move a count window (`pushsvc.stats.compiled.WindowSet`)."""

    __slots__ = (
        "_cap", "_compact_at", "_exps", "_head", "_labels", "_m1", "_ostats", "_qnames", "_s1",
        "_s2", "_shift", "_sizes", "_sorted", "_stats", "_ts", "_vals",
    )  # fmt: skip

    def __init__(self, sizes: Sequence[int], stats: Sequence[str]) -> None:
        self._sizes, self._stats = _validate(sizes, stats)
        self._labels = tuple(f"last{n}" for n in self._sizes)
        selected = set(self._stats)
        self._m1 = bool(selected & MOMENTS_1)  # S2 is kept with S1: a square costs little
        self._qnames = tuple(name for name in self._stats if name in QUANTILE_OF)
        qs = tuple(QUANTILE_OF[name] for name in self._qnames)
        ordered = bool(qs) or bool(selected & {"min", "max"})
        self._sorted = tuple(SortedList() for _ in self._sizes) if ordered else ()
        self._ostats = order_stats_for(qs)
        self._cap = max(self._sizes)
        self._compact_at = max(_COMPACT_MIN, self._cap >> 4)
        self._ts = array("q")
        self._vals = array("d")
        self._head = 0  # buffer entries before it are dead (out of every window)
        # Values are held as exact integers at the scale 2**-shift: the finest any held value
        # needs. _exps counts the held values per exponent, to know when it may get coarser.
        self._shift = 0
        self._exps: dict[int, int] = {}
        self._s1 = [0] * len(self._sizes)
        self._s2 = [0] * len(self._sizes)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def sizes(self) -> tuple[int, ...]:
        return self._sizes

    @property
    def stats(self) -> tuple[str, ...]:
        """The statistics reported, in ``ALL_STATS`` order."""
        return self._stats

    def __len__(self) -> int:
        """Events held: those of the largest window."""
        return len(self._ts) - self._head

    def is_empty(self) -> bool:
        return len(self._ts) == self._head

    def insert(self, ts_us: int, value: float, clock_us: int) -> None:
        """Accept one event (ties go after events with the same ``ts``).

        ``clock_us`` (the topic clock after it) is part of the shared interface; count windows
        do not depend on it. A non-finite value raises ValueError and changes nothing.
        """
        v = float(value)
        if v - v != 0.0:  # inf - inf and nan - nan are nan
            raise ValueError(f"event value must be finite, got {value!r}")
        ts = self._ts
        vals = self._vals
        head = self._head
        end = len(ts)
        held = end - head
        if held and ts_us < ts[-1]:
            p = bisect_right(ts, ts_us, head)
            if p == head and held == self._cap:
                return  # older than every event of the largest window: in none of them
            ts.insert(p, ts_us)  # first: an out-of-range ts raises with nothing changed
            vals.insert(p, v)
        else:
            p = end
            ts.append(ts_us)
            vals.append(v)
        # Window N held the buffer's [end - N, end) before; it takes the event iff p lies
        # after end - N, and then, if it was full, loses the entry at end - N (still there:
        # the event went in after it).
        if self._m1:
            num, den = v.as_integer_ratio()
            k = den.bit_length() - 1  # v = num * 2**-k
            self._exps[k] = self._exps.get(k, 0) + 1
            if k > self._shift:
                self._rescale(k)
            shift = self._shift
            x = num << (shift - k)
            x2 = x * x
            s1, s2 = self._s1, self._s2
            for i, n in enumerate(self._sizes):
                if p > end - n:
                    if held >= n:
                        y = scaled(vals[end - n], shift)
                        s1[i] += x - y
                        s2[i] += x2 - y * y
                    else:
                        s1[i] += x
                        s2[i] += x2
        # The ordered windows hold -0.0 as 0.0 (`+ 0.0`): the two compare equal, so a
        # SortedList keeps them in the order they came and `remove` takes the leftmost, and a
        # window would hold whichever sign its history left, not what a restore rebuilds.
        for i, window in enumerate(self._sorted):
            n = self._sizes[i]
            if p > end - n:
                if held >= n:
                    window.remove(vals[end - n] + 0.0)
                window.add(v + 0.0)
        if held == self._cap:
            self._drop_head()

    def _drop_head(self) -> None:
        """The largest window is one over: its oldest entry leaves the buffer."""
        head = self._head
        if self._m1:
            k = _exponent(self._vals[head])
            left = self._exps[k] - 1
            if left:
                self._exps[k] = left
            else:
                del self._exps[k]
                if k == self._shift:
                    self._rescale(max(self._exps))  # never empty: the new event is held
        head += 1
        if head >= self._compact_at:
            del self._ts[:head], self._vals[:head]
            head = 0
        self._head = head

    def _rescale(self, shift: int) -> None:
        """Every window's sums at the scale ``2**-shift`` (exact: every held value fits it)."""
        d = shift - self._shift
        s1, s2 = self._s1, self._s2
        for i in range(len(s1)):
            if d >= 0:
                s1[i] <<= d
                s2[i] <<= 2 * d
            else:
                s1[i] >>= -d
                s2[i] >>= -2 * d
        self._shift = shift

    def advance(self, clock_us: int) -> bool:
        """Ticks do not change count windows: always False."""
        return False

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """``{label: {stat: value}}``, stats in ``ALL_STATS`` order.

        ``count`` 0 and ``sum`` 0.0 for an empty window, every other stat None there;
        ``var``/``stddev`` None for one value; ``rate`` None below two events or with no time
        between them. Sums beyond the double range are ``±inf`` (``moments.py``).
        """
        ts = self._ts
        end = len(ts)
        held = end - self._head
        unit = 1 << self._shift
        stats = self._stats
        everything = stats == ALL_STATS
        out: dict[str, dict[str, float | int | None]] = {}
        for i, label in enumerate(self._labels):
            n = min(self._sizes[i], held)
            if not n:
                out[label] = {name: _EMPTY[name] for name in stats}
                continue
            total: float | None = None
            mean = var = stddev = low = high = p50 = p90 = p99 = rate = None
            if self._m1:
                total, mean, var, stddev = moments(n, self._s1[i], self._s2[i], unit)
            if self._sorted:
                ordered = self._ostats(self._sorted[i])  # [min, max, *selected quantiles]
                low, high = ordered[0], ordered[1]
                if len(ordered) == 5:
                    p50, p90, p99 = ordered[2:]
                elif len(ordered) > 2:
                    named = dict(zip(self._qnames, ordered[2:], strict=True))
                    p50, p90, p99 = named.get("p50"), named.get("p90"), named.get("p99")
            span = ts[-1] - ts[end - n]
            if span:
                rate = (n - 1) * _MICROS / span
            # One dict display in ALL_STATS order, then the selection: cheaper than filling a
            # dict key by key.
            full: dict[str, float | int | None] = {
                "count": n, "sum": total, "mean": mean, "min": low, "max": high, "var": var,
                "stddev": stddev, "p50": p50, "p90": p90, "p99": p99, "rate": rate,
            }  # fmt: skip
            out[label] = full if everything else {name: full[name] for name in stats}
        return out

    # -- state -----------------------------------------------------------------------------

    def to_state(self) -> bytes:
        """The events held, oldest first: a header, int64 timestamps, float64 values (LE)."""
        ts = self._ts[self._head :]
        vals = self._vals[self._head :]
        if sys.byteorder != "little":
            ts.byteswap()
            vals.byteswap()
        return _HEADER.pack(_STATE_VERSION, len(ts)) + ts.tobytes() + vals.tobytes()

    @classmethod
    def from_state(cls, sizes: Sequence[int], stats: Sequence[str], state: bytes) -> CountWindows:
        """Count windows that continue exactly where the ones that gave ``state`` stood.

        ``sizes`` and ``stats`` must be those of the original (a state holding more events
        than the largest window raises ValueError, as does a damaged one).
        """
        self = cls(sizes, stats)
        try:
            version, count = _HEADER.unpack_from(state)
        except struct.error:
            raise ValueError("count window state: too short for its header") from None
        if version != _STATE_VERSION:
            raise ValueError(f"count window state: unknown format version {version}")
        body = memoryview(state)[_HEADER.size :]
        if len(body) != 16 * count:
            raise ValueError(f"count window state: {len(body)} bytes for {count} events")
        if count > self._cap:
            raise ValueError(f"count window state holds {count} events, more than {self._cap}")
        ts = array("q")
        ts.frombytes(body[: 8 * count])
        vals = array("d")
        vals.frombytes(body[8 * count :])
        if sys.byteorder != "little":
            ts.byteswap()
            vals.byteswap()
        if any(a > b for a, b in pairwise(ts)):
            raise ValueError("count window state: timestamps out of order")
        if any(v - v != 0.0 for v in vals):
            raise ValueError("count window state: a value that is not finite")
        self._ts, self._vals = ts, vals
        if self._m1:
            for v in vals:
                k = _exponent(v)
                self._exps[k] = self._exps.get(k, 0) + 1
            self._shift = max(self._exps, default=0)
        ints = [scaled(v, self._shift) for v in vals] if self._m1 else []
        for i, n in enumerate(self._sizes):
            if self._m1:
                self._s1[i] = sum(ints[-n:])
                self._s2[i] = sum(x * x for x in ints[-n:])
            if self._sorted:
                self._sorted[i].update(v + 0.0 for v in vals[-n:])
        return self
