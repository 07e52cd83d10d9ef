"""A rule's `anomaly` field: what a valid one means, what `GET /rules` says of it, and the one
line a bad one stops the process with."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pushsvc.errors import ConfigError
from pushsvc.rules import anomaly as rule_anomaly
from pushsvc.rules.analytics import Rules, default_rule, load_rules, parse_rules
from pushsvc.rules.anomaly import DEFAULT_LEARN_POINTS, AnomalyRule
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series import anomaly as detector

S = 1_000_000
# The server's tiers: what a rule without its own `series` keeps.
DEFAULT = default_rule((10 * S,), ("count", "mean"), parse_tiers("1s:15m,1m:24h"))
A = '[[rule]]\ntopics = ["a"]\n'


def _rules(text: str) -> Rules:
    return parse_rules(tomllib.loads(text), DEFAULT, source="rules.toml")


def test_the_fields_a_rule_leaves_out_take_their_defaults() -> None:
    (rule,) = _rules(A + 'anomaly = { every = "1m" }').rules
    assert rule.anomaly == AnomalyRule(60 * S, "mean", DEFAULT_LEARN_POINTS, 0.5)
    # The rule's defaults are the detector's: a rule that leaves them out gets what the
    # detector (and bench/nab.py's figures) were tuned with.
    assert rule_anomaly.DEFAULT_THRESHOLD == detector.DEFAULT_THRESHOLD
    assert detector.Params().learn == rule_anomaly.DEFAULT_LEARN_POINTS


def test_every_field_is_read_and_described() -> None:
    (rule,) = _rules(
        A + 'series = ["5m:7d"]\n'
        'anomaly = { every = "5m", stat = "p99", learn = "1d", threshold = 0.75 }'
    ).rules
    assert rule.anomaly == AnomalyRule(300 * S, "p99", 288, 0.75)
    assert rule.describe()["anomaly"] == {
        "every": "5m",
        "stat": "p99",
        "learn": "24h",
        "learn_points": 288,
        "threshold": 0.75,
    }


def test_the_digest_changes_with_the_field_and_not_without_it() -> None:
    plain = _rules(A)
    assert "anomaly" not in plain.rules[0].describe()
    scored = _rules(A + 'anomaly = { every = "1m" }')
    other = _rules(A + 'anomaly = { every = "1m", threshold = 0.9 }')
    assert len({plain.digest, scored.digest, other.digest}) == 3


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (A + 'anomaly = "1m"', "rule 1 (a): anomaly: write it as { every"),
        (A + "anomaly = {}", "rule 1 (a): anomaly: every is missing"),
        (A + 'anomaly = { every = "1m", n = 1 }', "rule 1 (a): anomaly: unknown key 'n'"),
        (A + 'anomaly = { every = "1x" }', "rule 1 (a): anomaly.every: '1x' is not a duration"),
        (A + "anomaly = { every = 60 }", "rule 1 (a): anomaly.every: durations are strings like"),
        (
            A + 'anomaly = { every = "5m" }',
            "rule 1 (a): anomaly: every = '5m' is not a tier the rule's series keep "
            "(they keep 1s, 1m)",
        ),
        (
            A + 'series = ["10s:1h"]\nanomaly = { every = "1m" }',
            "rule 1 (a): anomaly: every = '1m' is not a tier the rule's series keep "
            "(they keep 10s)",
        ),
        (
            A + 'series = []\nanomaly = { every = "1m" }',
            "(they keep none)",
        ),
        (
            A + 'anomaly = { every = "1m", stat = "median" }',
            "rule 1 (a): anomaly.stat: unknown stat 'median'; known: mean, count",
        ),
        (
            A + 'anomaly = { every = "1m", stat = "var" }',
            "rule 1 (a): anomaly.stat: unknown stat 'var'",
        ),
        (
            A + 'anomaly = { every = "1m", learn = "9m" }',
            "rule 1 (a): anomaly: learn = '9m' is shorter than 10 buckets of 1m",
        ),
        (
            A + 'anomaly = { every = "1m", learn = "0s" }',
            "rule 1 (a): anomaly.learn: '0s' must be longer than 0",
        ),
        (
            A + 'anomaly = { every = "1m", threshold = 0 }',
            "rule 1 (a): anomaly.threshold: 0 is not a number in (0, 1]",
        ),
        (
            A + 'anomaly = { every = "1m", threshold = 1.5 }',
            "rule 1 (a): anomaly.threshold: 1.5 is not a number in (0, 1]",
        ),
        (
            A + 'anomaly = { every = "1m", threshold = true }',
            "rule 1 (a): anomaly.threshold: True is not a number",
        ),
        (
            A + 'anomaly = { every = "1m", threshold = "high" }',
            "rule 1 (a): anomaly.threshold: 'high' is not a number",
        ),
    ],
)
def test_a_bad_anomaly_field_is_one_line_naming_the_rule(
    tmp_path: Path, body: str, line: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as raised:
        load_rules(str(path), DEFAULT)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"rules file {path}: ")
    assert line in message


ALERTED = A + 'windows = ["1m", "1h"]\nlast = [20]\nanomaly = { every = "1m" }\n'


def test_anomaly_rate_is_a_statistic_of_a_scoring_rules_time_windows() -> None:
    rules = _rules(
        ALERTED + '[[alert]]\nname = "odd"\ntopics = ["a"]\nwhen = "anomaly_rate[1h] > 0.05"\n'
    )
    assert rules.rules[0].scalars[-1] == "anomaly_rate"
    assert "anomaly_rate" in rules.stats
    assert rules.alerts[0].describe()["when"] == "anomaly_rate[1h] > 0.05"
    assert "anomaly_rate" not in _rules(A).stats


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            ALERTED + '[[alert]]\nname = "odd"\ntopics = ["a"]\nwhen = "anomaly_rate[last20] > 0"',
            "alert 1 (odd): when: anomaly_rate is kept by time windows only, not by 'last20'",
        ),
        (
            A + '[[alert]]\nname = "odd"\ntopics = ["a"]\nwhen = "anomaly_rate[10s] > 0"',
            "alert 1 (odd): when: unknown statistic 'anomaly_rate'",
        ),
    ],
)
def test_a_bad_anomaly_rate_alert_is_one_line(tmp_path: Path, body: str, line: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as raised:
        load_rules(str(path), DEFAULT)
    assert "\n" not in str(raised.value) and line in str(raised.value)
