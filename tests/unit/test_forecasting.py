"""`BucketForecaster`: a rule's forecast as its tier's buckets close, its JSON, and its state
through a checkpoint (a changed rule starts afresh)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.rules.forecast import ForecastRule
from pushsvc.rules.point import Point
from pushsvc.series.forecast_holt_winters import HoltWinters, HwParams
from pushsvc.series.forecast_linear import LinearModel
from pushsvc.series.forecasting import BucketForecaster

M = 60_000_000
HW = ForecastRule(M, 5, "holt_winters", "mean", season=4)
LINEAR = ForecastRule(M, 3, "linear", "max", range=3)


def point(t: int, mean: float, count: int = 2) -> Point:
    return Point(t * M, count, mean * count, mean, mean - 1, mean + 1, 0.5, mean, mean, mean)


def test_the_rules_statistic_is_learned_and_the_forecast_is_dated_from_the_last_bucket() -> None:
    forecaster = BucketForecaster(LINEAR)
    assert forecaster.fields() == {
        "model": "linear",
        "stat": "max",
        "resolution": "1m",
        "from": None,
        "points": [],
    }
    for t in range(4):
        forecaster.learn(point(10 + t, 2.0 * t))  # max = 2t + 1
    fields = forecaster.fields()
    assert fields["from"] == 13 * 60_000
    assert [p["t"] for p in fields["points"]] == [14 * 60_000, 15 * 60_000, 16 * 60_000]
    assert [p["mean"] for p in fields["points"]] == pytest.approx([9.0, 11.0, 13.0])
    reference = LinearModel(3)
    for v in (3.0, 5.0, 7.0):
        reference.learn(v)
    assert [p["hi95"] for p in fields["points"]] == [p.hi95 for p in reference.predict(3)]


def test_rate_is_count_per_second() -> None:
    forecaster = BucketForecaster(ForecastRule(M, 1, "linear", "rate", range=2))
    forecaster.learn(point(0, 1.0, count=60))
    forecaster.learn(point(1, 1.0, count=120))
    (p,) = forecaster.fields()["points"]
    assert p["mean"] == pytest.approx(3.0)


def test_holt_winters_forecasts_after_two_seasons() -> None:
    forecaster = BucketForecaster(HW)
    for t in range(7):
        forecaster.learn(point(t, float(t % 4)))
        assert forecaster.fields()["points"] == []
    forecaster.learn(point(7, 3.0))
    points = forecaster.fields()["points"]
    assert len(points) == 5
    assert [p["mean"] for p in points] == pytest.approx([0.0, 1.0, 2.0, 3.0, 0.0])
    assert all(p["lo95"] <= p["lo80"] <= p["mean"] <= p["hi80"] <= p["hi95"] for p in points)


means = st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=30)


@settings(max_examples=40, deadline=None)
@given(before=means, after=means, rule=st.sampled_from([HW, LINEAR]))
def test_through_a_checkpoint_the_forecasts_are_the_uninterrupted_runs(
    before: list[float], after: list[float], rule: ForecastRule
) -> None:
    running = BucketForecaster(rule)
    for t, v in enumerate(before):
        running.learn(point(t, v))
    restored = BucketForecaster.restored(rule, running.to_bytes())
    assert restored.fields() == running.fields()
    for t, v in enumerate(after, len(before)):
        running.learn(point(t, v))
        restored.learn(point(t, v))
        assert restored.fields() == running.fields()


@pytest.mark.parametrize(
    "changed",
    [
        ForecastRule(M, 5, "holt_winters", "p99", season=4),
        ForecastRule(2 * M, 5, "holt_winters", "mean", season=4),
        ForecastRule(M, 5, "holt_winters", "mean", season=6),
        ForecastRule(M, 5, "holt_winters", "mean", season=4, alpha=0.3),
        ForecastRule(M, 5, "linear", "mean", range=4),
    ],
)
def test_a_state_of_another_rule_or_a_damaged_one_starts_afresh(changed: ForecastRule) -> None:
    running = BucketForecaster(HW)
    for t in range(12):
        running.learn(point(t, math.sin(t)))
    data = running.to_bytes()
    fresh = BucketForecaster.restored(changed, data)
    assert fresh.model.learned == 0 and fresh.last_us == -1
    assert BucketForecaster.restored(HW, data).model.learned == 12
    for bad in (b"", data[:-1], data + b"\x00", b"\x07" + data[1:]):
        assert BucketForecaster.restored(HW, bad).model.learned == 0
    # The horizon is not part of the state: a longer one forecasts from what was learned.
    longer = BucketForecaster.restored(ForecastRule(M, 9, "holt_winters", "mean", season=4), data)
    assert isinstance(longer.model, HoltWinters) and longer.model.params == HwParams(
        HW.alpha, HW.beta, HW.gamma
    )
    assert len(longer.fields()["points"]) == 9
