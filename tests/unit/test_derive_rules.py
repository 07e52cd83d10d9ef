"""`[[derive]]` rules: the expression parser and its values, and every bad rule as the one
line that stops the process, naming the derive table and the problem."""

from __future__ import annotations

import math
import tomllib

import pytest

from pushsvc.errors import DerivedTopic, RulesError
from pushsvc.http.api.error_replies import status_of
from pushsvc.ingest import InputLimits
from pushsvc.ingest.accept import validated
from pushsvc.rules.analytics import Rules, default_rule, parse_rules
from pushsvc.rules.derive import (
    Binary,
    Negate,
    Number,
    Term,
    evaluate,
    parse_expression,
)
from pushsvc.rules.tiers import parse_tiers

S = 1_000_000
DEFAULT = default_rule((10 * S,), ("count", "mean"), parse_tiers("1s:15m,1m:24h"))

SHOP = """
[[rule]]
topics = ["shop.*"]
windows = ["10s"]
series = ["10s:1h", "1m:24h"]

[[rule]]
topics = ["plain"]
windows = ["10s"]
series = []
"""


def _rules(derives: str, rules: str = SHOP) -> Rules:
    return parse_rules(tomllib.loads(rules + derives), DEFAULT, source="rules.toml")


def _derive(topic: str, every: str, value: str) -> str:
    return f'\n[[derive]]\ntopic = "{topic}"\nevery = "{every}"\nvalue = "{value}"\n'


PAID = Term("count", 300 * S, "shop.paid")
CHECKOUT = Term("count", 300 * S, "shop.checkout")


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("1", Number(1.0)),
        (" 2.5e3 ", Number(2500.0)),
        (".5", Number(0.5)),
        ("count[5m](shop.paid)", PAID),
        ("count[ 5m ]( shop.paid )", PAID),
        (
            "count[5m](shop.paid) / count[5m](shop.checkout)",
            Binary("/", PAID, CHECKOUT),
        ),
        # * binds tighter than -, both associate to the left, parentheses group.
        ("1 - 2 * 3", Binary("-", Number(1), Binary("*", Number(2), Number(3)))),
        ("1 - 2 - 3", Binary("-", Binary("-", Number(1), Number(2)), Number(3))),
        ("(1 - 2) * 3", Binary("*", Binary("-", Number(1), Number(2)), Number(3))),
        ("8 / 4 / 2", Binary("/", Binary("/", Number(8), Number(4)), Number(2))),
        ("-count[5m](shop.paid)", Negate(PAID)),
        ("--1", Negate(Negate(Number(1)))),
        ("+1", Number(1)),
        ("rate[1h](a:b-c_d.e)", Term("rate", 3600 * S, "a:b-c_d.e")),
    ],
)
def test_an_expression_reads_as_arithmetic_does(text: str, tree: object) -> None:
    assert parse_expression(text) == tree


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "ends where a number"),
        ("1 +", "ends where a number"),
        ("(1 + 2", "ends where ')'"),
        ("1 + 2)", "expected an operator or the end at character 6"),
        ("1 2", "expected an operator or the end at character 3"),
        ("count", "ends where '['"),
        ("count(shop.paid)", "expected '[' at character 6"),
        ("count[5m shop.paid", "has no closing ']'"),
        ("count[5m](shop.paid", "has no closing ')'"),
        ("count[5x](a)", "is not a duration"),
        ("count[0s](a)", "a range must be longer than 0"),
        ("count[5m](shop.*)", "is not a topic name"),
        ("p99[5m](a)", "unknown statistic 'p99'"),
        ("1e999", "is not a finite number"),
        ("1 ^ 2", "expected an operator or the end"),
        ("__import__('os')", "unknown statistic '__import__'"),
    ],
)
def test_a_bad_expression_says_what_and_where(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_expression(text)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("text", "terms", "value"),
    [
        ("count[5m](shop.paid) / count[5m](shop.checkout)", {PAID: 3.0, CHECKOUT: 4.0}, 0.75),
        ("count[5m](shop.paid) / count[5m](shop.checkout)", {PAID: 3.0, CHECKOUT: 0.0}, None),
        ("1 / (count[5m](shop.paid) - 3)", {PAID: 3.0}, None),
        ("count[5m](shop.paid) * 0 + 1", {PAID: 3.0}, 1.0),
        ("mean[5m](shop.paid) + 1", {Term("mean", 300 * S, "shop.paid"): None}, None),
        ("-(2 - 5) * 2", {}, 6.0),
        ("1e300 * 1e300", {}, None),  # not finite: undefined
    ],
)
def test_a_value_is_undefined_where_a_term_or_a_division_is(
    text: str, terms: dict[Term, float | None], value: float | None
) -> None:
    got = evaluate(parse_expression(text), terms)
    assert got == value or (got is not None and value is not None and math.isclose(got, value))


def test_a_valid_derive_rule_is_described_and_its_topic_refused_to_producers() -> None:
    rules = _rules(
        _derive("shop.conversion", "10s", "count[5m](shop.paid) / count[5m](shop.checkout)")
        + _derive("shop.rate", "1m", "rate[1h](shop.conversion) * 60")
    )
    first, second = rules.derives
    assert second.sources == ("shop.conversion",)
    assert first.sources == ("shop.paid", "shop.checkout")
    assert first.every_us == 10 * S and first.terms == (PAID, CHECKOUT)
    assert dict(first.tiers)["shop.paid"].label == "10s:1h"
    assert rules.derived_topics == {"shop.conversion", "shop.rate"}
    assert rules.describe()["derive"][1] == {
        "derive": 2,
        "topic": "shop.rate",
        "every": "1m",
        "value": "rate[1h](shop.conversion) * 60",
        "sources": ["shop.conversion"],
    }
    # Derive rules are part of what the aggregators compare: another value, another digest.
    assert rules.digest != _rules(_derive("shop.conversion", "10s", "count[5m](shop.paid)")).digest
    assert _rules("").digest == parse_rules(tomllib.loads(SHOP), DEFAULT).digest


@pytest.mark.parametrize(
    ("derives", "line"),
    [
        (
            '\n[[derive]]\ntopic = "shop.x"\nevery = "10s"\nvalue = "1"\nwhen = "now"\n',
            "derive 1 (shop.x): when: unknown field; a derive table has topic, every, value",
        ),
        (
            '\n[[derive]]\ntopic = "shop.x"\nvalue = "count[1m](shop.a)"\n',
            "derive 1 (shop.x): every: missing",
        ),
        (
            '\n[[derive]]\nevery = "10s"\nvalue = "count[1m](shop.a)"\n',
            "derive 1: topic: missing",
        ),
        (
            '\n[[derive]]\ntopic = "shop.x"\nevery = "10s"\n',
            "derive 1 (shop.x): value: missing",
        ),
        (
            _derive("shop.*", "10s", "count[1m](shop.a)"),
            "derive 1 (shop.*): topic: 'shop.*' is not a topic name",
        ),
        (
            _derive("shop.x", "soon", "count[1m](shop.a)"),
            "derive 1 (shop.x): every: 'soon' is not a duration",
        ),
        (
            '\n[[derive]]\ntopic = "shop.x"\nevery = 10\nvalue = "count[1m](shop.a)"\n',
            'derive 1 (shop.x): every: durations are strings like "10s", got int 10',
        ),
        (
            '\n[[derive]]\ntopic = "shop.x"\nevery = "10s"\nvalue = 3\n',
            "derive 1 (shop.x): value: an expression in a string, got 3",
        ),
        (
            _derive("shop.x", "10s", "p99[1m](shop.a)"),
            "derive 1 (shop.x): value: unknown statistic 'p99'; a term takes count, sum, "
            "mean, min, max, rate",
        ),
        (
            _derive("shop.x", "10s", "count[1m](shop.a) +"),
            "derive 1 (shop.x): value: ends where a number",
        ),
        (
            _derive("shop.x", "10s", "count[1m](shop.a) ) "),
            "derive 1 (shop.x): value: expected an operator or the end at character 19",
        ),
        (
            _derive("shop.x", "10s", "2 * 3"),
            "derive 1 (shop.x): value: names no source topic",
        ),
        (
            _derive("shop.x", "10s", "count[15s](shop.a)"),
            "derive 1 (shop.x): value: count[15s](shop.a): the range is not a whole "
            "multiple of every (10s)",
        ),
        (
            _derive("shop.x", "1s", "count[1m](shop.a)"),
            "derive 1 (shop.x): every: 1s is not a series tier of source shop.a (its tiers: "
            "10s:1h, 1m:24h); every must be a resolution every source keeps",
        ),
        (
            _derive("shop.x", "10s", "count[1m](plain)"),
            "derive 1 (shop.x): every: 10s is not a series tier of source plain (its tiers: none)",
        ),
        (
            _derive("shop.x", "10s", "count[40m](shop.a)"),
            "derive 1 (shop.x): value: 40m of shop.a is more than half of what its 10s:1h "
            "tier keeps",
        ),
        (
            _derive("shop.x", "10s", "count[1m](shop.a)")
            + _derive("shop.x", "10s", "count[1m](shop.b)"),
            "derive 2 (shop.x): topic: derived already by derive 1",
        ),
        (
            _derive("shop.x", "10s", "count[1m](shop.x) + 1"),
            "derive 1 (shop.x): value: shop.x is a source of itself (shop.x <- shop.x)",
        ),
        (
            _derive("shop.x", "10s", "count[1m](shop.a) / count[1m](shop.y)")
            + _derive("shop.y", "10s", "count[1m](shop.z)")
            + _derive("shop.z", "10s", "sum[1m](shop.x)"),
            "derive 1 (shop.x): value: shop.x is a source of itself "
            "(shop.x <- shop.y <- shop.z <- shop.x); a derived topic cannot feed its own value",
        ),
    ],
)
def test_a_bad_derive_rule_is_one_line_naming_the_rule_and_the_problem(
    derives: str, line: str
) -> None:
    with pytest.raises(RulesError) as caught:
        _rules(derives)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("rules file rules.toml: ")
    assert line in message, message


def test_a_derive_that_is_no_table_is_one_line() -> None:
    with pytest.raises(RulesError, match=r"write each derived metric as a \[\[derive\]\] table"):
        _rules("", rules='derive = "count[1m](shop.a)"\n' + SHOP)


def test_the_one_path_in_refuses_a_derived_topic_for_a_post_and_the_bridge() -> None:
    limits = InputLimits(derived_topics=frozenset({"shop.conversion"}))
    with pytest.raises(DerivedTopic) as caught:
        validated("shop.conversion", b'{"value": 1}', "application/json", limits=limits, now_us=0)
    assert caught.value.code == "derived_topic" and status_of(caught.value) == 400
    assert validated("shop.paid", b'{"value": 1}', "application/json", limits=limits, now_us=0)
