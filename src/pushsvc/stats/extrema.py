"""min and max of every window of a topic from two shared monotonic lists (no sorted list).

All windows of a topic are suffixes of one time-ordered buffer (``windows.py``), so one
monotonic "max list" serves them all: it holds, in buffer order, every event that no later
event equals or exceeds. Its values strictly decrease, and the max of a window is its first
entry inside that window. Each window keeps a pointer to that entry; a new event pops the
entries it dominates from the tail and is appended, and each pointer only moves forward, so
the cost is O(1) amortised per event and per window. The min list is the mirror image.

Layout: parallel lists of timestamps and values, with a sentinel at index 0 (value ``+inf``
in the max list, ``-inf`` in the min list) so the pop loop needs no emptiness check. A pointer
of ``len(list)`` means the window is empty. Entries before the widest window's pointer are
dead; they are deleted together with the buffer's dead head (``drop_dead``).

A late event lands in the middle: it removes the entries just before it that it dominates
(a contiguous block, found by bisection since the values are monotonic) and is kept only if
the entry after it does not dominate it. The pointers are then recomputed by bisection.
This module holds those rare paths; the per-event path is generated inline (``fastpath.py``).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from operator import neg

__all__ = ["Extrema"]

_SENTINEL_TS = -(1 << 63)


class Extrema:
    """The max list (``mxt``, ``mxv``) and min list (``mnt``, ``mnv``) of one topic."""

    __slots__ = ("mnt", "mnv", "mxt", "mxv")

    def __init__(self) -> None:
        self.mxt: list[int] = [_SENTINEL_TS]
        self.mxv: list[float] = [math.inf]
        self.mnt: list[int] = [_SENTINEL_TS]
        self.mnv: list[float] = [-math.inf]

    def append(self, ts_us: int, value: float) -> None:
        """An event later than (or tied with) every held one; ties: the later one dominates."""
        mxt, mxv, mnt, mnv = self.mxt, self.mxv, self.mnt, self.mnv
        while mxv[-1] <= value:
            mxv.pop()
            mxt.pop()
        mxt.append(ts_us)
        mxv.append(value)
        while mnv[-1] >= value:
            mnv.pop()
            mnt.pop()
        mnt.append(ts_us)
        mnv.append(value)

    def insert_late(self, ts_us: int, value: float) -> None:
        """An event older than the newest one, placed after the held events with ts <= its ts."""
        mxt, mxv, mnt, mnv = self.mxt, self.mxv, self.mnt, self.mnv
        p = bisect_right(mxt, ts_us, 1)
        # Entries before p that value dominates (<= value) are the block [a, p).
        a = bisect_left(mxv, -value, 1, p, key=neg)
        keep = p == len(mxv) or mxv[p] < value
        del mxt[a:p], mxv[a:p]
        if keep:
            mxt.insert(a, ts_us)
            mxv.insert(a, value)
        p = bisect_right(mnt, ts_us, 1)
        a = bisect_left(mnv, value, 1, p)
        keep = p == len(mnv) or mnv[p] > value
        del mnt[a:p], mnv[a:p]
        if keep:
            mnt.insert(a, ts_us)
            mnv.insert(a, value)

    def pointers(self, bound_us: int) -> tuple[int, int]:
        """(max, min) pointers of a window holding the events with ts > ``bound_us``."""
        return bisect_right(self.mxt, bound_us, 1), bisect_right(self.mnt, bound_us, 1)

    def drop_dead(self, max_pointer: int, min_pointer: int) -> tuple[int, int]:
        """Delete the entries before the widest window's pointers; returns the index shifts."""
        dmax = max_pointer - 1
        dmin = min_pointer - 1
        if dmax > 0:
            del self.mxt[1:max_pointer], self.mxv[1:max_pointer]
        if dmin > 0:
            del self.mnt[1:min_pointer], self.mnv[1:min_pointer]
        return max(dmax, 0), max(dmin, 0)

    def clear(self) -> None:
        del self.mxt[1:], self.mxv[1:], self.mnt[1:], self.mnv[1:]
