"""`ErrorQuantiles`: the 80 % and 95 % quantiles of a model's recent standardised one-step
errors, from a fixed window of them (pure).

Why. Holt-Winters' intervals are its forecast's standard error times a quantile
(`pushsvc.series.forecast_holt_winters`). Normal quantiles suit Gaussian errors; real series'
errors are heavier-tailed (a few large ones, many small), and there the normal 80 % interval is
too wide while the 95 % one is about right. So the quantiles come from the series itself: each
one-step error e is standardised by the variance its forecast used, |e| / sqrt(var), and the
interval's quantile q_p is the conformal one of the last `WINDOW` of them, the
ceil((n + 1) * p)-th smallest of n (split conformal prediction: for exchangeable errors a
value falls within q_p standard errors with probability at least p, whatever their
distribution). The interval keeps its width from the model, sqrt(var_h), so it still widens
with the horizon as the parameters say; only its shape (how many standard errors a share
spans) comes from the data. Symmetric: the absolute errors pool both tails, twice the sample
of either.

Ahead. An error h steps ahead is a weighted sum of the h innovations to come (weights 1 and
c_1 .. c_{h-1}, `pushsvc.series.forecast_outlook.variance_factor`), and a sum of heavy-tailed
errors is nearer normal than each (the central limit theorem): one step's quantiles would make
a day-ahead 80 % interval too narrow. So h steps ahead the quantile moves from the one-step
one towards the normal one as the sum's kurtosis does (Cornish-Fisher: to first order, a
symmetric quantile departs from the normal one in proportion to the excess kurtosis, and a
weighted sum's is the one-step one times sum(w**4) / sum(w**2)**2), with the one-step
departure measured rather than assumed: q_h = z + (q_1 - z) * sum(w**4) / factor**2, where
factor = sum(w**2) is the variance factor. sum(w**4) is taken as 1 + (factor - 1)**2 / (h - 1),
exact when c_1 .. c_{h-1} are equal (no trend, between whole seasons) and otherwise its lower
bound (then the interval leans to normal).

Until `LEAST` errors are in the window, the normal quantiles (a 95 % quantile then rests on
at least its five largest).

Cost: the window twice, as 4-byte floats (`WINDOW` * 8 bytes): in arrival order (to drop the
oldest) and sorted (a quantile is one index); a new error is one binary search and two moves
of at most the window in memory. The checkpoint keeps the arrival order only, and the sorted
copy is rebuilt from it exactly (the same floats).
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, insort

from pushsvc.series.forecast import Z80, Z95

__all__ = ["LEAST", "WINDOW", "ErrorQuantiles", "quantile_ahead"]

WINDOW = 500
"""Standardised errors kept: the 2.5 % beyond the 95 % quantile are about 25 of them, and the
window forgets a series' older behaviour within a few hundred buckets."""
LEAST = 100
"""Errors needed before the quantiles are the window's rather than the normal ones."""


class ErrorQuantiles:
    """The last `WINDOW` standardised absolute one-step errors and their quantiles."""

    __slots__ = ("_next", "_ring", "_sorted")

    def __init__(self) -> None:
        self._ring = array("f")
        """In arrival order, as a ring once full: `_next` is the oldest."""
        self._sorted = array("f")
        self._next = 0

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, error: float, var: float) -> None:
        """One-step error `error` of a forecast of variance `var` (ignored when var is not
        positive, or the ratio not finite)."""
        if not var > 0:
            return
        z = abs(error) / math.sqrt(var)
        if not math.isfinite(z):
            return
        stored = array("f", (z,))[0]  # as the window holds it
        ring, ordered = self._ring, self._sorted
        if len(ring) < WINDOW:
            ring.append(stored)
        else:
            old = ring[self._next]
            del ordered[bisect_left(ordered, old)]
            ring[self._next] = stored
            self._next = (self._next + 1) % WINDOW
        insort(ordered, stored)

    def quantiles(self) -> tuple[float, float]:
        """(q80, q95): the interval's half-widths in standard errors."""
        ordered = self._sorted
        n = len(ordered)
        if n < LEAST:
            return Z80, Z95
        return ordered[_rank(80, n)], ordered[_rank(95, n)]

    def to_bytes(self) -> bytes:
        """The window, oldest first, as little-endian 4-byte floats."""
        ring = self._ring
        ordered = ring[self._next :] + ring[: self._next]
        if sys.byteorder != "little":
            ordered.byteswap()
        return ordered.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ErrorQuantiles:
        """From `to_bytes`; ValueError when it is not such a window."""
        if len(data) % 4 or len(data) // 4 > WINDOW:
            raise ValueError("a forecast's error window does not fit")
        out = cls()
        ring = array("f")
        ring.frombytes(data)
        if sys.byteorder != "little":
            ring.byteswap()
        if not all(math.isfinite(z) and z >= 0 for z in ring):
            raise ValueError("a forecast's error window holds a bad value")
        out._ring = ring
        out._sorted = array("f", sorted(ring))
        out._next = 0
        return out


def _rank(percent: int, n: int) -> int:
    """The index of the conformal quantile of n sorted values: ceil((n + 1) * percent / 100)
    - 1 (in integers), at most the largest's."""
    return min(n, -(-(n + 1) * percent // 100)) - 1


def quantile_ahead(q: float, normal: float, factor: float, h: int) -> float:
    """The one-step quantile `q` (of the normal quantile `normal`) h steps ahead, where the
    forecast's variance is `factor` times the one-step one (module docstring)."""
    if h <= 1 or q == normal:
        return q
    fourth = 1 + (factor - 1) ** 2 / (h - 1)
    return normal + (q - normal) * fourth / (factor * factor)
