"""`FlagWindow`: the scored buckets of one series that closed recently, for `anomaly_rate`
(pure).

A window's `anomaly_rate` at clock C is the share of anomalous points among the scored points
whose buckets closed in (C - width, C] (the clock that closed them: a bucket is counted from
the update of the event or tick that closed it on). None when no scored bucket closed in the
window. Kept as two lists in closing order, the clocks and the running count of flags, so a
rate is two bisections whatever the window's width; entries older than the widest window
(`keep_us`) are dropped as the clock moves on (amortized: when they are half the lists).
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["FlagWindow"]


class FlagWindow:
    """Not greenlet-safe (one aggregator). Clocks given must never go backwards."""

    __slots__ = ("_clocks", "_flagged", "keep_us")

    def __init__(self, keep_us: int) -> None:
        self.keep_us = keep_us
        """How far back a rate may look: the rule's widest time window."""
        self._clocks: list[int] = []
        self._flagged: list[int] = []  # anomalous points among the first i + 1

    def add(self, clock_us: int, anomalous: bool) -> None:
        """A scored bucket closed at `clock_us`."""
        self._trim(clock_us)
        before = self._flagged[-1] if self._flagged else 0
        self._clocks.append(clock_us)
        self._flagged.append(before + anomalous)

    def rate(self, clock_us: int, width_us: int) -> float | None:
        """Anomalous / scored among the buckets that closed in (clock - width, clock]."""
        clocks, flagged = self._clocks, self._flagged
        end = bisect_right(clocks, clock_us)
        start = bisect_right(clocks, clock_us - width_us, 0, end)
        if start == end:
            return None
        flags = flagged[end - 1] - (flagged[start - 1] if start else 0)
        return flags / (end - start)

    def entries(self) -> list[tuple[int, bool]]:
        """(clock, anomalous) of each bucket a rate may still count, in closing order: for a
        checkpoint (those at or before the newest clock less `keep_us` never count again: the
        clock does not go back)."""
        clocks, flagged = self._clocks, self._flagged
        first = bisect_right(clocks, clocks[-1] - self.keep_us) if clocks else 0
        before = flagged[first - 1] if first else 0
        out = []
        for clock, flags in zip(clocks[first:], flagged[first:], strict=True):
            out.append((clock, flags > before))
            before = flags
        return out

    def __len__(self) -> int:
        return len(self._clocks)

    def _trim(self, clock_us: int) -> None:
        stale = bisect_right(self._clocks, clock_us - self.keep_us)
        if stale and stale * 2 >= len(self._clocks):
            base = self._flagged[stale - 1]
            del self._clocks[:stale]
            self._flagged = [flags - base for flags in self._flagged[stale:]]
