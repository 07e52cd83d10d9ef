"""The forecast models (`pushsvc.series.forecast_linear`, `forecast_holt_winters`): against
plain reference implementations of the same equations, on synthetic series with known trend and
season, interval coverage on series with known Gaussian noise, and state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.series.forecast import Z80, Z95, student_t
from pushsvc.series.forecast_holt_winters import HoltWinters, HwParams
from pushsvc.series.forecast_linear import LinearModel


def realish(n: int, seed: int = 7) -> np.ndarray:
    """A daily-like cycle of 24 points, a drift, noise, a level shift and spikes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y: np.ndarray = 50 + 0.03 * t + 12 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, n)
    y[n // 2 :] += 25
    y[rng.integers(0, n, 5)] *= 3
    return y


# --- linear -------------------------------------------------------------------------------


def test_linear_equals_least_squares_over_the_window() -> None:
    y = realish(500)
    model = LinearModel(30)
    for i, value in enumerate(y):
        model.learn(float(value))
        if i < 1 or i % 7:
            continue
        window = y[max(0, i - 29) : i + 1]
        x = np.arange(len(window), dtype=float)
        slope, intercept = np.polyfit(x, window, 1)
        got = model.predict(5)
        for p in got:
            expected = intercept + slope * (len(window) - 1 + p.step)
            assert p.mean == pytest.approx(expected, rel=1e-9, abs=1e-9)
        if len(window) > 2:
            residual = window - (intercept + slope * x)
            s2 = float(residual @ residual) / (len(window) - 2)
            x0 = len(window) - 1 + 5
            se = math.sqrt(
                s2 * (1 + 1 / len(x) + (x0 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
            )
            q95 = student_t(Z95, len(window) - 2)
            assert got[-1].hi95 - got[-1].mean == pytest.approx(q95 * se, rel=1e-9)


def test_linear_recovers_a_trend() -> None:
    rng = np.random.default_rng(1)
    model = LinearModel(120)
    for t in range(1000):
        model.learn(3.0 + 0.25 * t + float(rng.normal(0, 1.0)))
    line = model.line()
    assert line is not None
    level, slope = line
    assert slope == pytest.approx(0.25, abs=0.01)
    assert level == pytest.approx(3.0 + 0.25 * 999, abs=0.5)
    # 60 steps ahead: the true line within the 95 % interval's half-width.
    ahead = model.predict(60)[-1]
    assert abs(ahead.mean - (3.0 + 0.25 * 1059)) < ahead.hi95 - ahead.mean


def test_linear_needs_two_points_and_has_no_band_with_two() -> None:
    model = LinearModel(10)
    assert model.predict(3) == []
    model.learn(1.0)
    assert model.predict(3) == []
    model.learn(3.0)
    p = model.predict(2)
    assert [q.mean for q in p] == [5.0, 7.0]
    assert all(q.lo95 == q.mean == q.hi95 for q in p)


def test_linear_interval_coverage_with_gaussian_noise() -> None:
    """Points scattered N(0, 2) around a line: over 4,000 forecasts 10 steps ahead from a
    30-point window, the 80 % and 95 % intervals cover within 2.5 and 1.5 points."""
    rng = np.random.default_rng(11)
    inside80 = inside95 = total = 0
    for _ in range(40):
        y = 10 + 0.5 * np.arange(150) + rng.normal(0, 2.0, 150)
        model = LinearModel(30)
        for i in range(140):
            model.learn(float(y[i]))
            if i >= 30:
                p = model.predict(10)[-1]
                actual = y[i + 10]
                inside80 += p.lo80 <= actual <= p.hi80
                inside95 += p.lo95 <= actual <= p.hi95
                total += 1
    assert inside80 / total == pytest.approx(0.80, abs=0.025)
    assert inside95 / total == pytest.approx(0.95, abs=0.015)


def test_student_t_quantiles() -> None:
    exact95 = {2: 4.302653, 3: 3.182446, 5: 2.570582, 10: 2.228139, 30: 2.042272}
    exact80 = {2: 1.885618, 3: 1.637744, 5: 1.475884, 10: 1.372184, 30: 1.310415}
    for dof, q in exact95.items():
        assert student_t(Z95, dof) == pytest.approx(q, rel={2: 0.035, 3: 0.01}.get(dof, 0.005))
    for dof, q in exact80.items():
        assert student_t(Z80, dof) == pytest.approx(q, rel=0.005)


# --- Holt-Winters -------------------------------------------------------------------------


def reference_hw(y: np.ndarray, m: int, a: float, b: float, g: float, h: int) -> np.ndarray:
    """ETS(A,A,A), error-correction form, started from the first two seasons (the season
    their mean deviation from the line through their means), written plainly: the forecasts
    1..h after the last value."""
    first, second = y[:m].mean(), y[m : 2 * m].mean()
    trend = (second - first) / m if b else 0.0  # beta = 0: no trend (ETS(A,N,A))
    centre = (m - 1) / 2
    off = [y[t] - (first + (t - centre) * trend) for t in range(2 * m)]
    season = [(off[i] + off[i + m]) / 2 for i in range(m)]
    level = first + (2 * m - 1 - centre) * trend
    for t in range(2 * m, len(y)):
        e = y[t] - (level + trend + season[t % m])
        level = level + trend + a * e
        trend = trend + b * e
        season[t % m] = season[t % m] + g * e
    n = len(y)
    return np.array([level + k * trend + season[(n + k - 1) % m] for k in range(1, h + 1)])


@pytest.mark.parametrize(
    "params", [HwParams(), HwParams(0.2, 0.01, 0.1), HwParams(0.5, 0.05, 0.3), HwParams(0.05, 0, 0)]
)
def test_holt_winters_equals_the_reference(params: HwParams) -> None:
    y = realish(24 * 20)
    model = HoltWinters(24, params)
    for i, value in enumerate(y):
        model.learn(float(value))
        if i + 1 >= 48 and (i + 1) % 13 == 0:
            expected = reference_hw(y[: i + 1], 24, params.alpha, params.beta, params.gamma, 30)
            got = np.array([p.mean for p in model.predict(30)])
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_holt_winters_waits_for_two_seasons() -> None:
    model = HoltWinters(12, HwParams(0.1, 0.01, 0.1))
    for i in range(23):
        model.learn(float(i))
        assert model.predict(3) == []
    model.learn(23.0)
    assert [p.mean for p in model.predict(3)] == pytest.approx([24.0, 25.0, 26.0])


def test_holt_winters_recovers_trend_and_season() -> None:
    """Level 100, trend 0.05 per point, a season of 48 of amplitude 10, noise N(0, 1): after 20
    seasons the forecasts over two seasons ahead are within 1.0 of the noiseless series, the
    trend within 0.005 of 0.05 and the season's shape within 1.0 everywhere."""
    rng = np.random.default_rng(3)
    m, n = 48, 48 * 20
    t = np.arange(n + 2 * m)
    truth = 100 + 0.05 * t + 10 * np.sin(2 * np.pi * t / m)
    y = truth + rng.normal(0, 1.0, len(t))
    model = HoltWinters(m, HwParams(alpha=0.1, beta=0.001, gamma=0.1))
    for value in y[:n]:
        model.learn(float(value))
    got = np.array([p.mean for p in model.predict(2 * m)])
    assert np.max(np.abs(got - truth[n:])) < 1.0
    assert model.trend == pytest.approx(0.05, abs=0.005)
    phases = (np.arange(m) + n) % m
    shape = np.array([model.seasonal[p] for p in phases])
    np.testing.assert_allclose(
        shape - shape.mean(), 10 * np.sin(2 * np.pi * (np.arange(m) + n) / m), atol=1.0
    )


def simulate_ets(n: int, m: int, p: HwParams, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A series generated by ETS(A,A,A) itself with Gaussian innovations of sd `sigma`."""
    level, trend = 20.0, 0.01
    season = list(5 * np.sin(2 * np.pi * np.arange(m) / m))
    out = np.empty(n)
    for t in range(n):
        e = rng.normal(0, sigma)
        out[t] = level + trend + season[t % m] + e
        level = level + trend + p.alpha * e
        trend = trend + p.beta * e
        season[t % m] += p.gamma * e
    return out


@pytest.mark.parametrize("step", [1, 6, 30])
def test_holt_winters_interval_coverage_with_gaussian_noise(step: int) -> None:
    """Series generated by the model with N(0, 1) innovations: over 20 series and about 4,000
    forecast origins, the 80 % and 95 % intervals `step` ahead (over a season too) cover within
    2.5 and 1.5 points."""
    p, m = HwParams(0.2, 0.01, 0.1), 24
    rng = np.random.default_rng(5)
    inside80 = inside95 = total = 0
    for _ in range(20):
        y = simulate_ets(700, m, p, 1.0, rng)
        model = HoltWinters(m, p)
        for i in range(700 - step):
            model.learn(float(y[i]))
            if i >= 480:
                q = model.predict(step)[-1]
                inside80 += q.lo80 <= y[i + step] <= q.hi80
                inside95 += q.lo95 <= y[i + step] <= q.hi95
                total += 1
    assert inside80 / total == pytest.approx(0.80, abs=0.025)
    assert inside95 / total == pytest.approx(0.95, abs=0.015)


def test_holt_winters_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="season"):
        HoltWinters(1)
    with pytest.raises(ValueError, match="alpha"):
        HoltWinters(4, HwParams(alpha=1.0))
    with pytest.raises(ValueError, match="gamma"):
        HoltWinters(4, HwParams(alpha=0.5, gamma=0.6))


# --- state round trips --------------------------------------------------------------------

values = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(before=values, after=values, window=st.integers(2, 20))
def test_linear_state_round_trip(before: list[float], after: list[float], window: int) -> None:
    running = LinearModel(window)
    for v in before:
        running.learn(v)
    restored = LinearModel.from_bytes(running.to_bytes())
    assert restored.predict(7) == running.predict(7)
    for v in after:
        running.learn(v)
        restored.learn(v)
    assert restored.predict(7) == running.predict(7)
    assert restored.to_bytes() == running.to_bytes()


@settings(max_examples=60, deadline=None)
@given(before=values, after=values, season=st.integers(2, 12))
def test_holt_winters_state_round_trip(
    before: list[float], after: list[float], season: int
) -> None:
    running = HoltWinters(season, HwParams(0.3, 0.02, 0.2))
    for v in before:
        running.learn(v)
    restored = HoltWinters.from_bytes(running.to_bytes())
    assert restored.predict(2 * season) == running.predict(2 * season)
    for v in after:
        running.learn(v)
        restored.learn(v)
    assert restored.predict(2 * season) == running.predict(2 * season)
    assert restored.to_bytes() == running.to_bytes()


@pytest.mark.parametrize("cls", [LinearModel, HoltWinters])
def test_a_damaged_state_is_refused(cls: type[LinearModel] | type[HoltWinters]) -> None:
    model = cls(4)
    for v in range(10):
        model.learn(float(v))
    data = model.to_bytes()
    for bad in (b"", data[:-3], b"\x09" + data[1:], data + b"\x00"):
        with pytest.raises(ValueError):
            cls.from_bytes(bad)
