"""Counting deliveries per subscriber, and latency percentiles (pure).

Event `i` (0 <= i < M) is published once; every subscriber should receive each
exactly once, in order. A value seen twice is a duplicate; a first sighting of
a value below the highest one already seen is out of order; a value outside
0..M-1, or not an integer, is unexpected. Missing = M - distinct values seen.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence


class Tally:
    """One subscriber's deliveries; `record` returns True when the last missing one arrives."""

    __slots__ = ("distinct", "duplicates", "expected", "high", "out_of_order", "received", "seen",
                 "unexpected")  # fmt: skip

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = bytearray(expected)
        self.high = -1
        self.received = 0
        self.distinct = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.unexpected = 0

    def record(self, value: float) -> bool:
        self.received += 1
        finite = type(value) in (int, float) and math.isfinite(value)  # bool is not a value
        index = int(value) if finite else -1
        if index != value or not 0 <= index < self.expected:
            self.unexpected += 1
            return False
        if self.seen[index]:
            self.duplicates += 1
            return False
        self.seen[index] = 1
        self.distinct += 1
        if index < self.high:
            self.out_of_order += 1
        else:
            self.high = index
        return self.distinct == self.expected

    @property
    def missing(self) -> int:
        return self.expected - self.distinct


def totals(tallies: Iterable[Tally]) -> dict[str, int]:
    keys = ("received", "distinct", "duplicates", "out_of_order", "unexpected", "missing")
    out = dict.fromkeys(keys, 0)
    for tally in tallies:
        for key in keys:
            out[key] += getattr(tally, key)
    return out


def percentiles(samples: array[float] | Sequence[float], qs: Sequence[float]) -> list[float | None]:
    """Nearest-rank percentiles (q in 0..1]; None for no samples."""
    if not samples:
        return [None] * len(qs)
    ordered = sorted(samples)
    n = len(ordered)
    return [ordered[min(n, max(1, math.ceil(q * n))) - 1] for q in qs]
