"""Rules that can never apply (an earlier rule matches every topic they name) are found, with
the rules that take their topics first; a rule that still gets some topic is not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pushsvc.config import Settings
from pushsvc.rules.analytics import default_rule, parse_rules
from pushsvc.rules.shadowed import shadowed
from pushsvc.runtime import Runtime

DEFAULT = default_rule([60_000_000], ["count", "mean"])


@pytest.mark.parametrize(
    ("selectors", "never"),
    [
        ([["a.*"], ["a.b"]], [(2, [1])]),
        ([["*"], ["x"]], [(2, [1])]),
        ([["a.*"], ["a.b.*"]], [(2, [1])]),
        ([["a.*"], ["a.*"]], [(2, [1])]),
        ([["a.b"], ["a.b"]], [(2, [1])]),
        ([["a.*"], ["c"], ["a.x", "c"]], [(3, [1, 2])]),
        # Some topic still takes it: not reported.
        ([["a.b"], ["a.*"]], []),
        ([["a.*"], ["a.b", "c"]], []),
        ([["a.b"], ["a.b.*"]], []),
        ([["ab.*"], ["a.*"]], []),
        ([["a.*"], ["ab"]], []),
        ([["x"], ["*"]], []),
    ],
)
def test_a_rule_every_topic_of_which_an_earlier_one_takes_is_found(
    selectors: list[list[str]], never: list[tuple[int, list[int]]]
) -> None:
    assert shadowed([(n, s) for n, s in enumerate(selectors, start=1)]) == never


def test_the_line_names_both_rules() -> None:
    document = {
        "rule": [
            {"topics": ["restaurant.*"], "windows": ["1m"], "stats": ["count"]},
            {"topics": ["restaurant.kitchen"], "windows": ["1h"], "stats": ["p90"]},
        ]
    }
    rules = parse_rules(document, DEFAULT, source="rules.toml")
    assert rules.never_applied == (
        "rules file rules.toml: rule 2 (restaurant.kitchen) never applies: its topics take "
        "rule 1 (restaurant.*) first (a topic takes the first rule that matches it; move it "
        "above)",
    )


def test_the_process_that_applies_the_rules_says_so_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\ntopics = ["a.*"]\nwindows = ["1m"]\nstats = ["count"]\n'
        '[[rule]]\ntopics = ["a.b"]\nwindows = ["5m"]\nstats = ["mean"]\n'
    )
    settings = Settings.load({"rules": str(rules), "tick": "0"}, {})
    with caplog.at_level(logging.WARNING, logger="pushsvc.runtime"):
        runtime = Runtime.build(settings, web=False, aggregate=True)
        runtime.close()
    said = [r.getMessage() for r in caplog.records if "never applies" in r.getMessage()]
    assert said == [
        f"rules file {rules}: rule 2 (a.b) never applies: its topics take rule 1 (a.*) first "
        "(a topic takes the first rule that matches it; move it above)"
    ]
