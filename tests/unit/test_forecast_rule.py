"""A rule's `forecast` field: what a valid one means, what `GET /rules` says of it, and the one
line a bad one stops the process with."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pushsvc.errors import ConfigError
from pushsvc.rules import forecast as rule_forecast
from pushsvc.rules.analytics import Rules, default_rule, load_rules, parse_rules
from pushsvc.rules.forecast import ForecastRule
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.forecast_holt_winters import HwParams

S = 1_000_000
M = 60 * S
DEFAULT = default_rule((10 * S,), ("count", "mean"), parse_tiers("1s:15m,1m:24h"))
A = '[[rule]]\ntopics = ["a"]\n'


def _rules(text: str) -> Rules:
    return parse_rules(tomllib.loads(text), DEFAULT, source="rules.toml")


def test_holt_winters_as_the_design_writes_it() -> None:
    (rule,) = _rules(
        A + 'forecast = { stat = "mean", tier = "1m", model = "holt_winters", season = "1d", '
        'horizon = "6h" }'
    ).rules
    assert rule.forecast == ForecastRule(M, 360, "holt_winters", "mean", season=1440, fit=True)
    assert rule.describe()["forecast"] == {
        "stat": "mean",
        "tier": "1m",
        "model": "holt_winters",
        "horizon": "6h",
        "horizon_points": 360,
        "season": "24h",
        "season_points": 1440,
        "fit": True,
    }
    # The rule's fixed defaults are the model's.
    assert HwParams() == HwParams(
        rule_forecast.DEFAULT_ALPHA,
        rule_forecast.DEFAULT_BETA,
        rule_forecast.DEFAULT_GAMMA,
        rule_forecast.DEFAULT_PHI,
    )


def test_any_parameter_given_fixes_them_all_the_rest_at_their_defaults() -> None:
    (rule,) = _rules(A + 'forecast = { tier = "1m", horizon = "30m", phi = 0.9 }').rules
    assert rule.forecast is not None and not rule.forecast.fit
    assert rule.forecast == ForecastRule(
        M, 30, "holt_winters", "mean", 1440, 0, 0.02, 0.0, 0.1, 0.9, fit=False
    )
    described = rule.describe()["forecast"]
    assert "fit" not in described
    assert (described["alpha"], described["beta"], described["gamma"], described["phi"]) == (
        rule_forecast.DEFAULT_ALPHA,
        rule_forecast.DEFAULT_BETA,
        rule_forecast.DEFAULT_GAMMA,
        0.9,
    )


def test_the_fields_a_rule_leaves_out_take_their_defaults() -> None:
    (rule,) = _rules(A + 'forecast = { tier = "1m", horizon = "30m" }').rules
    assert rule.forecast == ForecastRule(M, 30, "holt_winters", "mean", season=1440, fit=True)


def test_linear_over_a_range_with_its_own_parameters() -> None:
    (rule,) = _rules(
        A + 'series = ["5m:7d"]\n'
        'forecast = { stat = "p99", tier = "5m", model = "linear", range = "1h", horizon = "1h" }'
    ).rules
    assert rule.forecast == ForecastRule(300 * S, 12, "linear", "p99", range=12)
    assert rule.describe()["forecast"] == {
        "stat": "p99",
        "tier": "5m",
        "model": "linear",
        "horizon": "1h",
        "horizon_points": 12,
        "range": "1h",
        "range_points": 12,
    }
    (tuned,) = _rules(
        A + 'forecast = { tier = "1m", season = "1h", horizon = "1h", alpha = 0.3, beta = 0.01, '
        "gamma = 0.2 }"
    ).rules
    assert tuned.forecast == ForecastRule(M, 60, "holt_winters", "mean", 60, 0, 0.3, 0.01, 0.2)


def test_the_digest_changes_with_the_field() -> None:
    plain = _rules(A)
    assert "forecast" not in plain.rules[0].describe()
    one = _rules(A + 'forecast = { tier = "1m", horizon = "1h" }')
    other = _rules(A + 'forecast = { tier = "1m", horizon = "2h" }')
    assert len({plain.digest, one.digest, other.digest}) == 3


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('forecast = "1m"', "forecast: write it as { tier"),
        ('forecast = { horizon = "1h" }', "forecast: tier is missing"),
        ('forecast = { tier = "1m" }', "forecast: horizon is missing"),
        ('forecast = { tier = "1m", horizon = "1h", n = 1 }', "forecast: unknown key 'n'"),
        ('forecast = { tier = 60, horizon = "1h" }', "forecast: tier is a duration like"),
        (
            'forecast = { tier = "5m", horizon = "1h" }',
            "forecast: tier = '5m' is not a tier the rule's series keep (they keep 1s, 1m)",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", stat = "median" }',
            "forecast: unknown stat 'median'; known: mean, count",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", model = "arima" }',
            "forecast: unknown model 'arima'; known: holt_winters, linear",
        ),
        (
            'forecast = { tier = "1m", horizon = "90s" }',
            "forecast: horizon = '90s' is not a whole number of 1m buckets",
        ),
        (
            'forecast = { tier = "1m", horizon = "3d" }',
            "forecast: horizon = '3d' is 4320 buckets of 1m; it may be 1 to 2880",
        ),
        (
            'forecast = { tier = "1s", horizon = "1m" }',
            "forecast: season = '1d' is 86400 buckets of 1s; it may be 2 to 10080",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", season = "1m" }',
            "forecast: season = '1m' is 1 buckets of 1m; it may be 2 to 10080",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", model = "linear" }',
            "forecast: range is missing",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", model = "linear", range = "1h", '
            'season = "1d" }',
            "forecast: season is for model = 'holt_winters', not 'linear'",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", range = "1h" }',
            "forecast: range is for model = 'linear'",
        ),
        ('forecast = { tier = "1m", horizon = "1h", alpha = 1 }', "alpha 1.0 is not in (0, 1)"),
        (
            'forecast = { tier = "1m", horizon = "1h", alpha = 0.1, beta = 0.2 }',
            "forecast: beta 0.2 is not in [0, alpha]",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", alpha = 0.5, gamma = 0.6 }',
            "forecast: gamma 0.6 is not in [0, 1 - alpha]",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", phi = 1.5 }',
            "forecast: phi 1.5 is not in (0, 1]",
        ),
        (
            'forecast = { tier = "1m", horizon = "1h", gamma = true }',
            "forecast: gamma is a number, got bool True",
        ),
    ],
)
def test_a_bad_forecast_field_is_one_line_naming_the_rule(
    tmp_path: Path, body: str, line: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(A + body)
    with pytest.raises(ConfigError) as raised:
        load_rules(str(path), DEFAULT)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"rules file {path}: rule 1 (a): ")
    assert line in message


FORECASTING = A + 'forecast = { tier = "1m", horizon = "1h", model = "linear", range = "30m" }\n'


def _alert(when: str) -> str:
    return f'[[alert]]\nname = "soon"\ntopics = ["a"]\nwhen = "{when}"\n'


def test_an_alert_may_name_the_forecast() -> None:
    rules = _rules(FORECASTING + _alert("forecast(mean, 30m) > 100"))
    (alert,) = rules.alerts
    assert (alert.when.stat, alert.when.window, alert.when.ahead_us) == (
        "mean",
        "forecast:30m",
        30 * M,
    )
    assert alert.describe()["when"] == "forecast(mean, 30m) > 100"
    (spaced,) = _rules(FORECASTING + _alert("forecast( mean ,1800s )>=1e2")).alerts
    assert spaced.when.window == "forecast:30m" and spaced.when.threshold == 100


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (A + _alert("forecast(mean, 30m) > 100"), "when: rule 1 has no forecast"),
        (FORECASTING + _alert("forecast(p99, 30m) > 1"), "when: rule 1 forecasts mean, not p99"),
        (
            FORECASTING + _alert("forecast(mean, 2h) > 1"),
            "when: 2h ahead is not a whole number of 1m buckets within rule 1's forecast "
            "horizon (1h)",
        ),
        (FORECASTING + _alert("forecast(mean, 90s) > 1"), "when: 90s ahead is not a whole"),
        (FORECASTING + _alert("forecast(mean, 0s) > 1"), "how far ahead must be longer than 0"),
        (FORECASTING + _alert("forecast(mean, soon) > 1"), "'soon' is not a duration"),
        (FORECASTING + _alert("forecast(mean) > 1"), "nor forecast(stat, ahead) op number"),
    ],
)
def test_a_bad_forecast_condition_is_one_line(tmp_path: Path, body: str, line: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as raised:
        load_rules(str(path), DEFAULT)
    message = str(raised.value)
    assert "\n" not in message and line in message
