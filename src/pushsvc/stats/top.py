"""Top values: exact counts ranked, and the Space-Saving summary (pure).

``top_<tag>`` (docs/design.md) lists at most k values of a tag with their counts in a window,
by count descending then value ascending.

* ``RankedCounts``: value -> count and a histogram of the counts, with a prefix of the
  ranking cached (the top k and a reserve), so an event costs O(1) dict work and reading the
  top k after it seldom more than a copy.
  Windows that hold their events anyway (exact time windows, count windows) count exactly
  with it, at any number of values.
* ``SpaceSaving`` (Metwally, Agrawal & El Abbadi 2005): m counters. A monitored value's
  counter goes up by one; an unmonitored value takes the smallest counter's place with that
  count plus one. Every counter ``ĉ`` then satisfies ``c <= ĉ <= c + floor`` where ``floor``
  (the smallest counter, 0 while nothing was ever replaced) is at most ``n / m``, and a value
  not monitored has ``c <= floor``. While it has seen at most m values it is exact.
* ``BucketedTop``: a long window's top values from the Space-Saving summaries of its
  sub-buckets (each with m counters). A value's estimate is the sum over the window's
  sub-buckets of its counter there, or that sub-bucket's ``floor`` where it is not monitored.
  Each term lies between the true count in the sub-bucket and that plus its floor, so
  ``c <= ĉ <= c + sum(floors) <= c + N / m`` over the N events of the window, and a value
  monitored nowhere has ``c <= sum(floors)``: a value with ``c > N / m`` is monitored
  somewhere, so ranking every monitored value misses none. ``sum(floors)`` is what each
  listed count publishes as its ``error``: the tightest bound these counters know, at most
  ``N / m``, 0 while no sub-bucket in the window replaced a value. The window keeps the estimates
  ranked (``RankedCounts``, less the sum of the floors, which every estimate shares), so an
  event costs O(log m) amortised, a sub-bucket leaving O(m log m), and the top k are read
  off the ranking.
* ``MergedTop``: Space-Saving summaries merged (a series bucket's top values over its finer
  buckets), by Agarwal et al.'s merge ("Mergeable summaries", 2012), below.

Not thread- or greenlet-safe; nothing here yields.
"""

from __future__ import annotations

import heapq

from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["MAX_K", "BucketedTop", "MergedTop", "RankedCounts", "SpaceSaving", "counters_for"]

MAX_K = 100
"""The largest k a rule may ask for."""

Ranked = list[tuple[str, int]]

# Entries ``RankedCounts`` keeps ranked beyond the k it is read for: a listed value whose count
# falls to the end of the list, where an unlisted value may now pass it, leaves the list
# instead of forcing a rebuild; a rebuild is due only once fewer than k are left.
_RESERVE_MIN = 8


def counters_for(k: int) -> int:
    """Space-Saving counters (and the number of different values a window counts exactly) for
    a top k: ``max(1000, 20 k)``."""
    return max(1000, 20 * k)


class RankedCounts:
    """Counts of values, ranked by count descending then value ascending.

    Each value's count, a histogram (count -> how many values have it) and a cached list of
    the ranking's first entries: the k a reader asks for and as many again (at least
    ``reserve``), so the list is always a prefix of the ranking. A change is O(1) dict
    work on a dict of the values and one of the counts; no set of values per count is kept
    (windows of many values spent most of their time moving values between such sets, and
    the sets crowded the caches). The list changes only near the value that moved:

    * a count going up moves its entry up past the entries it now beats, or an unlisted value
      into the list when it passes the last entry (the list's last entry then drops out when
      the list is full);
    * a listed count going down moves its entry down; if it ends up last and an unlisted value
      may now rank before it (the histogram holds a value, not listed, with a count between
      its new and its old count), it leaves the list, which stays a prefix, one shorter;
    * only when fewer than k entries are left while values are not listed is the list made
      again, from the histogram's largest counts: one pass over the counts.

    Windows read the top k after every event; most events change no listed value."""

    __slots__ = (
        "_all", "_hist", "_k", "_keep", "_listed", "_reserve", "_top", "counts", "version",
    )  # fmt: skip

    def __init__(self, reserve: int = _RESERVE_MIN) -> None:
        self._reserve = reserve  # at least this many entries kept beyond k (and at least k)
        self.counts: dict[str, int] = {}
        self._hist: dict[int, int] = {}  # count -> how many values have it
        self._k = 0
        self._keep = 0  # the list's length when full: k plus the reserve
        self._top: list[tuple[str, int]] | None = None  # a prefix of the ranking, or None
        self._listed: set[str] = set()
        self._all = False  # the list holds every value
        self.version = 0
        """Changes whenever the top k may have: what a reader caches its rendering by."""

    def __len__(self) -> int:
        return len(self.counts)

    def add(self, value: str, n: int = 1) -> None:
        """Count ``value`` ``n`` more times (``n`` may be negative; a count never goes below 0)."""
        if not n:
            return
        counts = self.counts
        old = counts.get(value, 0)
        new = old + n
        if new < 0:
            raise ValueError(f"count of {value!r} below zero")
        hist = self._hist
        if old:
            left = hist[old] - 1
            if left:
                hist[old] = left
            else:
                del hist[old]
        if new:
            counts[value] = new
            hist[new] = hist.get(new, 0) + 1
        else:
            del counts[value]
        top = self._top
        if top is None:
            return
        if value in self._listed:
            self._move(top, value, old, new)
        elif n > 0:
            # Whether it joins the list, here rather than in ``_enter``: most values rank
            # after the last entry, and they leave without a call.
            if not (self._all and len(top) < self._keep) and (
                not top or new < top[-1][1] or (new == top[-1][1] and value > top[-1][0])
            ):
                self._all = False  # it ranks after the last entry: no longer listed
                return
            self._enter(top, value, new)
        # An unlisted count going down still ranks after every listed entry.

    def _move(self, top: list[tuple[str, int]], value: str, old: int, new: int) -> None:
        """A listed value's count went from ``old`` to ``new``."""
        i = 0
        while top[i][0] != value:
            i += 1
        was = i
        if new > old:
            i = _rise(top, i, value, new)
        else:
            last = len(top) - 1
            while i < last and (
                top[i + 1][1] > new or (top[i + 1][1] == new and top[i + 1][0] < value)
            ):
                top[i] = top[i + 1]
                i += 1
            top[i] = (value, new)
            if i == last and (not new or (not self._all and self._may_pass(top, new, old))):
                del top[i]
                self._listed.discard(value)
                if len(top) < self._k and not self._all:
                    self._top = None  # rebuilt on the next read
        if min(was, i) < self._k:
            self.version += 1

    def _enter(self, top: list[tuple[str, int]], value: str, new: int) -> None:
        """An unlisted value's count went up to ``new`` and it joins the list: it passed the
        last entry, or the list holds every value and has room."""
        if len(top) >= self._keep:
            self._listed.discard(top.pop()[0])
            self._all = False
        top.append((value, new))
        self._listed.add(value)
        if _rise(top, len(top) - 1, value, new) < self._k:
            self.version += 1

    def _may_pass(self, top: list[tuple[str, int]], new: int, old: int) -> bool:
        """Whether a value not listed may rank before the list's last entry, which just fell
        from ``old`` to ``new``: unlisted values ranked after it at ``old``, so one with a count
        in ``[new, old]`` may (at ``new``, by value: unsure, so yes)."""
        hist = self._hist
        if old - new <= len(top):
            held = [(c, hist[c]) for c in range(new, old + 1) if c in hist]
        else:
            held = [(c, h) for c, h in hist.items() if new <= c <= old]
        if not held:
            return False
        listed: dict[int, int] = {}
        for _, count in top:
            if new <= count <= old:
                listed[count] = listed.get(count, 0) + 1
        return any(h > listed.get(c, 0) for c, h in held)

    def top(self, k: int) -> Ranked:
        if self._top is None or k != self._k:
            self._rebuild(k)
        assert self._top is not None
        return self._top[:k]

    def _rebuild(self, k: int) -> None:
        keep = k + max(k, self._reserve)
        counts = self.counts
        if len(counts) <= keep:
            chosen = sorted(counts.items(), key=_rank)
            self._all = True
        else:
            # The smallest count that the first `keep` values reach, from the histogram.
            held = 0
            for floor in sorted(self._hist, reverse=True):
                held += self._hist[floor]
                if held >= keep:
                    break
            candidates = [(value, c) for value, c in counts.items() if c >= floor]
            chosen = heapq.nsmallest(keep, candidates, key=_rank)
            self._all = False
        self._k = k
        self._keep = keep
        self._top = chosen
        self._listed = {value for value, _ in chosen}
        self.version += 1


def _rise(top: list[tuple[str, int]], i: int, value: str, count: int) -> int:
    """Put ``(value, count)`` at ``top[i]`` or before it, past the entries it now beats (by
    count descending, then value ascending); where it ends up."""
    while i and (count > top[i - 1][1] or (count == top[i - 1][1] and value < top[i - 1][0])):
        top[i] = top[i - 1]
        i -= 1
    top[i] = (value, count)
    return i


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


class SpaceSaving:
    """Metwally et al.'s Space-Saving with ``capacity`` counters (module doc), kept as
    buckets of values by counter (the "stream summary"): O(1) dict work per value. Among the
    values with the smallest counter, the one that reached it first is replaced; the state
    keeps that order."""

    __slots__ = ("_by", "_min", "capacity", "counts", "floor", "n", "replaced")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("Space-Saving needs at least one counter")
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self._by: dict[int, dict[str, None]] = {}  # counter -> its values, in arrival order
        self._min = 0
        self.n = 0
        self.replaced = False
        self.floor = 0
        """A bound on the count of any value not monitored, and on every counter's excess:
        the smallest counter once a value was replaced, 0 before."""

    def _put(self, value: str, count: int) -> None:
        self.counts[value] = count
        bucket = self._by.get(count)
        if bucket is None:
            self._by[count] = {value: None}
        else:
            bucket[value] = None

    def add(self, value: str) -> tuple[int, str | None, int]:
        """Count one ``value``: ``(how much its counter rose, the value it replaced or None,
        that value's counter)``."""
        self.n += 1
        counts = self.counts
        by = self._by
        old = counts.get(value)
        if old is not None:
            bucket = by[old]
            del bucket[value]
            self._put(value, old + 1)
            if not bucket:
                del by[old]
                if old == self._min:
                    self._min = old + 1
                    if self.replaced:
                        self.floor = self._min
            return 1, None, 0
        if len(counts) < self.capacity:
            self._put(value, 1)
            self._min = 1
            return 1, None, 0
        low = self._min
        bucket = by[low]
        gone = next(iter(bucket))
        del bucket[gone], counts[gone]
        self._put(value, low + 1)
        if not bucket:
            del by[low]
            self._min = low + 1
        self.replaced = True
        self.floor = self._min
        return low + 1, gone, low

    def write(self, out: StateWriter) -> None:
        out.uint(self.n)
        out.uint(self.replaced)
        out.uint(len(self.counts))
        for count in sorted(self._by):
            for value in self._by[count]:
                out.text(value)
                out.uint(count)

    @classmethod
    def read(cls, source: StateReader, capacity: int) -> SpaceSaving:
        self = cls(capacity)
        self.n = source.uint()
        self.replaced = bool(source.uint())
        previous = 0
        for _ in range(source.uint()):
            value = source.text()
            count = source.uint()
            if count < max(1, previous) or value in self.counts:
                raise ValueError("top state: counters out of order, of 0, or a value twice")
            previous = count
            self._put(value, count)
        if len(self.counts) > capacity:
            raise ValueError("top state: more counters than the rule gives")
        self._min = min(self._by, default=0)
        self.floor = self._min if self.replaced else 0
        return self


class BucketedTop:
    """One long window's top values over Space-Saving sub-buckets (module doc). Sub-bucket
    indexes are the caller's (``LongWindows``'s); ``evict`` drops those before one.

    Kept ranked: each value's estimate minus the window's sum of floors, i.e. the sum over the
    sub-buckets monitoring it of its counter's excess over that sub-bucket's floor. An event
    changes one value's excess (and the one it replaced, whose excess is 0); a sub-bucket's
    floor rising by d lowers every excess there by d, O(m log m), which happens at most
    n / m times in a sub-bucket of n events: O(log m) an event, amortised."""

    __slots__ = ("_capacity", "_floors", "_ranked", "_subs", "n")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._subs: dict[int, SpaceSaving] = {}
        self._ranked = RankedCounts()  # value -> sum of its counters' excess over the floors
        self._floors = 0
        self.n = 0

    @property
    def exact(self) -> bool:
        return not self._floors

    @property
    def error(self) -> int:
        """The sum of the window's sub-buckets' floors: how far any estimate may exceed the
        true count, the tightest bound these counters give (a value's term in a sub-bucket
        is off by up to that sub-bucket's floor, monitored or not), at most ``N / m``."""
        return self._floors

    @property
    def ranking(self) -> tuple[int, int]:
        """Changes whenever the top k, their estimates or the error may have."""
        return self._ranked.version, self._floors

    def add(self, bucket: int, value: str) -> None:
        sub = self._subs.get(bucket)
        if sub is None:
            sub = self._subs[bucket] = SpaceSaving(self._capacity)
        ranked = self._ranked
        counts = sub.counts
        before = sub.floor
        old = counts.get(value)
        # The value's excess here before; its ranking changes once, by the difference (a
        # fall then a rise would drop it from a cached top list for nothing).
        was = old - before if old is not None and old > before else 0
        _, gone, gone_count = sub.add(value)
        if gone is not None and gone_count > before:
            ranked.add(gone, before - gone_count)
        after = sub.floor
        if after != before:
            for other in counts:
                if other != value:
                    ranked.add(other, before - after)
            self._floors += after - before
        ranked.add(value, counts[value] - after - was)
        self.n += 1

    def evict(self, first: int) -> bool:
        """Drop the sub-buckets before ``first``; True iff one held an event."""
        gone = [b for b in self._subs if b < first]
        for b in gone:
            sub = self._subs.pop(b)
            floor = sub.floor
            for value, count in sub.counts.items():
                if count > floor:
                    self._ranked.add(value, floor - count)
            self._floors -= floor
            self.n -= sub.n
        return bool(gone)

    def top(self, k: int) -> Ranked:
        floors = self._floors
        return [(value, floors + excess) for value, excess in self._ranked.top(k)]

    def write(self, out: StateWriter) -> None:
        out.uint(len(self._subs))
        for b in sorted(self._subs):
            out.sint(b)
            self._subs[b].write(out)

    @classmethod
    def read(cls, source: StateReader, capacity: int) -> BucketedTop:
        self = cls(capacity)
        for _ in range(source.uint()):
            b = source.sint()
            sub = SpaceSaving.read(source, capacity)
            self._subs[b] = sub
            for value, count in sub.counts.items():
                self._ranked.add(value, count - sub.floor)
            self._floors += sub.floor
            self.n += sub.n
        return self


class MergedTop:
    """A Space-Saving summary of ``capacity`` (m) counters that merges with others, for events
    no one summary saw (a series' coarser bucket over its finer buckets); never counts events
    itself. ``of`` takes a ``SpaceSaving``'s counters and floor.

    The invariant of every such summary: each counter ``ĉ`` has ``c <= ĉ <= c + floor``, a
    value not monitored has ``c <= floor``, and ``sum(ĉ - floor) + m * floor <= n`` (a
    ``SpaceSaving`` has equality: its counters sum to n and, once it replaced, are m). Merging
    (Agarwal, Cormode, Huang, Phillips, Wei & Yi, "Mergeable summaries", 2012, their
    Misra-Gries merge in Space-Saving's terms): a value's estimate is the sum of its counters,
    the other summary's floor standing in where it is not monitored, and the floor the sum of
    the floors, which keeps the invariant; beyond m values, the (m+1)-th largest estimate
    becomes the floor and only the values above it stay monitored (their estimates unchanged).
    Raising the floor by d adds m * d to the invariant's left side and takes at least d off
    each of the m + 1 largest estimates' ``ĉ - floor`` (a kept one loses d, a dropped one all
    of it), so it holds, and with it ``floor <= n / m``: every counter within
    ``[c, c + n / m]`` and every value with ``c > n / m`` monitored, over any number of merges
    in any order. While no input replaced a value and the values merged number at most m, it
    is exact (floor 0)."""

    __slots__ = ("capacity", "counts", "floor", "n")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("Space-Saving needs at least one counter")
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.floor = 0
        self.n = 0

    @classmethod
    def of(cls, summary: SpaceSaving) -> MergedTop:
        self = cls(summary.capacity)
        self.counts = dict(summary.counts)
        self.floor = summary.floor
        self.n = summary.n
        return self

    @property
    def exact(self) -> bool:
        return not self.floor

    @property
    def error(self) -> int:
        """The floor: how far any counter may exceed the true count, the tightest bound the
        summary keeps, at most ``n / m``."""
        return self.floor

    def merge(self, other: MergedTop) -> None:
        """Fold ``other`` (of the same capacity) in."""
        mine, theirs = self.counts, other.counts
        floor, their_floor = self.floor, other.floor
        merged = {value: count + theirs.get(value, their_floor) for value, count in mine.items()}
        for value, count in theirs.items():
            if value not in mine:
                merged[value] = floor + count
        floor += their_floor
        if len(merged) > self.capacity:
            floor = heapq.nlargest(self.capacity + 1, merged.values())[-1]
            merged = {value: count for value, count in merged.items() if count > floor}
        self.counts = merged
        self.floor = floor
        self.n += other.n

    def top(self, k: int) -> Ranked:
        return heapq.nsmallest(k, self.counts.items(), key=_rank)

    def write(self, out: StateWriter) -> None:
        out.uint(self.n)
        out.uint(self.floor)
        out.uint(len(self.counts))
        for value in sorted(self.counts):
            out.text(value)
            out.uint(self.counts[value])

    @classmethod
    def read(cls, source: StateReader, capacity: int) -> MergedTop:
        self = cls(capacity)
        self.n = source.uint()
        self.floor = source.uint()
        for _ in range(source.uint()):
            value = source.text()
            count = source.uint()
            if count < max(1, self.floor) or value in self.counts:
                raise ValueError("top state: a counter below the floor, of 0, or a value twice")
            self.counts[value] = count
        if len(self.counts) > capacity:
            raise ValueError("top state: more counters than the rule gives")
        return self
