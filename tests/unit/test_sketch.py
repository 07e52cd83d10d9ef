"""``Sketch``: DDSketch's relative-error bound against pandas' linear quantile, exact merge and
subtraction, bytes round trips, and memory that follows the value range, not the count."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pushsvc.stats.sketch import Sketch
from support.datasets import skewed

A = 0.01
QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)
# The bound is A up to floating-point rounding (the module doc): a relative 1e-9 is far
# above that rounding and far below anything a wrong bin or rank would give (>= 2e-4).
SLACK = 1 + 1e-9
TINY = sys.float_info.min * (1 + A) / (1 - A)  # magnitudes at or below count as zero


def datasets(n: int) -> dict[str, list[float]]:
    return skewed(n, seed=11)


def bound(values: Sequence[float], q: float) -> float:
    """The module doc's bound for pandas' quantile q of ``values``: A times the interpolated
    magnitudes of the two order statistics (A * |x| when they have the same sign)."""
    ordered = sorted(values)
    place = q * (len(ordered) - 1)
    lo = int(place)
    f = place - lo
    hi = min(lo + 1, len(ordered) - 1)
    return A * ((1 - f) * abs(ordered[lo]) + f * abs(ordered[hi])) * SLACK + 2 * TINY


def filled(values: Sequence[float], *, indexed: bool) -> Sketch:
    sketch = Sketch(A, indexed=indexed)
    for v in values:
        sketch.add(v)
    return sketch


@pytest.mark.parametrize("indexed", [True, False])
@pytest.mark.parametrize("name", ["lognormal", "bimodal", "pareto"])
def test_within_one_percent_of_pandas_linear_quantile(name: str, indexed: bool) -> None:
    values = datasets(20_000)[name]
    sketch = filled(values, indexed=indexed)
    series = pd.Series(values)
    for q, got in zip(QS, sketch.quantiles(QS), strict=True):
        want = float(series.quantile(q, interpolation="linear"))
        assert abs(got - want) <= A * abs(want) * SLACK, (name, q, got, want)


def test_a_bin_is_exactly_ddsketchs() -> None:
    # key = ceil(log(x) / log(gamma)); the bin stands for 2 * gamma**key / (1 + gamma).
    gamma = (1 + A) / (1 - A)
    for x in (1.0, 1.5, 123.456, 1e-5, 7e12):
        key = math.ceil(math.log(x) / math.log(gamma))
        sketch = Sketch(A)
        sketch.add(x)
        assert sketch.quantiles([0.5]) == pytest.approx([2 * gamma**key / (1 + gamma)], 1e-12)
        assert gamma ** (key - 1) < x <= gamma**key * (1 + 1e-12)


finite = st.floats(-1e300, 1e300, allow_nan=False, allow_subnormal=True)
values_of = st.one_of(
    st.lists(finite, min_size=1, max_size=200),
    st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.0, 3.5, 1e-310, 1e300]), min_size=1),
    st.lists(st.floats(0.5, 2.0), min_size=1, max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(values=values_of, q=st.floats(0, 1))
# Found by the search: interpolating from the lower end lost 1 - q to rounding.
@example(values=[-(2.0**-53), 0.0], q=1 - 2.0**-53)
def test_bound_for_any_data(values: list[float], q: float) -> None:
    """Mixed signs, zeros, subnormals, huge values: the documented bound, with and without
    the exact min/max given (clamping only ever helps)."""
    want = float(pd.Series(values).quantile(q, interpolation="linear"))
    limit = bound(values, q)
    for indexed in (True, False):
        sketch = filled(values, indexed=indexed)
        (got,) = sketch.quantiles([q])
        assert abs(got - want) <= limit, (got, want, limit)
        (clamped,) = sketch.quantiles([q], lower=min(values), upper=max(values))
        assert min(values) <= clamped <= max(values)
        assert abs(clamped - want) <= limit, (clamped, want, limit)


def test_clamped_to_min_and_max_one_value_is_exact() -> None:
    for x in (1e-3, 5.0, -7.25, sys.float_info.max, -sys.float_info.max):
        sketch = Sketch(A, indexed=True)
        sketch.add(x)
        assert sketch.quantiles([0.5, 0.99], lower=x, upper=x) == [x, x]
        (near,) = sketch.quantiles([0.5])
        assert abs(near - x) <= A * abs(x) * SLACK


@settings(max_examples=100, deadline=None)
@given(
    a=st.lists(finite, max_size=100), b=st.lists(finite, min_size=1, max_size=100),
    indexed=st.booleans(),
)  # fmt: skip
def test_merge_then_subtract_is_exact(a: list[float], b: list[float], indexed: bool) -> None:
    whole = filled(a + b, indexed=indexed)
    part_a = filled(a, indexed=indexed)
    part_b = filled(b, indexed=False)
    part_a.merge(part_b)
    assert part_a.to_bytes() == whole.to_bytes()
    assert part_a.quantiles(QS) == whole.quantiles(QS)
    part_a.subtract(part_b)
    assert part_a.to_bytes() == filled(a, indexed=False).to_bytes()
    assert part_a.count == len(a)
    if a:
        assert part_a.quantiles(QS) == filled(a, indexed=not indexed).quantiles(QS)


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "add", "add", "part", "drop"]), st.floats(1e-3, 1e6)),
        max_size=300,
    ),
    qs=st.lists(st.floats(0, 1), min_size=1, max_size=4),
)
def test_an_indexed_sketch_answers_as_a_scan_does(
    ops: list[tuple[str, float]], qs: list[float]
) -> None:
    """The indexed sketch's rank cursors and Fenwick descents, through adds, merges and
    subtractions, against an unindexed twin that scans its bins for every query."""
    live = Sketch(A, indexed=True)
    twin = Sketch(A)
    parts: list[Sketch] = []
    for kind, value in ops:
        if kind == "add":
            live.add(value)
            twin.add(value)
        elif kind == "part":
            part = filled([value, value * 1.5, value * 1e3], indexed=False)
            live.merge(part)
            twin.merge(part)
            parts.append(part)
        elif parts:
            part = parts.pop(0)
            live.subtract(part)
            twin.subtract(part)
        if live.count:
            assert live.quantiles(qs) == twin.quantiles(qs)


def test_subtracting_what_is_not_there_changes_nothing() -> None:
    sketch = filled([1.0, 2.0, 3.0, 0.0, -4.0], indexed=True)
    before = sketch.to_bytes()
    for other in ([2.0, 2.0], [1000.0], [0.0, 0.0], [-4.0, -4.0], [-1e-3]):
        with pytest.raises(ValueError, match="not part of"):
            sketch.subtract(filled(other, indexed=False))
        assert sketch.to_bytes() == before
    with pytest.raises(ValueError, match="accuracy"):
        sketch.subtract(Sketch(0.02))


def test_removing_everything_frees_the_bins() -> None:
    sketch = Sketch(A, indexed=True)
    part = filled([1e-200, 1.0, 1e200], indexed=False)
    sketch.merge(part)
    assert sketch.bins > 0
    sketch.subtract(part)
    assert (sketch.count, sketch.bins) == (0, 0)
    with pytest.raises(ValueError, match="empty"):
        sketch.quantiles([0.5])


def test_the_range_shrinks_when_outliers_leave() -> None:
    sketch = filled([float(v) for v in range(1, 200)], indexed=True)
    compact = sketch.bins
    outlier = filled([1e-100], indexed=False)
    sketch.merge(outlier)
    assert sketch.bins > 16 * compact
    sketch.subtract(outlier)
    assert sketch.bins <= compact


@settings(max_examples=100, deadline=None)
@given(values=st.lists(finite, max_size=200))
def test_bytes_round_trip(values: list[float]) -> None:
    sketch = filled(values, indexed=True)
    data = sketch.to_bytes()
    for indexed in (True, False):
        back = Sketch.from_bytes(data, indexed=indexed)
        assert back.to_bytes() == data
        assert back.count == len(values)
        if values:
            assert back.quantiles(QS) == sketch.quantiles(QS)


def test_malformed_bytes_are_a_value_error() -> None:
    data = filled([1.0, 2.0, -3.0, 0.0], indexed=False).to_bytes()
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            Sketch.from_bytes(data[:cut])
    with pytest.raises(ValueError, match="unread"):
        Sketch.from_bytes(data + b"\0")
    with pytest.raises(ValueError, match="version"):
        Sketch.from_bytes(b"\x09" + data[1:])


def test_memory_follows_the_value_range_not_the_count() -> None:
    # Values in [1, 1000]: keys 0 .. ceil(log(1000) / log(gamma)) = 346, so at most 347 bins
    # are used and at most 1024 allocated (a power of two with room to grow), however many.
    rng = np.random.default_rng(5)
    for n in (1_000, 200_000):
        sketch = Sketch(A, indexed=True)
        for v in rng.uniform(1, 1000, n).tolist():
            sketch.add(v)
        assert sketch.bins <= 1024, n
        assert len(sketch.to_bytes()) <= 347 * 4 + 64, n


def test_invalid_input() -> None:
    for accuracy in (0, 1, -0.5, 1.5, math.nan, True):
        with pytest.raises(ValueError, match="accuracy"):
            Sketch(accuracy)
    sketch = Sketch(A)
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="finite"):
            sketch.add(value)
    with pytest.raises(ValueError, match="count"):
        sketch.add(1.0, 0)
    assert sketch.count == 0
