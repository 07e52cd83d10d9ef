"""Exact count/sum/mean/variance accumulators in scaled integer arithmetic.

Why integers: every finite double is ``m * 2**-k`` with integer ``m`` and ``k >= 0`` (or an
integer, ``k = 0``). A topic picks one scale ``2**-shift`` with ``shift >= k`` for every value it
holds, so each value becomes the exact integer ``x = m << (shift - k)`` and its square ``x * x``
is exact too. A window then keeps ``S1 = sum(x)`` and ``S2 = sum(x * x)`` as Python ints:
adding and removing an event are exact integer additions, so a term added and later removed
cancels exactly, whatever happened in between (a 1e8 spike leaving a window of values near 1,
or a 1.1e9 spike leaving values near 1e9, cannot leave any residue behind).

Error analysis. With ``u = 2**-shift`` and ``n`` values in the window:

* ``sum  = S1 * u``, ``mean = S1 * u / n`` and
  ``var  = (n * S2 - S1**2) * u**2 / (n * (n - 1))`` are exact rationals; ``n*S2 - S1**2 >= 0``
  by Cauchy-Schwarz and is 0 exactly when all values are equal.
* Each is turned into a float by ONE ``int / int`` true division, which CPython rounds
  correctly (round-half-even). So sum, mean and var are the correctly rounded exact values:
  relative error <= 2**-53 (half an ulp), nothing proportional to the window's magnitude,
  var of identical values is exactly 0.0, never negative, never NaN.
* ``stddev = math.sqrt(var)`` adds one more correctly rounded operation: relative error
  <= ~1.5 * 2**-53.
* The only inexact case is overflow: an exact result beyond the largest double becomes
  ``±inf`` (the API only accepts finite values, so this needs sums near 1.8e308).

Cost: integer sizes are bounded by the spread of binary exponents in the held values plus
``log2(n)`` bits (typically 60-200 bits, so additions are a few machine words). Only the window
sums are kept as integers; an event's integer is recomputed from its double when it leaves a
window (``int(value * 2.0**shift)``, exact while ``value * 2**shift`` is an integer below the
double range). So changing the scale costs O(number of windows), never O(events held): it
gets finer when a value needs it and coarser again when the values that needed it are gone
(see ``windows.py``), so a single tiny value neither stalls a topic nor slows it down forever.

Reading the moments in the per-event path (``fastpath.py``) uses the cheapest correctly rounded
forms: ``sum = float(S1) * 2.0**-shift`` (``float(int)`` rounds correctly and the power of two
is exact while the result is a normal double, which the fast path's bounds guarantee) and one
``int / int`` true division each for mean and var. ``moments`` below is the general form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import mul

__all__ = ["ExactSums", "moments", "ratio", "scaled"]


def ratio(num: int, den: int) -> float:
    """``num / den`` correctly rounded; ``±inf`` instead of OverflowError (``den > 0``)."""
    try:
        return num / den
    except OverflowError:
        return math.inf if num > 0 else -math.inf


def scaled(value: float, shift: int) -> int:
    """The exact integer ``value * 2**shift``; ``shift`` must be fine enough for ``value``."""
    m, d = value.as_integer_ratio()
    return m << (shift - d.bit_length() + 1)


class ExactSums:
    """The exact sums ``S1`` and ``S2`` of a multiset of values at a scale fine enough for
    each (``shift``), with its count: what a series bucket's moments are read from, so that
    they are a function of its values alone, the same whether made from them at once
    (``of``) or one late value at a time (``add``), in any order."""

    __slots__ = ("count", "s1", "s2", "shift")

    def __init__(self, count: int, s1: int, s2: int, shift: int) -> None:
        self.count = count
        self.s1 = s1
        self.s2 = s2
        self.shift = shift

    @classmethod
    def of(cls, values: Sequence[float]) -> ExactSums:
        """The sums of finite `values`. A value ``f * 2**e`` (``0.5 <= |f| < 1``) is a
        multiple of ``2**(e - 53)``, so the smallest magnitude's exponent gives a scale at
        which every value is an integer; where that integer stays a finite double, one
        float multiplication makes it (exact), else each value's integer ratio does."""
        count = len(values)
        smallest = min((abs(v) for v in values if v), default=0.0)
        if not smallest:
            return cls(count, 0, 0, 0)
        shift = max(0, _MANTISSA - math.frexp(smallest)[1])
        if shift < _FLOAT_SCALE_LIMIT:
            unit = 2.0**shift
            largest = max(-min(values), max(values))
            if largest * unit < _FLOAT_INT_LIMIT:
                ints = [int(v * unit) for v in values]
                return cls(count, sum(ints), sum(map(mul, ints, ints)), shift)
        shift = max(v.as_integer_ratio()[1] for v in values).bit_length() - 1
        ints = [scaled(v, shift) for v in values]
        return cls(count, sum(ints), sum(map(mul, ints, ints)), shift)

    def add(self, value: float) -> None:
        """One more finite value: the sums rescaled first if it needs a finer scale."""
        k = value.as_integer_ratio()[1].bit_length() - 1
        if k > self.shift:
            grow = k - self.shift
            self.s1 <<= grow
            self.s2 <<= 2 * grow
            self.shift = k
        x = scaled(value, self.shift)
        self.s1 += x
        self.s2 += x * x
        self.count += 1

    def moments(self) -> tuple[float, float, float, float | None]:
        """Sum, mean, M2 (the sum of squared deviations) and sample variance (None for one
        value), each correctly rounded, ``±inf`` past the double range; not empty."""
        n, s1, unit = self.count, self.s1, 1 << self.shift
        total, mean = ratio(s1, unit), ratio(s1, n * unit)
        if n == 1:
            return total, mean, 0.0, None
        centred = n * self.s2 - s1 * s1  # >= 0: Cauchy-Schwarz
        squared = unit * unit
        return total, mean, ratio(centred, n * squared), ratio(centred, n * (n - 1) * squared)


_MANTISSA = 53
_FLOAT_SCALE_LIMIT = 1000
"""``2.0**shift`` is a finite double below this (and above it, values so small are rare)."""
_FLOAT_INT_LIMIT = 2.0**1000
"""A scaled value below this is a finite double, so ``v * 2.0**shift`` is exact."""


def moments(
    n: int, s1: int, s2: int | None, unit: int
) -> tuple[float, float | None, float | None, float | None]:
    """``(sum, mean, var, stddev)`` of a window from its exact scaled sums.

    ``unit`` is ``2**shift``. ``mean`` is None for an empty window, ``var``/``stddev`` for
    fewer than two values (sample variance, ddof=1, is undefined there) and where ``s2`` is
    None: a window that keeps no sum of squares (no statistic asked needs one). Its ``S2``
    cannot stand in: the variance of a window whose squares were never summed is a
    negative number, whose square root is a ``math domain error``.
    """
    if n == 0:
        return 0.0, None, None, None
    try:
        total = s1 / unit
        mean = s1 / (n * unit)
        if n == 1 or s2 is None:
            return total, mean, None, None
        var = (n * s2 - s1 * s1) / (n * (n - 1) * unit * unit)
    except OverflowError:
        # Rare (results beyond 1.8e308): redo each quotient on its own, overflow as inf.
        total = ratio(s1, unit)
        mean = ratio(s1, n * unit)
        if n == 1 or s2 is None:
            return total, mean, None, None
        var = ratio(n * s2 - s1 * s1, n * (n - 1) * unit * unit)
    return total, mean, var, math.sqrt(var)
