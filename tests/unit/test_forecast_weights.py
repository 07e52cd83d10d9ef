"""The combination's weights (`pushsvc.series.forecast_weights`): at each tracked horizon
the two members of the smaller mean squared errors there share the weight, each the other's
share of their sum, from the errors of forecasts made that many steps before their values;
between tracked horizons each weight is a line in the step, as numpy's `interp`; the state
goes through a checkpoint, keeps its horizons when the horizon changes, and a damaged one is
refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.series.forecast_weights import SPAN, Blend, CombinationWeights
from pushsvc.stats.state_codec import StateWriter

HORIZONS = (1, 2, 4, 7, 13, 24)

share = st.floats(0, 1)


@given(
    st.lists(
        st.tuples(st.integers(1, 288), st.tuples(share, share, share)),
        min_size=1,
        max_size=6,
        unique_by=lambda r: r[0],
    ),
    st.integers(1, 400),
)
def test_a_weight_between_tracked_horizons_is_a_line_in_the_step(
    rows: list[tuple[int, tuple[float, float, float]]], h: int
) -> None:
    """Each member's weight is numpy's linear interpolation of its weights at the tracked
    horizons (the first member's the rest), and the combined forecast their weighted sum: a
    member forecasting 1 where the others forecast 0 gets its weight."""
    table = tuple(sorted(rows))
    blend = Blend(table, 3)
    for j in (1, 2):
        expected = np.interp(h, [k for k, _ in table], [w[j] for _, w in table])
        alone = blend.mixed(h, 0.0, [1.0 if i == j else 0.0 for i in (1, 2)])
        assert alone == pytest.approx(float(expected), abs=1e-12)
    at = [float(np.interp(h, [k for k, _ in table], [w[j] for _, w in table])) for j in (1, 2)]
    forecasts = (3.0, -1.0, 10.0)
    expected_mean = (1 - sum(at)) * 3.0 + at[0] * -1.0 + at[1] * 10.0
    assert blend.mixed(h, forecasts[0], forecasts[1:]) == pytest.approx(expected_mean, abs=1e-9)
    assert Blend((), 3).mixed(h, 3.0, [-1.0, 10.0]) == pytest.approx(4.0)


def test_each_horizons_weights_come_from_the_errors_of_its_own_forecasts() -> None:
    """The members' forecasts are off by 1, 2 and 4 one step ahead, and by 3, 2 and 1 two
    steps ahead: one step ahead the first two share the weight, 4 / 5 and 1 / 5; two steps
    ahead the last two, 1 / 5 and 4 / 5."""
    weights = CombinationWeights((1, 2), 3)
    assert weights.weights() == ()
    for t in range(50):
        weights.observe(float(t))
        weights.expect([(t + 1 + 1.0, t + 1 - 2.0, t + 1 + 4.0), (t + 2 - 3.0, t + 4.0, t + 3.0)])
    (one, w1), (two, w2) = weights.weights()
    assert (one, two) == (1, 2)
    assert w1 == pytest.approx((4 / 5, 1 / 5, 0)) and w2 == pytest.approx((0, 1 / 5, 4 / 5))
    assert [len(made) for flight in weights.flight for made in flight] == [1, 1, 1, 2, 2, 2]


def test_two_members_share_the_weight_by_the_others_error() -> None:
    weights = CombinationWeights((1,), 2)
    for t in range(20):
        weights.observe(float(t))
        weights.expect([(t + 1 + 1.0, t + 1 - 3.0)])
    assert weights.weights() == ((1, pytest.approx((0.9, 0.1))),)


def test_the_mean_squares_forget_past_their_span() -> None:
    """After `SPAN` errors the mean squares weigh new ones exponentially: the first member,
    the worse for a long while, becomes the better after some spans of being so."""
    weights = CombinationWeights((1,), 2)
    weights.expect([(0.0, 0.0)])
    for t in range(10 * SPAN):
        worse = t < 5 * SPAN
        weights.observe(1.0)
        weights.expect([(1.0 + (3.0 if worse else 0.25), 2.0)])
        if t == 5 * SPAN - 1:
            assert weights.weights()[0][1][0] < 0.2
    assert weights.weights()[0][1][0] > 0.85


def test_a_value_that_is_not_finite_leaves_the_weights_alone() -> None:
    weights = CombinationWeights((1,), 2)
    weights.expect([(1.0, 3.0)])
    weights.observe(2.0)
    before = weights.weights()
    weights.expect([(math.inf, 3.0)])
    weights.observe(2.0)
    assert weights.weights() == before == ((1, (0.5, 0.5)),)


def test_weights_go_through_a_checkpoint_and_keep_their_horizons_when_the_horizon_changes() -> None:
    weights = CombinationWeights(HORIZONS, 3)
    rng = np.random.default_rng(3)
    for t in range(300):
        weights.observe(float(t))
        weights.expect([tuple(t + k + rng.normal(0, s) for s in (1, 2, 3)) for k in HORIZONS])
    restored = CombinationWeights.from_bytes(weights.to_bytes(), 3)
    assert restored.to_bytes() == weights.to_bytes()
    assert restored.weights() == weights.weights()
    shorter = weights.tracking((1, 2, 3, 5, 7))
    kept = dict(weights.weights())
    assert list(shorter.weights()) == [(k, kept[k]) for k in (1, 2, 7)]


def _state(rows: list[tuple[int, int, list[float], list[float], list[float]]]) -> bytes:
    """A two members' state of these (k, count, mean squares, each member's forecasts)."""
    out = StateWriter()
    out.uint(2)
    out.uint(len(rows))
    for k, n, squares, fitted, anchored in rows:
        out.uint(k)
        out.uint(n)
        for values in (squares, fitted, anchored):
            out.blob(np.asarray(values, dtype="<f8").tobytes())
    return bytes(out)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(1, 1, [1.0, 1.0], [], [])] * 7, "do not fit"),
        ([(0, 1, [1.0, 1.0], [], [])], "do not fit"),
        ([(1, SPAN + 1, [1.0, 1.0], [], [])], "do not fit"),
        ([(1, 1, [1.0], [], [])], "do not fit"),
        ([(1, 1, [1.0, 1.0], [1.0, 2.0], [1.0, 2.0])], "in flight"),
        ([(2, 1, [1.0, 1.0], [1.0], [])], "in flight"),
        ([(1, 1, [-1.0, 1.0], [], [])], "bad value"),
        ([(1, 1, [math.nan, 1.0], [], [])], "bad value"),
        ([(2, 1, [1.0, 1.0], [], []), (1, 1, [1.0, 1.0], [], [])], "not ascending"),
    ],
)
def test_a_damaged_state_is_refused(
    rows: list[tuple[int, int, list[float], list[float], list[float]]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CombinationWeights.from_bytes(_state(rows), 2)


def test_a_state_of_other_members_or_broken_doubles_is_refused() -> None:
    with pytest.raises(ValueError, match="not of its members"):
        CombinationWeights.from_bytes(_state([]), 3)
    out = StateWriter()
    for number in (2, 1, 1, 1):  # members, horizons, k, count
        out.uint(number)
    for blob in (b"\x00" * 15, b"", b""):
        out.blob(blob)
    with pytest.raises(ValueError, match="whole doubles"):
        CombinationWeights.from_bytes(bytes(out), 2)
