"""``Sketch``: a mergeable, subtractable quantile sketch with relative error (DDSketch).

Why this and not a library: docs/journal/sketches.md (the measured comparison). In short,
long windows read p50/p90/p99 after EVERY event, and the window's sketch loses a whole
sub-bucket at a time: only DDSketch's guarantee is the one the design asks for, the
``ddsketch`` package answers a rank in O(bins) Python steps and cannot subtract, and neither
KLL nor t-digest can subtract or promise a relative error. This is DDSketch's mapping with a
Fenwick tree over the bins, so a rank costs O(log bins).

Mapping (DDSketch's logarithmic mapping, Masson, Rim & Lee, VLDB 2019). With accuracy ``a``
and ``gamma = (1 + a) / (1 - a)``, a value ``x`` with ``|x| > tiny`` (``tiny`` = the smallest
normal double times ``gamma``, about 2.3e-308, as in DDSketch) is counted in bin
``key = ceil(log(|x|) / log(gamma))`` of the store of its sign: the bin holds the magnitudes
in ``(gamma**(key-1), gamma**key]``, and stands for ``r = 2 * gamma**key / (1 + gamma)``.
For every magnitude ``m`` in the bin ``r / m`` lies in ``[1 - a, 1 + a)``, so
``|r - m| <= a * m``. Values with ``|x| <= tiny`` are counted as zero, whose bin is exact
(an absolute error below ``tiny`` for those). Floating point: ``log`` and ``exp`` are
rounded, so a magnitude within about 1e-13 (relative) of a bin edge may be counted in the
neighbouring bin and a bin's ``r`` is itself rounded: the bound is ``a`` plus a relative
1e-12 or so, as in every DDSketch implementation. Counts are exact integers.

Quantiles (``quantiles``) match pandas' ``quantile(q, interpolation="linear")`` within the
same bound. pandas interpolates between two order statistics: ``pos = q * (n - 1)``,
``lo = floor(pos)``, ``x = x[lo] + (x[lo+1] - x[lo]) * f`` with ``f = pos - lo``. The sketch
knows which bin holds the value of each rank, so it estimates ``x[lo]`` and ``x[lo+1]``
each by its bin's ``r`` (each within ``a`` of the true order statistic) and interpolates
with the same ``f``. The result is the convex combination
``(1 - f) * r_lo + f * r_hi``, and if ``x[lo]`` and ``x[lo+1]`` have the same sign (zero
counts as either), ``|x̂ - x| <= (1 - f) * a * |x[lo]| + f * a * |x[lo+1]| = a * |x|``
because the absolute values of same-sign numbers add up to the absolute value of their
combination. With MIXED signs (``x[lo] < 0 < x[lo+1]``, an interpolation across zero)
that last step fails: the bound is then ``a * ((1 - f) * |x[lo]| + f * |x[lo+1]|)``, i.e.
relative to the two neighbours' magnitudes, not to ``x``, which may be near zero. Only a
quantile that falls between the largest negative and the smallest positive value of the
window is affected. Given the window's exact ``lower``/``upper`` (min, max), each estimate
is clamped into them first: the true order statistics lie there, so clamping only brings
an estimate closer (a window of one value, or of equal values, answers exactly).

Rank queries. Each sign's store is a dense array of bin counts over the keys it has seen;
an ``indexed`` sketch (a window's) also keeps a Fenwick (binary indexed) tree over it:
adding is O(log B) and finding the bin of a rank O(log B), for B bins in the key range; for
positive values it also remembers where each quantile's rank was found, so that the next
query after an ``add`` walks on from there (usually not at all) instead of descending. An
unindexed sketch (a sub-bucket's, which is only added to, merged and serialised) answers
ranks by a cumulative scan, O(B). The range grows (power of two sizes, the tree rebuilt in
O(B)) when a value lands outside it and shrinks when subtracting leaves it mostly empty,
so memory follows the range of the values held, never their number.

Subtracting (``subtract``) removes a sketch that was merged (or added value by value) into
this one before: what a long window does when a sub-bucket leaves. It is exact, since
counts are integers.

Not thread- or greenlet-safe; nothing here yields.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["Sketch"]

_VERSION = 1
_MIN_SIZE = 16
_TOO_LARGE = sys.float_info.max

Locate = Callable[[int], tuple[int, int]]


def _lerp(x: float, y: float, t: float) -> float:
    """x + (y - x) * t as numpy (so pandas' quantile) computes it: from the nearer end. From
    x alone, a t just below 1 between a negative x and 0 lost 1 - t to rounding: x + (-x * t)
    cancels to a multiple of x's last bit, twice the answer for t = 1 - 2**-53, where the
    module doc promises A times it."""
    d = y - x
    return y - d * (1 - t) if t >= 0.5 else x + d * t


def _zeros(size: int) -> array[int]:
    return array("q", bytes(8 * size))


class _Store:
    """Counts of one sign's bins: ``bins[i]`` counts key ``off + i``; with ``indexed`` also a
    Fenwick tree (1-based: ``tree[i]`` sums ``bins[i - (i & -i) : i]``; ``len(bins)`` is a
    power of two, so a rank search is one walk down from the middle)."""

    __slots__ = ("bins", "cursor_qs", "cursors", "indexed", "n", "off", "tree")

    def __init__(self, indexed: bool) -> None:
        self.bins: array[int] = array("q")
        self.off = 0
        self.n = 0
        self.indexed = indexed
        self.tree: list[int] | None = None
        # Where the last ``quantiles(cursor_qs)`` found each rank: ``[bin index, values in
        # the bins before it]`` per q, kept up to date by ``add`` (see _positive_quantiles).
        self.cursor_qs: Sequence[float] = ()
        self.cursors: list[list[int]] | None = None

    def add(self, key: int, count: int) -> None:
        i = key - self.off
        bins = self.bins
        if i < 0 or i >= len(bins):
            self._span(key, key)
            i = key - self.off
            bins = self.bins
        bins[i] += count
        self.n += count
        cursors = self.cursors
        if cursors is not None:
            for cursor in cursors:
                if i < cursor[0]:
                    cursor[1] += count
        tree = self.tree
        if tree is not None:
            size = len(bins)
            i += 1
            while i <= size:
                tree[i] += count
                i += i & -i

    def used(self) -> tuple[int, int] | None:
        """(first, last) index of a non-zero bin; None when empty."""
        if not self.n:
            return None
        bins = self.bins
        first = next(i for i, c in enumerate(bins) if c)
        last = next(i for i in range(len(bins) - 1, -1, -1) if bins[i])
        return first, last

    def _span(self, lo: int, hi: int) -> None:
        """Re-lay the bins so that keys ``lo .. hi`` and every held key fit."""
        held = self.used()
        if held is not None:
            lo = min(lo, self.off + held[0])
            hi = max(hi, self.off + held[1])
        self._layout(lo, hi, held)

    def _layout(self, lo: int, hi: int, held: tuple[int, int] | None) -> None:
        width = hi - lo + 1
        # Half as much room again, so a range that creeps outwards re-lays rarely.
        size = max(_MIN_SIZE, 1 << (width + width // 2 - 1).bit_length())
        off = lo - (size - width) // 2
        bins = _zeros(size)
        if held is not None:
            first, last = held
            start = self.off + first - off
            bins[start : start + last - first + 1] = self.bins[first : last + 1]
        self.bins = bins
        self.off = off
        if self.indexed:
            self._build_tree()

    def _build_tree(self) -> None:
        """The Fenwick tree of ``bins`` in O(B): each node passes its sum to its parent."""
        self.cursors = None  # bins moved, or changed in bulk
        size = len(self.bins)
        # A list, not an array: its items are quicker to read and write (docs/performance.md,
        # 'Small costs behind the code's shape'), and there is one tree per window.
        tree = [0, *self.bins]
        for i in range(1, size + 1):
            j = i + (i & -i)
            if j <= size:
                tree[j] += tree[i]
        self.tree = tree

    def index(self) -> None:
        self.indexed = True
        if self.bins:
            self._build_tree()

    def shrink(self) -> None:
        """After removals: forget the bins when empty, re-lay them when mostly unused."""
        held = self.used()
        if held is None:
            self.bins = array("q")
            self.off = 0
            self.tree = None
            self.cursors = None
        elif (held[1] - held[0] + 1) * 4 < len(self.bins) and len(self.bins) > _MIN_SIZE:
            self._layout(self.off + held[0], self.off + held[1], held)

    def find(self, rank: int) -> tuple[int, int]:
        """(key of the bin holding the value of 0-based ``rank``, its index within the bin)."""
        tree = self.tree
        assert tree is not None
        pos = 0
        step = len(self.bins) >> 1
        while step:
            nxt = pos + step
            below = tree[nxt]
            if below <= rank:
                pos = nxt
                rank -= below
            step >>= 1
        return self.off + pos, rank

    def locator(self) -> Locate:
        """``find``, or without a tree the same from one cumulative scan (O(B) once)."""
        if self.tree is not None:
            return self.find
        cumulative = list(accumulate(self.bins))
        off = self.off

        def locate(rank: int) -> tuple[int, int]:
            i = bisect_right(cumulative, rank)
            return off + i, rank - (cumulative[i - 1] if i else 0)

        return locate

    def write(self, out: StateWriter) -> None:
        held = self.used()
        if held is None:
            out.sint(0)
            out.counts(array("q"))
            return
        first, last = held
        out.sint(self.off + first)
        out.counts(self.bins[first : last + 1])

    def read(self, source: StateReader) -> None:
        first = source.sint()
        counts = source.counts()
        total = sum(counts)
        if not total:
            if counts:
                raise ValueError("state has an empty store with bins")
            return
        if not counts[0] or not counts[-1]:
            raise ValueError("state has a store whose first or last bin is empty")
        self.bins = counts
        self.off = first
        self.n = total
        self._layout(first, first + len(counts) - 1, (0, len(counts) - 1))


class Sketch:
    """Counts of values by DDSketch bin, both signs and zero (see the module doc).

    ``accuracy`` is DDSketch's ``a`` (0 < a < 1); ``indexed`` keeps Fenwick trees for O(log B)
    rank queries (for a sketch that is queried often; without it, a query scans the bins).
    """

    __slots__ = ("_accuracy", "_lng", "_mult", "_neg", "_pos", "_scale", "_tiny", "_zero")

    def __init__(self, accuracy: float = 0.01, *, indexed: bool = False) -> None:
        if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
            raise ValueError(f"sketch accuracy must be a number, got {accuracy!r}")
        if not 0 < accuracy < 1:
            raise ValueError(f"sketch accuracy must be in (0, 1), got {accuracy!r}")
        self._accuracy = float(accuracy)
        gamma = (1 + self._accuracy) / (1 - self._accuracy)
        # log1p of gamma - 1 = 2a / (1 - a): more accurate than log(gamma) for small a.
        self._lng = math.log1p(2 * self._accuracy / (1 - self._accuracy))
        self._mult = 1 / self._lng
        self._scale = 2 / (1 + gamma)
        self._tiny = sys.float_info.min * gamma
        self._neg = _Store(indexed)
        self._pos = _Store(indexed)
        self._zero = 0

    def index(self) -> None:
        """Keep Fenwick trees from now on (built once, O(B)): after merging many sketches
        into an unindexed one, cheaper than updating the trees merge by merge."""
        self._neg.index()
        self._pos.index()

    @property
    def indexed(self) -> bool:
        return self._pos.indexed

    @property
    def accuracy(self) -> float:
        return self._accuracy

    @property
    def count(self) -> int:
        """Values held."""
        return self._neg.n + self._zero + self._pos.n

    @property
    def bins(self) -> int:
        """Bins allocated (both signs): what the sketch's memory grows with."""
        return len(self._neg.bins) + len(self._pos.bins)

    def add(self, value: float, count: int = 1) -> None:
        """Count ``value`` (finite) ``count`` times (``count`` >= 1)."""
        if not -math.inf < value < math.inf:
            raise ValueError(f"sketch values must be finite, got {value!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if value > self._tiny:
            self._pos.add(math.ceil(math.log(value) * self._mult), count)
        elif value < -self._tiny:
            self._neg.add(math.ceil(math.log(-value) * self._mult), count)
        else:
            self._zero += count

    def merge(self, other: Sketch) -> None:
        """Add every value of ``other`` (same accuracy)."""
        self._check(other)
        for mine, theirs in ((self._neg, other._neg), (self._pos, other._pos)):
            held = theirs.used()
            if held is None:
                continue
            first, last = held
            lo, hi = theirs.off + first, theirs.off + last
            if lo < mine.off or hi >= mine.off + len(mine.bins):
                mine._span(lo, hi)
            _apply(mine, theirs, held, 1)
        self._zero += other._zero

    def subtract(self, other: Sketch) -> None:
        """Remove the values of ``other``, which must all be held here (e.g. a sketch merged
        in earlier); ValueError, nothing changed, if some are not."""
        self._check(other)
        if other._zero > self._zero:
            raise ValueError("cannot subtract a sketch that is not part of this one")
        plan = []
        for mine, theirs in ((self._neg, other._neg), (self._pos, other._pos)):
            held = theirs.used()
            if held is None:
                continue
            first, last = held
            shift = theirs.off - mine.off
            if (
                mine.n < theirs.n
                or first + shift < 0
                or last + shift >= len(mine.bins)
                or any(theirs.bins[i] > mine.bins[i + shift] for i in range(first, last + 1))
            ):
                raise ValueError("cannot subtract a sketch that is not part of this one")
            plan.append((mine, theirs, held))
        for mine, theirs, held in plan:
            _apply(mine, theirs, held, -1)
            mine.shrink()
        self._zero -= other._zero

    def _check(self, other: Sketch) -> None:
        if other._accuracy != self._accuracy:
            raise ValueError(
                f"sketches of different accuracy: {self._accuracy} and {other._accuracy}"
            )

    def value_of(self, key: int) -> float:
        """The magnitude bin ``key`` stands for: ``2 * gamma**key / (1 + gamma)``."""
        try:
            return math.exp(key * self._lng) * self._scale
        except OverflowError:
            # Only the bins of magnitudes within ``a`` of the largest double get here.
            return _TOO_LARGE

    def quantiles(
        self, qs: Sequence[float], *, lower: float | None = None, upper: float | None = None
    ) -> list[float]:
        """pandas' linear ``quantile(q)`` of the values held, for each q in ``qs`` (within the
        module doc's bound). ``lower``/``upper``: the exact min and max, if known (each
        estimate is clamped into them). ValueError on an empty sketch."""
        n = self.count
        if not n:
            raise ValueError("quantiles of an empty sketch")
        if n == self._pos.n and self._pos.tree is not None:
            return self._positive_quantiles(qs, lower, upper)
        neg = self._neg.n
        nonpos = neg + self._zero
        neg_at = self._neg.locator() if neg else None
        pos_at = self._pos.locator() if self._pos.n else None
        value_of = self.value_of
        pos_bins, pos_off = self._pos.bins, self._pos.off
        lo_clamp = -math.inf if lower is None else lower
        hi_clamp = math.inf if upper is None else upper

        def at(rank: int) -> tuple[float, bool]:
            """(estimate of x[rank], whether x[rank + 1] is in the same bin)."""
            if rank < neg:
                assert neg_at is not None
                key, within = neg_at(neg - 1 - rank)  # negatives by decreasing magnitude
                x, same = -value_of(key), within > 0
            elif rank < nonpos:
                x, same = 0.0, rank + 1 < nonpos
            else:
                assert pos_at is not None
                key, within = pos_at(rank - nonpos)
                x, same = value_of(key), within + 1 < pos_bins[key - pos_off]
            return min(max(x, lo_clamp), hi_clamp), same

        out = []
        n1 = n - 1
        for q in qs:
            place = q * n1
            lo = int(place)
            x, same = at(lo)
            if lo == place or same:
                out.append(x)
            else:
                y = at(lo + 1)[0]
                out.append(_lerp(x, y, place - lo))
        return out

    def _positive_quantiles(
        self, qs: Sequence[float], lower: float | None, upper: float | None
    ) -> list[float]:
        """``quantiles`` when every value is positive and the tree is kept (latencies, sizes):
        the same bins found faster, since a long window asks after every event.

        Between two queries a window usually gains one value, so each rank moves by at most
        one and its bin rarely changes: a cursor per q (its bin index, and how many values
        the bins before it hold, which ``add`` keeps current) is walked to the new rank, a
        step per bin crossed. A re-laid or bulk-changed store has no cursors: then each rank
        is found by a Fenwick descent, O(log B), which sets them again."""
        store = self._pos
        bins, off = store.bins, store.off
        lng, scale, exp = self._lng, self._scale, math.exp
        lo_clamp = -math.inf if lower is None else lower
        hi_clamp = math.inf if upper is None else upper
        n1 = store.n - 1
        cursors = store.cursors
        if cursors is None or store.cursor_qs != qs:
            cursors = []
            for q in qs:
                lo = int(q * n1)
                key, within = store.find(lo)
                cursors.append([key - off, lo - within])
            store.cursors = cursors
            store.cursor_qs = qs
        out = []
        for q, cursor in zip(qs, cursors, strict=True):
            place = q * n1
            lo = int(place)
            i, below = cursor
            while lo < below:
                i -= 1
                below -= bins[i]
            while lo >= below + bins[i]:
                below += bins[i]
                i += 1
            cursor[0] = i
            cursor[1] = below
            try:
                x = exp((off + i) * lng) * scale
            except OverflowError:
                x = _TOO_LARGE
            if x < lo_clamp:
                x = lo_clamp
            elif x > hi_clamp:
                x = hi_clamp
            if lo == place or lo + 1 < below + bins[i]:
                out.append(x)
                continue
            y = self.value_of(store.find(lo + 1)[0])
            y = min(max(y, lo_clamp), hi_clamp)
            out.append(_lerp(x, y, place - lo))
        return out

    # -- bytes ------------------------------------------------------------------------------

    def write_bins(self, out: StateWriter) -> None:
        """The counts alone (a caller that knows the accuracy embeds sketches this way)."""
        out.uint(self._zero)
        self._neg.write(out)
        self._pos.write(out)

    def read_bins(self, source: StateReader) -> None:
        """Load counts written by ``write_bins`` into this EMPTY sketch."""
        if self.count:
            raise ValueError("read_bins needs an empty sketch")
        self._zero = source.uint()
        self._neg.read(source)
        self._pos.read(source)

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.uint(_VERSION)
        out.double(self._accuracy)
        self.write_bins(out)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, *, indexed: bool = False) -> Sketch:
        source = StateReader(data)
        version = source.uint()
        if version != _VERSION:
            raise ValueError(f"sketch bytes of version {version}, expected {_VERSION}")
        sketch = cls(source.double(), indexed=indexed)
        sketch.read_bins(source)
        source.done()
        return sketch


def _apply(mine: _Store, theirs: _Store, held: tuple[int, int], sign: int) -> None:
    """Add (``sign`` 1) or remove (-1) ``theirs``' bins ``held`` into ``mine``, whose range
    covers them: bin by bin through the tree when that is cheaper than rebuilding it."""
    first, last = held
    shift = theirs.off - mine.off
    src = theirs.bins
    dst = mine.bins
    nonzero = [(i + shift, sign * src[i]) for i in range(first, last + 1) if src[i]]
    tree = mine.tree
    if tree is not None and len(nonzero) * len(dst).bit_length() < len(dst):
        for i, count in nonzero:
            mine.add(mine.off + i, count)
        return
    total = 0
    for i, count in nonzero:
        dst[i] += count
        total += count
    mine.n += total
    if tree is not None:
        mine._build_tree()
