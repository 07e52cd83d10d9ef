"""What a forecast costs per close, whatever its horizon and its model's window: its message
carries at most `MESSAGE_STEPS` of the horizon's steps, the series keeps the model's outlook
(not the model), and an alert makes only the step it reads; every step equals the model's own,
bit for bit."""

from __future__ import annotations

import math
import random

import pytest

from pushsvc.rules.forecast import MAX_HORIZON, MAX_RANGE, MAX_SEASON, ForecastRule
from pushsvc.rules.point import Point
from pushsvc.series.forecast_outlook import outlook_from_bytes
from pushsvc.series.forecasting import (
    MESSAGE_STEPS,
    BucketForecaster,
    kept_fields,
    message_steps,
)

S = 1_000_000
WORST_LINEAR = ForecastRule(S, MAX_HORIZON, "linear", "mean", range=MAX_RANGE)
WORST_HW = ForecastRule(S, MAX_HORIZON, "holt_winters", "mean", season=MAX_SEASON)
SHORT_HW = ForecastRule(S, 7, "holt_winters", "mean", season=24)


def point(t: int, mean: float) -> Point:
    return Point(t * S, 2, mean * 2, mean, mean - 1, mean + 1, 0.5, mean, mean, mean)


def learned(rule: ForecastRule, count: int, seed: int = 1) -> BucketForecaster:
    rng = random.Random(seed)
    forecaster = BucketForecaster(rule)
    for t in range(count):
        forecaster.learn(point(t, 10 + math.sin(t / 7) + rng.gauss(0, 0.3) + t / 500))
    return forecaster


@pytest.mark.parametrize("horizon", [1, 2, 59, 60, 61, 100, 119, 120, 121, 360, 2879, 2880])
def test_a_message_carries_at_most_its_share_of_steps_evenly_to_the_horizons_end(
    horizon: int,
) -> None:
    steps = message_steps(horizon)
    assert len(steps) <= MESSAGE_STEPS
    assert steps[-1] == horizon and steps[0] >= 1
    if horizon <= MESSAGE_STEPS:
        assert list(steps) == list(range(1, horizon + 1))
    else:
        assert steps.step == math.ceil(horizon / MESSAGE_STEPS)
        assert steps[0] <= steps.step


@pytest.mark.parametrize("rule", [WORST_LINEAR, WORST_HW], ids=["linear", "holt_winters"])
def test_the_worst_rules_message_is_its_share_of_the_full_forecast_bit_for_bit(
    rule: ForecastRule,
) -> None:
    forecaster = learned(rule, 2 * MAX_SEASON + 10)
    full = forecaster.fields()
    assert len(full["points"]) == MAX_HORIZON
    message = forecaster.message_fields()
    assert message["every"] == MAX_HORIZON // MESSAGE_STEPS
    assert len(message["points"]) == MESSAGE_STEPS
    assert message["points"] == [full["points"][h - 1] for h in message_steps(MAX_HORIZON)]
    assert {k: v for k, v in message.items() if k not in ("points", "every")} == {
        k: v for k, v in full.items() if k != "points"
    }
    # What the series keeps makes the whole forecast again, and costs a few numbers (the
    # seasonal model: its season's values over the horizon), not the model's window.
    kept = forecaster.kept()
    assert kept_fields(rule, kept) == full
    assert len(kept) < 8 * MAX_HORIZON + 200
    assert len(kept) < len(forecaster.to_bytes()) / 3
    if rule.model == "linear":
        assert len(kept) < 100


def test_an_alerts_step_is_the_models_step() -> None:
    forecaster = learned(WORST_HW, 2 * MAX_SEASON + 3)
    predicted = forecaster.predict()
    for h in (1, 2, 30, 1800, MAX_HORIZON):
        assert forecaster.step(h) == predicted[h - 1]
    assert forecaster.step(MAX_HORIZON + 1) is None
    assert BucketForecaster(WORST_HW).step(1) is None


def test_a_seasonal_outlook_shorter_than_its_season_holds_the_horizon_only() -> None:
    forecaster = learned(SHORT_HW, 60)
    outlook = forecaster.model.outlook(SHORT_HW.horizon)
    assert outlook is not None and outlook.reach == 7
    assert outlook_from_bytes(outlook.to_bytes()) == outlook
    assert kept_fields(SHORT_HW, forecaster.kept()) == forecaster.fields()
    # A longer horizon in a changed rules file: the steps it holds, until the next close.
    longer = ForecastRule(S, 30, "holt_winters", "mean", season=24)
    assert len(kept_fields(longer, forecaster.kept())["points"]) == 7


def test_a_kept_forecast_of_another_rule_or_damaged_is_none_yet() -> None:
    kept = learned(SHORT_HW, 60).kept()
    other = ForecastRule(S, 7, "linear", "mean", range=5)
    assert kept_fields(other, kept) == {
        "model": "linear", "stat": "mean", "resolution": "1s", "from": None, "points": [],
    }  # fmt: skip
    assert kept_fields(SHORT_HW, kept[:-3])["points"] == []
    assert kept_fields(SHORT_HW, b"")["points"] == []


def test_a_forecast_kept_as_the_models_whole_state_is_still_read() -> None:
    forecaster = learned(SHORT_HW, 60)
    assert kept_fields(SHORT_HW, forecaster.to_bytes()) == forecaster.fields()
