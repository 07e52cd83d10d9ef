"""What a rolling window's statistics should be, computed without `pushsvc.stats`: the oracle
of `tests/unit/test_stats_oracle.py` and of `bench/aggregator.py`'s check.

* pandas defines the window semantics (docs/design.md): count, min, max and the quantiles of window
  ``w`` after an operation equal ``series.rolling(w)`` read at the newest row of the accepted
  events sorted by time (stable, so ties keep arrival order). `rolling` computes them for many
  states at once.
* Exact rationals check sum, mean, var and stddev on the set the contract names (accepted
  events with ts in ``(T - w, T]``): `Exact.of(window)`.

`mismatches` holds one window's statistics to both and says what is wrong, if anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pandas as pd

EPS = 2.0**-52
SUBNORMAL = Fraction(2) ** -1074
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
ORDER_STATS = ("count", "min", "max", *(name for name, _ in QUANTILES))
"""The statistics pandas is the oracle of; the rest (sum, mean, var, stddev) are exact's."""

State = Sequence[tuple[int, float]]
"""Accepted rows ``(ts_us, value)`` sorted by time; a tick is a NaN row at its clock."""
Columns = dict[str, npt.NDArray[np.float64]]


def rolling(states: Sequence[State], widths: Sequence[int]) -> dict[int, Columns]:
    """pandas' rolling statistics (ORDER_STATS) at the newest row of each state, per width.

    To make one pandas call per statistic instead of one per state, the states are laid end to
    end on one time axis, each shifted past the previous one by more than the window, so no
    window reaches into another state; the rolling value at a state's last row is then exactly
    that state's. Rows older than the window at their state's newest row are left out: they
    are in no window.
    """
    newest = [max(ts for ts, _ in state) for state in states]
    out: dict[int, Columns] = {}
    for width in widths:
        index: list[int] = []
        values: list[float] = []
        last_rows: list[int] = []
        lo = min(newest) - width
        stride = max(newest) - lo + width + 1
        for k, (state, t) in enumerate(zip(states, newest, strict=True)):
            shift = k * stride - lo
            for ts, v in state:
                if ts > t - width:
                    index.append(ts + shift)
                    values.append(v)
            last_rows.append(len(index) - 1)
        series = pd.Series(values, index=pd.to_datetime(np.array(index), unit="us"))
        window = series.rolling(pd.Timedelta(width, unit="us"))
        columns = {"count": window.count(), "min": window.min(), "max": window.max()}
        for name, q in QUANTILES:
            columns[name] = window.quantile(q, interpolation="linear")
        out[width] = {name: column.to_numpy()[last_rows] for name, column in columns.items()}
    return out


@dataclass(frozen=True, slots=True)
class Exact:
    """A window's doubles, summed exactly (as integers at a common power-of-two scale)."""

    n: int
    sum: Fraction
    mean: Fraction | None
    var: Fraction | None
    big: float
    """max |x|"""
    spread: Fraction
    """max |x - mean|"""

    @classmethod
    def of(cls, window: Sequence[float]) -> Exact:
        n = len(window)
        if n == 0:
            return cls(0, Fraction(0), None, None, 0.0, Fraction(0))
        ratios = [v.as_integer_ratio() for v in window]  # denominators are powers of two
        k = max(d for _, d in ratios).bit_length() - 1
        ints = [m << (k - d.bit_length() + 1) for m, d in ratios]
        total = sum(ints)
        scale = 1 << k
        var = None
        if n > 1:
            var = Fraction(n * sum(i * i for i in ints) - total * total, n * (n - 1) * scale**2)
        spread = Fraction(max(abs(i * n - total) for i in ints), n * scale)
        big = max(abs(v) for v in window)
        return cls(n, Fraction(total, scale), Fraction(total, n * scale), var, big, spread)


def _rounded(exact: Fraction) -> float:
    """`exact` correctly rounded to a double; ``±inf`` beyond the double range (a variance of
    values near 1e300), as the engine answers it (`pushsvc.stats.moments`)."""
    try:
        return float(exact)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def _within(got: object, exact: Fraction, allowance: float) -> bool:
    if not isinstance(got, float) or not math.isfinite(got):
        return False
    error = abs(Fraction(got) - exact)
    return error <= Fraction(1e-9) * abs(exact) + Fraction(allowance) + SUBNORMAL


def mismatches(
    got: Mapping[str, object], order: Mapping[str, float], exact: Exact, stats: Sequence[str]
) -> list[str]:
    """What is wrong with one window's statistics `got` (those of `stats` it should hold):
    ORDER_STATS against pandas' `order` (a row of `rolling`), the moments against `exact`.

    The moments' contract (docs/design.md): 1e-9 relative plus a rounding allowance proportional to
    the window's magnitude, each a small multiple of the rounding error an accurate float
    algorithm is entitled to on this data:
      sum:    n * eps * max|x|          (one rounding per term at the largest magnitude)
      mean:   eps * max|x|              (the mean is never larger than max|x|)
      var:    64 * eps * max|x| * max|x - mean|  (products of those magnitudes)
      stddev: sqrt(var allowance)       (since |sqrt(a) - sqrt(b)| <= sqrt(|a - b|))
    plus, for all, the smallest subnormal: a result below the double range (var of values near
    1e-300) can only be rounded to 0 or a subnormal. The engine promises more (moments.py):
    each is the correctly rounded exact value (the square root of the rounded var for stddev),
    which is what is required; a mismatch says whether it is at least within the contract.
    """
    wrong: list[str] = []

    def want(
        name: str, value: object, exact_value: Fraction = Fraction(0), allowance: float = 0
    ) -> None:
        if name in stats and got.get(name, "missing") != value:
            note = ""
            if isinstance(value, float):
                inside = _within(got.get(name), exact_value, allowance)
                note = f" ({'within' if inside else 'outside'} the contract's allowance)"
            wrong.append(f"{name}: got {got.get(name, 'missing')!r}, want {value!r}{note}")

    count = order["count"]
    want("count", count)
    for name in ORDER_STATS[1:]:
        want(name, None if count == 0 else order[name])
    if exact.n != count:
        wrong.append(f"pandas counts {count}, the contract's set holds {exact.n}")
    n, big = exact.n, exact.big
    want("sum", float(exact.sum), exact.sum, n * EPS * big)
    want(
        "mean",
        None if exact.mean is None else float(exact.mean),
        exact.mean or Fraction(0),
        EPS * big,
    )
    if exact.var is None:
        want("var", None)
        want("stddev", None)
    else:
        allowance = 64 * EPS * big * float(exact.spread)
        var = _rounded(exact.var)
        stddev = math.sqrt(var)
        want("var", var, exact.var, allowance)
        root = Fraction(stddev) if math.isfinite(stddev) else Fraction(0)
        want("stddev", stddev, root, math.sqrt(allowance))
    return wrong
