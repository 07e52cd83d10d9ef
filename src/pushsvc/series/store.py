"""`SeriesStore`: the memory broker's points, compact (pure).

One series (a tier of a topic or of a group) holds its points in ascending start, and no
object per point; a read bisects on the starts; trimming to the retention deletes from the
front, which a bytearray does without moving the rest. Two layouts:

* **Fixed-size records** while every point of the series has the same size (no top lists):
  one `bytearray` of the bucket's start (int64) then the point's stored form
  (`pushsvc.rules.point`). 80 bytes a point, 8 more per distinct count its rule keeps.
* **Variable-size records** from the first point of another size (top lists vary with their
  values): the points' stored forms end to end in one `bytearray`, and two int64 arrays of
  each point's start and where it ends. 16 bytes a point besides its stored form.

A correction (`pushsvc.series.buckets`: a late event amended a bucket published before)
replaces the point of its start in place, when it is of a higher revision than the one held;
a series keeps the revisions of its corrected points only (a dict, as few as corrections). A
late event into a bucket that had no event makes a point older than the newest: it is
inserted in its place (records after it move; rare, and near the end).
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from collections.abc import Hashable

from pushsvc.rules.point import PACKED_SIZE

__all__ = ["RECORD_SIZE", "SeriesStore"]

_START = struct.Struct("<q")
RECORD_SIZE = _START.size + PACKED_SIZE
"""A fixed-size record's size without distinct counts."""

Page = tuple[list[tuple[int, bytes]], bool]


class _Fixed:
    """Records of one size: a start, then a stored point."""

    __slots__ = ("records", "size")

    def __init__(self, size: int) -> None:
        self.records = bytearray()
        self.size = size

    def __len__(self) -> int:
        return len(self.records) // self.size

    def newest(self) -> int:
        return int(_START.unpack_from(self.records, len(self.records) - self.size)[0])

    def append(self, t_us: int, packed: bytes) -> None:
        self.records += _START.pack(t_us)
        self.records += packed

    def first_after(self, t_us: int) -> int:
        """The index of the first point starting after `t_us`."""
        records, size = self.records, self.size
        lo, hi = 0, len(records) // size
        while lo < hi:
            mid = (lo + hi) // 2
            if _START.unpack_from(records, mid * size)[0] <= t_us:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def cut(self, count: int) -> None:
        """Drop the oldest `count` points."""
        del self.records[: count * self.size]

    def start(self, index: int) -> int:
        return int(_START.unpack_from(self.records, index * self.size)[0])

    def replace(self, index: int, packed: bytes) -> None:
        """The point at `index` by `packed`, of the same size."""
        at = index * self.size + _START.size
        self.records[at : at + len(packed)] = packed

    def insert(self, index: int, t_us: int, packed: bytes) -> None:
        """A point of the same size before the one at `index`."""
        at = index * self.size
        self.records[at:at] = _START.pack(t_us) + packed

    def points(self, first: int, last: int) -> list[tuple[int, bytes]]:
        records, size = self.records, self.size
        view = memoryview(records)
        return [
            (_START.unpack_from(records, at)[0], bytes(view[at + _START.size : at + size]))
            for at in range(first * size, last * size, size)
        ]

    def nbytes(self) -> int:
        return len(self.records)


class _Varying:
    """Points of any size end to end, with arrays of their starts and ends. `base` is what
    trimming took off the front, so the ends stay as they were written."""

    __slots__ = ("base", "data", "ends", "starts")

    def __init__(self) -> None:
        self.data = bytearray()
        self.starts = array("q")
        self.ends = array("q")
        self.base = 0

    @classmethod
    def of(cls, fixed: _Fixed) -> _Varying:
        self = cls()
        for t_us, packed in fixed.points(0, len(fixed)):
            self.append(t_us, packed)
        return self

    def __len__(self) -> int:
        return len(self.starts)

    def newest(self) -> int:
        return self.starts[-1]

    def append(self, t_us: int, packed: bytes) -> None:
        self.data += packed
        self.starts.append(t_us)
        self.ends.append(self.base + len(self.data))

    def first_after(self, t_us: int) -> int:
        return bisect_right(self.starts, t_us)

    def cut(self, count: int) -> None:
        if not count:
            return
        end = self.ends[count - 1]
        del self.data[: end - self.base]
        del self.starts[:count], self.ends[:count]
        self.base = end

    def start(self, index: int) -> int:
        return self.starts[index]

    def replace(self, index: int, packed: bytes) -> None:
        """The point at `index` by `packed`, of any size: the points after it move."""
        base, ends = self.base, self.ends
        begin = ends[index - 1] - base if index else 0
        end = ends[index] - base
        self.data[begin:end] = packed
        delta = len(packed) - (end - begin)
        if delta:
            for at in range(index, len(ends)):
                ends[at] += delta

    def insert(self, index: int, t_us: int, packed: bytes) -> None:
        """A point before the one at `index`: the points after it move."""
        base, ends = self.base, self.ends
        at = ends[index - 1] - base if index else 0
        self.data[at:at] = packed
        for later in range(index, len(ends)):
            ends[later] += len(packed)
        self.starts.insert(index, t_us)
        self.ends.insert(index, base + at + len(packed))

    def points(self, first: int, last: int) -> list[tuple[int, bytes]]:
        view, base, ends = memoryview(self.data), self.base, self.ends
        begin = ends[first - 1] - base if first else 0
        out = []
        for index in range(first, last):
            end = ends[index] - base
            out.append((self.starts[index], bytes(view[begin:end])))
            begin = end
        return out

    def nbytes(self) -> int:
        return len(self.data) + (len(self.starts) + len(self.ends)) * self.starts.itemsize


class SeriesStore:
    """Points by series key (any hashable the broker chooses). Not greenlet-safe."""

    def __init__(self) -> None:
        self._series: dict[Hashable, _Fixed | _Varying] = {}
        # Of each series with corrected points: start -> the revision held.
        self._revisions: dict[Hashable, dict[int, int]] = {}

    def append(self, key: Hashable, t_us: int, packed: bytes, revision: int = 0) -> bool:
        """Keep a point: after the newest of its series, or in its place among them (a
        bucket a late event made, published after later ones), or (`revision` above 0: a
        correction) in place of the point of its start held at a lower revision. False
        (nothing kept) when that point, or a later revision of it, is held already."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Fixed(_START.size + len(packed))
        elif series.newest() >= t_us:
            return self._correct(key, series, t_us, packed, revision)
        elif isinstance(series, _Fixed) and series.size != _START.size + len(packed):
            series = self._series[key] = _Varying.of(series)
        series.append(t_us, packed)
        if revision:
            self._revisions.setdefault(key, {})[t_us] = revision
        return True

    def _correct(
        self, key: Hashable, series: _Fixed | _Varying, t_us: int, packed: bytes, revision: int
    ) -> bool:
        index = series.first_after(t_us)
        held = index > 0 and series.start(index - 1) == t_us
        if held:
            revisions = self._revisions.get(key)
            if (0 if revisions is None else revisions.get(t_us, 0)) >= revision:
                return False
        if isinstance(series, _Fixed) and series.size != _START.size + len(packed):
            series = self._series[key] = _Varying.of(series)
        if held:
            series.replace(index - 1, packed)
        else:
            series.insert(index, t_us, packed)
        if revision:
            self._revisions.setdefault(key, {})[t_us] = revision
        return True

    def trim(self, key: Hashable, before_us: int) -> None:
        """Drop the points of `key` starting at or before `before_us`."""
        series = self._series.get(key)
        if series is None:
            return
        series.cut(series.first_after(before_us))
        revisions = self._revisions.get(key)
        if revisions is not None:
            for start in [s for s in revisions if s <= before_us]:
                del revisions[start]
            if not revisions:
                del self._revisions[key]
        if not len(series):
            del self._series[key]

    def read(self, key: Hashable, since_us: int, until_us: int, limit: int) -> Page:
        """Up to `limit` points starting in `[since_us, until_us)`, ascending, and whether
        more matched."""
        series = self._series.get(key)
        if series is None:
            return [], False
        first = series.first_after(since_us - 1)
        end = series.first_after(until_us - 1)
        last = min(end, first + limit)
        return series.points(first, last), end > last

    def drop(self, key: Hashable) -> None:
        self._series.pop(key, None)
        self._revisions.pop(key, None)

    def __len__(self) -> int:
        """Series held."""
        return len(self._series)

    def bytes_used(self) -> int:
        """The records' bytes (what grows with points)."""
        return sum(series.nbytes() for series in self._series.values())
