"""`GET /rules` under a scope (pushsvc.security.visible_rules), with Hypothesis: what is shown
names only selectors that reach a readable topic, and for every readable topic the first
shown rule that matches is the rule the server uses (what the dashboard's `ruleFor` picks)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pushsvc.core.topics import TopicMatcher
from pushsvc.rules.analytics import Rules, default_rule, parse_rules
from pushsvc.security.scopes import Scope
from pushsvc.security.visible_rules import visible_rules

segments = st.sampled_from(["a", "b", "ab", "c"])
dotted = st.lists(segments, min_size=1, max_size=3).map(".".join)
selectors = st.one_of(dotted, dotted.map(lambda prefix: prefix + ".*"), st.just("*"))
selector_lists = st.lists(selectors, min_size=1, max_size=3, unique=True)
DEFAULT = default_rule((10_000_000,), ("count", "mean"))


def _rules(families: list[list[str]], alerted: list[list[str]]) -> Rules:
    return parse_rules(
        {
            "rule": [{"topics": topics, "windows": ["10s"]} for topics in families],
            "alert": [
                {"name": f"alert_{n}", "topics": topics, "when": "mean[10s] > 1"}
                for n, topics in enumerate(alerted)
            ],
        },
        DEFAULT,
    )


def _chosen(described: dict[str, Any], topic: str) -> int:
    """The rule a reader of the answer takes for `topic`: the first whose selectors match."""
    for rule in described["rules"]:
        if TopicMatcher(rule["topics"])(topic):
            return int(rule["rule"])
    return 0


def _probes(*lists: list[str]) -> list[str]:
    found = []
    for chosen in lists:
        for selector in chosen:
            base = selector.removesuffix(".*").removesuffix("*") or "a"
            found += [base, base + ".x", base + ".b.c"]
    return found


@given(
    families=st.lists(selector_lists, max_size=4),
    alerted=st.lists(selector_lists, max_size=3),
    scope=selector_lists,
)
def test_shown_rules_reach_readable_topics_and_keep_each_ones_rule(
    families: list[list[str]], alerted: list[list[str]], scope: list[str]
) -> None:
    rules, granted = _rules(families, alerted), Scope.of(scope)
    shown = visible_rules(rules, granted)
    for entry in [*shown["rules"], *shown.get("alerts", [])]:
        assert entry["topics"] and all(granted.reaches(s) for s in entry["topics"])
    for topic in _probes(scope, *families, *alerted):
        if granted.allows(topic):
            assert _chosen(shown, topic) == rules.for_topic(topic).number, topic
            named = {a["name"] for a in shown.get("alerts", [])}
            assert {a.name for a in rules.alerts_for(topic)} <= named, topic


def test_auth_off_and_a_scope_of_everything_show_every_rule() -> None:
    rules = _rules([["secret.*"], ["public.*"]], [["secret.x"]])
    assert visible_rules(rules, None) == rules.describe()
    assert visible_rules(rules, Scope.of(["*"])) == rules.describe()
    shown = visible_rules(rules, Scope.of(["public.*"]))
    assert [r["topics"] for r in shown["rules"]] == [["public.*"]]
    assert "alerts" not in shown and shown["digest"] == rules.digest


def test_a_session_rule_is_shown_to_who_may_read_its_topic_and_all_its_sources() -> None:
    rules = parse_rules(
        {
            "session": [
                {"topic": "shop.visits", "from": ["shop.clicks.*"], "key": "u", "gap": "1m"},
                {
                    "topic": "shop.orders",
                    "from": ["shop.cart", "vip.cart"],
                    "key": "u",
                    "gap": "1m",
                },
            ]
        },
        DEFAULT,
    )

    def shown(*selectors: str) -> list[str]:
        described = visible_rules(rules, Scope.of(list(selectors)))
        return [rule["topic"] for rule in described.get("session", [])]

    assert shown("*") == ["shop.visits", "shop.orders"]
    assert shown("shop.*") == ["shop.visits"]  # not vip.cart
    assert shown("shop.*", "vip.*") == ["shop.visits", "shop.orders"]
    assert shown("shop.visits", "shop.clicks.*") == ["shop.visits"]
    assert shown("shop.visits", "shop.clicks.web") == []  # part of the pattern only
    assert shown("shop.clicks.*") == []  # not its topic
