"""`ExactSums`: a series bucket's moments as a function of its values alone. Made from the
values at once or one value at a time, in any order, they are the same bit for bit, and each
is the exact value (`fractions`) correctly rounded; which is what lets a corrected bucket add
a late value to its sums instead of passing over its values again."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from pushsvc.stats.moments import ExactSums

finite = st.floats(allow_nan=False, allow_infinity=False)
ordinary = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-5, 5).map(float)
values = st.lists(ordinary | finite, min_size=1, max_size=40)


def _rounded(exact: Fraction) -> float:
    """`exact` correctly rounded (``int / int`` is), ``±inf`` past the double range."""
    try:
        return exact.numerator / exact.denominator
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


@given(values)
def test_the_moments_are_the_exact_values_correctly_rounded(drawn: list[float]) -> None:
    exact = [Fraction(v) for v in drawn]
    n = len(exact)
    total = sum(exact, Fraction(0))
    mean = total / n
    m2 = sum(((x - mean) ** 2 for x in exact), Fraction(0))
    got = ExactSums.of(drawn).moments()
    assert got[:2] == (_rounded(total), _rounded(mean))
    if n == 1:
        assert got[2:] == (0.0, None)
    else:
        assert got[2:] == (_rounded(m2), _rounded(m2 / (n - 1)))


@given(values, st.lists(ordinary | finite, max_size=20), st.randoms(use_true_random=False))
def test_added_one_at_a_time_in_any_order_they_are_the_same(
    first: list[float], later: list[float], random: st.SearchStrategy[object]
) -> None:
    sums = ExactSums.of(first)
    for value in later:
        sums.add(value)
    shuffled = [*first, *later]
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    one_by_one = ExactSums.of(shuffled[:1])
    for value in shuffled[1:]:
        one_by_one.add(value)
    at_once = ExactSums.of(shuffled).moments()
    assert sums.moments() == at_once
    assert one_by_one.moments() == at_once
    assert sums.count == len(shuffled)
