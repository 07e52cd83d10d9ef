"""`SeriesStore`: the memory broker's points, compact (pure).

One `bytearray` per series (a tier of a topic or of a group): fixed-size records of the
bucket's start (int64) and the point's stored form (`pushsvc.rules.point`), in ascending
start. 80 bytes a point (8 more per distinct count its rule keeps: a series' record size is
its first point's) and no object per point; a read bisects on the starts; trimming to
the retention deletes from the front, which a bytearray does without moving the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable

from pushsvc.rules.point import PACKED_SIZE

__all__ = ["RECORD_SIZE", "SeriesStore"]

_START = struct.Struct("<q")
RECORD_SIZE = _START.size + PACKED_SIZE
"""A record's size without distinct counts."""


class SeriesStore:
    """Points by series key (any hashable the broker chooses). Not greenlet-safe."""

    def __init__(self) -> None:
        self._series: dict[Hashable, bytearray] = {}
        self._sizes: dict[Hashable, int] = {}

    def append(self, key: Hashable, t_us: int, packed: bytes) -> bool:
        """Keep a point after the newest of its series; False (nothing kept) when it is not
        after it: a bucket closes once, so that point is held already."""
        records = self._series.get(key)
        size = _START.size + len(packed)
        if records is None:
            records = self._series[key] = bytearray()
            self._sizes[key] = size
        elif _START.unpack_from(records, len(records) - self._sizes[key])[0] >= t_us:
            return False
        elif size != self._sizes[key]:
            raise ValueError("a point of another size than its series' (rules changed)")
        records += _START.pack(t_us)
        records += packed
        return True

    def trim(self, key: Hashable, before_us: int) -> None:
        """Drop the points of `key` starting at or before `before_us`."""
        records = self._series.get(key)
        if records is None:
            return
        size = self._sizes[key]
        cut = _first_after(records, before_us, size)
        if cut:
            del records[: cut * size]
        if not records:
            del self._series[key], self._sizes[key]

    def read(
        self, key: Hashable, since_us: int, until_us: int, limit: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """Up to `limit` points starting in `[since_us, until_us)`, ascending, and whether
        more matched."""
        records = self._series.get(key)
        if records is None:
            return [], False
        size = self._sizes[key]
        first = _first_after(records, since_us - 1, size)
        end = _first_after(records, until_us - 1, size)
        last = min(end, first + limit)
        view = memoryview(records)
        points = [
            (_START.unpack_from(records, at)[0], bytes(view[at + _START.size : at + size]))
            for at in range(first * size, last * size, size)
        ]
        return points, end > last

    def drop(self, key: Hashable) -> None:
        self._series.pop(key, None)
        self._sizes.pop(key, None)

    def __len__(self) -> int:
        """Series held."""
        return len(self._series)

    def bytes_used(self) -> int:
        """The records' bytes (what grows with points)."""
        return sum(len(records) for records in self._series.values())


def _first_after(records: bytearray, t_us: int, size: int) -> int:
    """The index of the first record (of `size` bytes) starting after `t_us`."""
    lo, hi = 0, len(records) // size
    while lo < hi:
        mid = (lo + hi) // 2
        if _START.unpack_from(records, mid * size)[0] <= t_us:
            lo = mid + 1
        else:
            hi = mid
    return lo
