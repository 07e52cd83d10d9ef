"""Counting deliveries per subscriber, and the verdict both ways of counting give (pure).

Event `i` (0 <= i < M) is published once; every subscriber should receive each
exactly once, in order. A value seen twice is a duplicate; a first sighting of
a value below the highest one already seen is out of order; a value outside
0..M-1, or not an integer, is unexpected. Missing = M - distinct values seen.
(`idcount.py` judges update ids by the same rules.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Verdict:
    received: int
    distinct: int
    duplicates: int
    out_of_order: int
    missing: int
    unexpected: int

    @property
    def exact(self) -> bool:
        return self.missing == self.duplicates == self.out_of_order == self.unexpected == 0


def totals(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """Each count summed over `verdicts`."""
    out = {f.name: 0 for f in fields(Verdict)}
    for verdict in verdicts:
        for key in out:
            out[key] += getattr(verdict, key)
    return out


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

    def verdict(self) -> Verdict:
        return Verdict(self.received, self.distinct, self.duplicates, self.out_of_order,
                       self.missing, self.unexpected)  # fmt: skip
