"""``LongWindows``: time windows too long to keep their events, from sub-buckets and sketches.

Semantics (docs/design.md, "Analytics rules", "Long windows"). A window of width ``w`` µs is
cut into sub-buckets of width ``s = w // 60`` µs (so at most 1/60 of the window), aligned to
multiples of ``s`` since the epoch: sub-bucket ``b`` holds the events with ts in
``(b*s, (b+1)*s]``. At topic clock ``T`` the window holds the sub-buckets
``b >= (T - w) // s``, i.e. the events with ``ts`` in ``(floor((T - w) / s) * s, T]``: the
exact window ``(T - w, T]`` with its old edge rounded outwards by less than one sub-bucket
(``sub_bucket_us`` says by how much at most, for ``GET /rules``).

Over that set ``count``, ``sum``, ``mean``, ``var``, ``stddev``, ``min`` and ``max`` are exact,
as in ``TopicWindows``: each sub-bucket keeps its count, its exact scaled-integer sums
(``moments.py``: ``S1 = sum(x)``, ``S2 = sum(x*x)`` at a scale ``2**-shift`` shared by the
window), its min and max; the window keeps the totals, adding an event's terms on insert and a
sub-bucket's when it leaves (integers, so nothing is lost), and recomputes its min/max over
the sub-buckets only when one leaves. ``p50``/``p90``/``p99`` come from the window's sketch
(``sketch.py``, relative error at most ``accuracy``, clamped into the exact min/max): the sum
of its sub-buckets' sketches, kept incrementally (an event is added to its sub-bucket's sketch
and to the window's; a leaving sub-bucket's sketch is subtracted), never re-merged per event.
``rate`` is ``count / w`` (per second), ``w`` the nominal width.

A late event (``ts`` < clock) goes into its sub-bucket if that sub-bucket is still in the
window, else into none. The order of events inside a sub-bucket does not matter (everything
kept is a sum, a min or a max), so ties need no rule here.

Memory and ``to_state()`` grow with the number of sub-buckets (at most ``w // s + 2`` = 62 per
window) and with the sketch bins they use (the range of the values, logarithmically), never
with the number of events. ``to_state`` writes the sub-buckets only; ``from_state`` rebuilds
the window totals and sketch from them, and continues exactly as the original would (every
statistic is a function of the sub-buckets' contents alone).

``-0.0`` is held as ``0.0`` (equal values; this keeps min/max independent of arrival order).

Not thread- or greenlet-safe: one owner (the topic's aggregator) calls it; nothing yields.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Sequence

from pushsvc.rules.names import SUB_BUCKETS
from pushsvc.stats.layout import ALL_STATS, MOMENTS_1, NO_CLOCK, QUANTILE_OF, select_stats
from pushsvc.stats.moments import moments
from pushsvc.stats.sketch import Sketch
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["SUB_BUCKETS", "LongWindows"]

# A window is cut into sub-buckets of ``width // SUB_BUCKETS`` µs (its edge is rounded to one).
_STATE_VERSION = 1
_US_PER_S = 1_000_000
_NO_MOMENTS = (0.0, None, None, None)
_NONES = (None,) * 8  # mean .. p99 of an empty window
# ``_window_stats`` fills one row in this order.
assert ("count", "sum", "mean", "min", "max", "var", "stddev", *QUANTILE_OF, "rate") == ALL_STATS

Summary = dict[str, dict[str, float | int | None]]


class _Sub:
    """One sub-bucket: count, exact sums at the window's scale, the finest scale its values
    need (``need``), min, max and a sketch of its values."""

    __slots__ = ("hi", "lo", "n", "need", "s1", "s2", "sketch")

    def __init__(self, accuracy: float) -> None:
        self.n = 0
        self.s1 = 0
        self.s2 = 0
        self.need = 0
        self.lo = math.inf
        self.hi = -math.inf
        self.sketch = Sketch(accuracy)


class _Window:
    """One long window: its sub-buckets by index (``order`` sorted), and their totals."""

    __slots__ = (
        "cached", "hi", "last", "last_b", "lo", "n", "order", "s1", "s2", "shift", "sketch",
        "step", "subs", "width",
    )  # fmt: skip

    def __init__(self, width: int, accuracy: float) -> None:
        self.width = width
        self.step = width // SUB_BUCKETS
        self.subs: dict[int, _Sub] = {}
        self.order: list[int] = []
        self.last_b = NO_CLOCK  # the sub-bucket the previous event went to, and it
        self.last: _Sub | None = None
        self.n = 0
        self.s1 = 0
        self.s2 = 0
        self.shift = 0
        self.lo = math.inf
        self.hi = -math.inf
        self.sketch = Sketch(accuracy, indexed=True)
        self.cached: dict[str, float | int | None] | None = None

    def rescale(self, shift: int) -> None:
        """Every sum to the scale ``2**-shift`` (exact: every held value is a multiple of it)."""
        d = shift - self.shift
        if d > 0:
            self.s1 <<= d
            self.s2 <<= 2 * d
            for sub in self.subs.values():
                sub.s1 <<= d
                sub.s2 <<= 2 * d
        elif d < 0:
            self.s1 >>= -d
            self.s2 >>= -2 * d
            for sub in self.subs.values():
                sub.s1 >>= -d
                sub.s2 >>= -2 * d
        self.shift = shift

    def evict(self, first: int) -> bool:
        """Drop the sub-buckets before ``first``; True if any held an event."""
        order = self.order
        if not order or order[0] >= first:
            return False
        cut = 0
        while cut < len(order) and order[cut] < first:
            cut += 1
        for b in order[:cut]:
            sub = self.subs.pop(b)
            self.n -= sub.n
            self.s1 -= sub.s1
            self.s2 -= sub.s2
            self.sketch.subtract(sub.sketch)
        del order[:cut]
        if self.last_b < first:
            self.last_b, self.last = NO_CLOCK, None
        held = self.subs.values()
        self.lo = min((sub.lo for sub in held), default=math.inf)
        self.hi = max((sub.hi for sub in held), default=-math.inf)
        need = max((sub.need for sub in held), default=0)
        if need < self.shift:
            self.rescale(need)
        self.cached = None
        return True


class LongWindows:
    """Long time windows of one topic (or group): exact moments and min/max over sub-buckets,
    quantiles from a relative-error sketch (see the module doc).

    ``widths_us``: window widths in µs (each at least ``SUB_BUCKETS`` µs); ``labels``: one per
    width, distinct; ``stats``: any of ``ALL_STATS`` (reported in that order); ``accuracy``:
    the sketch's relative error bound (DDSketch's ``a``, default 1 %).
    """

    slides = True
    """The clock moves these windows (`pushsvc.stats.compiled.WindowSet`)."""

    __slots__ = (
        "_accuracy", "_clock", "_every", "_labels", "_moments", "_pick", "_qs", "_qslots",
        "_stats", "_windows",
    )  # fmt: skip

    def __init__(
        self,
        widths_us: Sequence[int],
        labels: Sequence[str],
        stats: Sequence[str],
        *,
        accuracy: float = 0.01,
    ) -> None:
        widths, self._labels, self._stats = _validate(widths_us, labels, stats)
        Sketch(accuracy)  # validates it
        self._accuracy = float(accuracy)
        self._qs = tuple(QUANTILE_OF[name] for name in self._stats if name in QUANTILE_OF)
        self._moments = bool(MOMENTS_1.intersection(self._stats))
        # Each reported stat's place in ALL_STATS (the row _window_stats fills).
        self._pick = tuple((name, ALL_STATS.index(name)) for name in self._stats)
        self._qslots = tuple(ALL_STATS.index(name) for name in self._stats if name in QUANTILE_OF)
        self._every = self._stats == ALL_STATS
        self._windows = tuple(_Window(width, self._accuracy) for width in widths)
        self._clock = NO_CLOCK

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def stats(self) -> tuple[str, ...]:
        """The statistics reported, in ``ALL_STATS`` order."""
        return self._stats

    @property
    def widths_us(self) -> tuple[int, ...]:
        return tuple(win.width for win in self._windows)

    @property
    def accuracy(self) -> float:
        return self._accuracy

    @property
    def clock_us(self) -> int | None:
        """The topic clock ``T`` last seen (None before the first event)."""
        return None if self._clock == NO_CLOCK else self._clock

    def sub_bucket_us(self, label: str) -> int:
        """Width of the window's sub-buckets (µs): its old edge is rounded out by less."""
        return self._windows[self._labels.index(label)].step

    def footprint(self) -> dict[str, tuple[int, int]]:
        """``{label: (sub-buckets held, sketch bins allocated in them and the window)}``: what
        memory grows with."""
        return {
            label: (
                len(win.subs),
                win.sketch.bins + sum(sub.sketch.bins for sub in win.subs.values()),
            )
            for label, win in zip(self._labels, self._windows, strict=True)
        }

    def is_empty(self) -> bool:
        """No event held in any window."""
        return all(not win.n for win in self._windows)

    def insert(self, ts_us: int, value: float, clock_us: int) -> None:
        """One accepted event; ``clock_us`` is the topic clock after it (``>= ts_us``).

        Slides every window to the clock, then counts the event in each window whose
        sub-buckets still include its own. ValueError (nothing changed) for a non-finite
        value or a ``ts_us`` after ``clock_us``.
        """
        try:
            v = float(value) + 0.0  # -0.0 becomes 0.0
            m, d = v.as_integer_ratio()
        except (OverflowError, ValueError, TypeError):
            raise ValueError(f"event value must be finite, got {value!r}") from None
        if ts_us > clock_us:
            raise ValueError(f"event ts {ts_us} is after the clock {clock_us}")
        if clock_us > self._clock:
            self._slide(clock_us)
        clock = self._clock
        k = d.bit_length() - 1  # d == 2**k: v is a multiple of 2**-k
        for win in self._windows:
            step = win.step
            b = (ts_us - 1) // step
            if b == win.last_b:
                sub = win.last
                assert sub is not None
            else:
                if b < (clock - win.width) // step:
                    continue  # its sub-bucket has left the window
                got = win.subs.get(b)
                if got is None:
                    got = _Sub(self._accuracy)
                    win.subs[b] = got
                    if not win.order or b > win.order[-1]:
                        win.order.append(b)
                    else:
                        insort(win.order, b)
                sub = got
                win.last_b, win.last = b, sub
            if k > win.shift:
                win.rescale(k)
            x = m << (win.shift - k)
            x2 = x * x
            sub.n += 1
            sub.s1 += x
            sub.s2 += x2
            if k > sub.need:
                sub.need = k
            if v < sub.lo:
                sub.lo = v
            if v > sub.hi:
                sub.hi = v
            sub.sketch.add(v)
            win.n += 1
            win.s1 += x
            win.s2 += x2
            if v < win.lo:
                win.lo = v
            if v > win.hi:
                win.hi = v
            win.sketch.add(v)
            win.cached = None

    def advance(self, clock_us: int) -> bool:
        """Idle tick: slide to ``clock_us`` (a no-op unless later than the clock, or before
        the first event). True iff some window lost events."""
        if self._clock == NO_CLOCK or clock_us <= self._clock:
            return False
        return self._slide(clock_us)

    def _slide(self, clock_us: int) -> bool:
        self._clock = clock_us
        changed = False
        for win in self._windows:
            changed |= win.evict((clock_us - win.width) // win.step)
        return changed

    def summary(self) -> Summary:
        """``{label: {stat: value}}``, the stats in ``ALL_STATS`` order. An empty window:
        ``count`` 0, ``sum`` 0.0, ``rate`` 0.0, every other stat None; ``var``/``stddev``
        None below two values."""
        out: Summary = {}
        for label, win in zip(self._labels, self._windows, strict=True):
            cached = win.cached
            if cached is None:
                cached = win.cached = self._window_stats(win)
            out[label] = dict(cached)
        return out

    def _window_stats(self, win: _Window) -> dict[str, float | int | None]:
        n = win.n
        rate = n * _US_PER_S / win.width
        if not n:
            row: list[float | int | None] = [0, 0.0, *_NONES, rate]
        else:
            total, mean, var, stddev = (
                moments(n, win.s1, win.s2, 1 << win.shift) if self._moments else _NO_MOMENTS
            )
            row = [n, total, mean, win.lo, win.hi, var, stddev, None, None, None, rate]
            if self._qs:
                got = win.sketch.quantiles(self._qs, lower=win.lo, upper=win.hi)
                for slot, value in zip(self._qslots, got, strict=True):
                    row[slot] = value
        if self._every:
            return dict(zip(ALL_STATS, row, strict=True))
        return {name: row[i] for name, i in self._pick}

    # -- state ------------------------------------------------------------------------------

    def to_state(self) -> bytes:
        """The clock and every sub-bucket (count, exact sums, min, max, sketch bins)."""
        out = StateWriter()
        out.uint(_STATE_VERSION)
        out.double(self._accuracy)
        out.uint(len(self._windows))
        for win in self._windows:
            out.uint(win.width)
        if self._clock == NO_CLOCK:
            out.uint(0)
        else:
            out.uint(1)
            out.sint(self._clock)
        for win in self._windows:
            out.uint(win.shift)
            out.uint(len(win.order))
            for b in win.order:
                sub = win.subs[b]
                out.sint(b)
                out.uint(sub.n)
                out.uint(sub.need)
                out.big(sub.s1)
                out.big(sub.s2)
                out.double(sub.lo)
                out.double(sub.hi)
                sub.sketch.write_bins(out)
        return bytes(out)

    @classmethod
    def from_state(
        cls,
        widths_us: Sequence[int],
        labels: Sequence[str],
        stats: Sequence[str],
        state: bytes,
        *,
        accuracy: float = 0.01,
    ) -> LongWindows:
        """Windows configured as given, holding what ``to_state()`` wrote: they continue
        exactly as the original. ValueError if the state is malformed or was written for
        other widths or another accuracy."""
        self = cls(widths_us, labels, stats, accuracy=accuracy)
        source = StateReader(state)
        version = source.uint()
        if version != _STATE_VERSION:
            raise ValueError(f"long-window state of version {version}, expected {_STATE_VERSION}")
        if source.double() != self._accuracy:
            raise ValueError("long-window state was written with another sketch accuracy")
        widths = tuple(source.uint() for _ in range(source.uint()))
        if widths != self.widths_us:
            raise ValueError(f"long-window state is for widths {widths}, not {self.widths_us}")
        if source.uint():
            self._clock = source.sint()
        for win in self._windows:
            win.shift = source.uint()
            merged = Sketch(self._accuracy)  # indexed once at the end: cheaper
            for _ in range(source.uint()):
                b = source.sint()
                if win.order and b <= win.order[-1]:
                    raise ValueError("long-window state has sub-buckets out of order")
                sub = _Sub(self._accuracy)
                sub.n = source.uint()
                sub.need = source.uint()
                sub.s1 = source.big()
                sub.s2 = source.big()
                sub.lo = source.double()
                sub.hi = source.double()
                sub.sketch.read_bins(source)
                if sub.n != sub.sketch.count or sub.need > win.shift or not sub.n:
                    raise ValueError("long-window state has an inconsistent sub-bucket")
                win.subs[b] = sub
                win.order.append(b)
                win.n += sub.n
                win.s1 += sub.s1
                win.s2 += sub.s2
                win.lo = min(win.lo, sub.lo)
                win.hi = max(win.hi, sub.hi)
                merged.merge(sub.sketch)
            merged.index()
            win.sketch = merged
        source.done()
        return self


def _validate(
    widths_us: Sequence[int], labels: Sequence[str], stats: Sequence[str]
) -> tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
    if isinstance(labels, str) or isinstance(stats, str):
        raise ValueError("labels and stats must be sequences of names, not one string")
    if len(widths_us) != len(labels) or not labels:
        raise ValueError("need one label per window width, and at least one window")
    if len(set(labels)) != len(labels):
        raise ValueError(f"window labels must be distinct: {list(labels)}")
    for width in widths_us:
        if not isinstance(width, int) or isinstance(width, bool) or width < SUB_BUCKETS:
            raise ValueError(
                f"long window widths must be integers of at least {SUB_BUCKETS} µs "
                f"(one µs per sub-bucket), got {width!r}"
            )
    return tuple(widths_us), tuple(labels), select_stats(stats)
