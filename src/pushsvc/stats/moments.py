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

__all__ = ["moments", "ratio", "scaled"]


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
