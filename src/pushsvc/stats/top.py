"""Top values: exact counts ranked, and the Space-Saving summary (pure).

``top_<tag>`` (docs/design.md) lists at most k values of a tag with their counts in a window,
by count descending then value ascending.

* ``RankedCounts``: value -> count, kept ranked (a ``SortedList`` of ``(-count, value)``), so
  an event costs O(log D) for D values and the top k are the first k: no sort per update.
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
  somewhere, so ranking every monitored value misses none. The window keeps the sum of each
  value's counters ranked (``RankedCounts``), so an event costs O(log) and a sub-bucket
  leaving O(m log); reading the top k adds the floors to the best candidates only, and
  stops as soon as no further candidate can reach the k-th estimate.

Not thread- or greenlet-safe; nothing here yields.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedList

from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["MAX_K", "BucketedTop", "RankedCounts", "SpaceSaving", "counters_for"]

MAX_K = 100
"""The largest k a rule may ask for."""

Ranked = list[tuple[str, int]]


def counters_for(k: int) -> int:
    """Space-Saving counters (and the number of different values a window counts exactly) for
    a top k: ``max(1000, 20 k)``."""
    return max(1000, 20 * k)


class RankedCounts:
    """Counts of values, ranked by count descending then value ascending."""

    __slots__ = ("_ranks", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._ranks: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self.counts)

    def add(self, value: str, n: int = 1) -> None:
        """Count ``value`` ``n`` more times (``n`` may be negative; a count never goes below 0)."""
        counts = self.counts
        old = counts.get(value, 0)
        new = old + n
        if old:
            self._ranks.remove((-old, value))
        if new > 0:
            counts[value] = new
            self._ranks.add((-new, value))
        elif old:
            del counts[value]
        if new < 0:
            raise ValueError(f"count of {value!r} below zero")

    def top(self, k: int) -> Ranked:
        return [(value, -negated) for negated, value in self._ranks.islice(0, k)]

    def ranked(self) -> Iterator[tuple[str, int]]:
        for negated, value in self._ranks:
            yield value, -negated


class SpaceSaving:
    """Metwally et al.'s Space-Saving with ``capacity`` counters (module doc)."""

    __slots__ = ("_mins", "capacity", "counts", "n", "replaced")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("Space-Saving needs at least one counter")
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self._mins: SortedList = SortedList()  # (count, value)
        self.n = 0
        self.replaced = False

    @property
    def floor(self) -> int:
        """A bound on the count of any value not monitored (and on every counter's excess)."""
        return self._mins[0][0] if self.replaced else 0

    def add(self, value: str) -> tuple[int, str | None, int]:
        """Count one ``value``: ``(how much its counter rose, the value it replaced or None,
        that value's counter)``."""
        self.n += 1
        counts = self.counts
        old = counts.get(value)
        if old is not None:
            self._mins.remove((old, value))
            counts[value] = old + 1
            self._mins.add((old + 1, value))
            return 1, None, 0
        if len(counts) < self.capacity:
            counts[value] = 1
            self._mins.add((1, value))
            return 1, None, 0
        low, gone = self._mins.pop(0)
        del counts[gone]
        counts[value] = low + 1
        self._mins.add((low + 1, value))
        self.replaced = True
        return low + 1, gone, low

    def write(self, out: StateWriter) -> None:
        out.uint(self.n)
        out.uint(self.replaced)
        out.uint(len(self.counts))
        for value, count in sorted(self.counts.items()):
            out.text(value)
            out.uint(count)

    @classmethod
    def read(cls, source: StateReader, capacity: int) -> SpaceSaving:
        self = cls(capacity)
        self.n = source.uint()
        self.replaced = bool(source.uint())
        for _ in range(source.uint()):
            value = source.text()
            count = source.uint()
            if count < 1 or value in self.counts:
                raise ValueError("top state: a counter of 0 or a value twice")
            self.counts[value] = count
            self._mins.add((count, value))
        if len(self.counts) > capacity:
            raise ValueError("top state: more counters than the rule gives")
        return self


class BucketedTop:
    """One long window's top values over Space-Saving sub-buckets (module doc). Sub-bucket
    indexes are the caller's (``LongWindows``'s); ``evict`` drops those before one."""

    __slots__ = ("_capacity", "_floors", "_ranked", "_subs", "n")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._subs: dict[int, SpaceSaving] = {}
        self._ranked = RankedCounts()  # value -> sum of its counters over the sub-buckets
        self._floors = 0
        self.n = 0

    @property
    def exact(self) -> bool:
        return not self._floors

    @property
    def error(self) -> float:
        """``N / m``: the bound on every estimate's excess."""
        return self.n / self._capacity

    def add(self, bucket: int, value: str) -> None:
        sub = self._subs.get(bucket)
        if sub is None:
            sub = self._subs[bucket] = SpaceSaving(self._capacity)
        before = sub.floor
        rise, gone, gone_count = sub.add(value)
        self._ranked.add(value, rise)
        if gone is not None:
            self._ranked.add(gone, -gone_count)
        self._floors += sub.floor - before
        self.n += 1

    def evict(self, first: int) -> bool:
        """Drop the sub-buckets before ``first``; True iff one held an event."""
        gone = [b for b in self._subs if b < first]
        for b in gone:
            sub = self._subs.pop(b)
            for value, count in sub.counts.items():
                self._ranked.add(value, -count)
            self._floors -= sub.floor
            self.n -= sub.n
        return bool(gone)

    def top(self, k: int) -> Ranked:
        if not self._floors:
            return self._ranked.top(k)
        floors = self._floors
        subs = self._subs.values()
        best: list[tuple[int, str]] = []  # (-estimate, value), sorted, at most k
        for value, monitored in self._ranked.ranked():
            if len(best) == k and monitored + floors < -best[-1][0]:
                break  # no later value (fewer counts) can reach the k-th estimate
            estimate = monitored + floors - sum(s.floor for s in subs if value in s.counts)
            item = (-estimate, value)
            if len(best) < k or item < best[-1]:
                best.append(item)
                best.sort()
                del best[k:]
        return [(value, -negated) for negated, value in best]

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
                self._ranked.add(value, count)
            self._floors += sub.floor
            self.n += sub.n
        return self
