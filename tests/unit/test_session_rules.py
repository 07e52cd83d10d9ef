"""`[[session]]` rules: a valid one as `GET /rules` describes it, every bad one as the one line
that stops the process (naming the session table and the problem), and the session topic
refused to producers on the one path in."""

from __future__ import annotations

import tomllib
from typing import Any

import orjson
import pytest

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.core.topics import ALERTS
from pushsvc.errors import RulesError, SessionTopic
from pushsvc.http.api.error_replies import status_of
from pushsvc.ingest import InputLimits
from pushsvc.ingest.accept import validated
from pushsvc.rules.analytics import Rules, default_rule, parse_rules
from pushsvc.rules.sessions import FunnelSpec, SessionRule

S = 1_000_000
DEFAULT = default_rule((10 * S,), ("count", "mean"))

VISITS = """
[[session]]
topic = "shop.visits"
from = ["shop.*"]
key = "user"
gap = "30m"
max_duration = "12h"
max_open = 5000
keep_key = true
funnel = { tag = "step", steps = ["view", "cart", "checkout", "paid"], within = "1h" }
"""


def _rules(text: str) -> Rules:
    return parse_rules(tomllib.loads(text), DEFAULT, source="rules.toml")


def test_a_valid_session_rule_is_described_and_its_topic_refused_to_producers() -> None:
    rules = _rules(VISITS)
    (rule,) = rules.sessions
    assert rule == SessionRule(
        1,
        "shop.visits",
        ("shop.*",),
        "user",
        1800 * S,
        12 * 3600 * S,
        5000,
        True,
        FunnelSpec("step", ("view", "cart", "checkout", "paid"), 3600 * S),
    )
    assert rules.describe()["session"] == [
        {
            "session": 1,
            "topic": "shop.visits",
            "from": ["shop.*"],
            "key": "user",
            "gap": "30m",
            "max_duration": "12h",
            "max_open": 5000,
            "keep_key": True,
            "funnel": {
                "tag": "step",
                "steps": ["view", "cart", "checkout", "paid"],
                "within": "1h",
            },
        }
    ]
    assert rules.session_topics == {"shop.visits"}
    # The digest changes with the rule: aggregators with other session rules are told apart.
    assert rules.digest != _rules(VISITS.replace('"30m"', '"20m"')).digest
    limits = InputLimits(session_topics=rules.session_topics)
    with pytest.raises(SessionTopic) as caught:
        validated("shop.visits", b'{"value": 1}', "application/json", limits=limits, now_us=0)
    assert caught.value.code == "session_topic" and status_of(caught.value) == 400
    assert validated("shop.view", b'{"value": 1}', "application/json", limits=limits, now_us=0)


def test_defaults_of_the_optional_fields() -> None:
    (rule,) = _rules('[[session]]\ntopic = "v"\nfrom = ["a"]\nkey = "u"\ngap = "1m"\n').sessions
    assert (rule.max_duration_us, rule.max_open, rule.keep_key, rule.funnel) == (
        None,
        1_000_000,
        False,
        None,
    )


def _session(**fields: str) -> str:
    given = {"topic": '"shop.visits"', "from": '["shop.*"]', "key": '"user"', "gap": '"30m"'}
    given.update(fields)
    return "[[session]]\n" + "".join(f"{k} = {v}\n" for k, v in given.items() if v)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            _session(colour='"red"'),
            "session 1 (shop.visits): colour: unknown field; a session table has topic, from, "
            "key, gap, max_duration, max_open, keep_key, funnel",
        ),
        (_session(gap=""), "session 1 (shop.visits): gap: missing"),
        (_session(gap='"soon"'), "session 1 (shop.visits): gap: 'soon' is not a duration"),
        (_session(gap="30"), "session 1 (shop.visits): gap: durations are strings"),
        (_session(gap='"0s"'), "session 1 (shop.visits): gap: '0s' must be longer than 0"),
        (
            _session(max_duration='"10m"'),
            "session 1 (shop.visits): max_duration: '10m' is shorter than gap (30m)",
        ),
        (
            _session(**{"from": '["shop.*", "shop.visits"]'}),
            "session 1 (shop.visits): from: names the session topic shop.visits itself; a "
            "session topic cannot be a source",
        ),
        (_session(**{"from": "[]"}), "session 1 (shop.visits): from: a non-empty list"),
        (_session(**{"from": '["a b"]'}), "session 1 (shop.visits): from: "),
        (_session(topic='"shop.*"'), "session 1 (shop.*): topic: 'shop.*' is not a topic name"),
        (_session(key='""'), "session 1 (shop.visits): key: '' is not a tag name"),
        (_session(max_open="0"), "session 1 (shop.visits): max_open: 0 is not a positive"),
        (_session(keep_key='"yes"'), "session 1 (shop.visits): keep_key: true or false"),
        (
            _session(funnel='{ tag = "step", steps = ["view", "cart", "view"], within = "1h" }'),
            "session 1 (shop.visits): funnel.steps: 'view' is given twice",
        ),
        (
            _session(funnel='{ tag = "step", steps = [], within = "1h" }'),
            "session 1 (shop.visits): funnel.steps: a non-empty list",
        ),
        (
            _session(funnel='{ tag = "step", steps = ["a"], within = "an hour" }'),
            "session 1 (shop.visits): funnel.within: 'an hour' is not a duration",
        ),
        (
            _session(funnel='{ tag = "step", steps = ["a"], within = "1h", order = 1 }'),
            "session 1 (shop.visits): funnel: unknown key 'order'",
        ),
        (
            _session(funnel='{ steps = ["a"], within = "1h" }'),
            "session 1 (shop.visits): funnel: tag is missing",
        ),
        (
            _session(funnel='{ tag = "step", steps = ["a"], within = "1h", ordr = 1 }'),
            "session 1 (shop.visits): funnel: unknown key 'ordr'; funnel has tag, steps, within",
        ),
        (
            _session(funnel='{ tag = "step", steps = [""], within = "1h" }'),
            "session 1 (shop.visits): funnel.steps: '' is not a tag value (1 to 256 characters)",
        ),
        (
            _session(funnel='"step"'),
            "session 1 (shop.visits): funnel: write it as { tag = ",
        ),
        (_session(max_open="100000001"), "max_open: 100000001 is over the cap of 100000000"),
        (_session(gp='"1m"'), "gp: unknown field; a session table has topic, from, key, gap, "),
        (_session(gp='"1m"'), "funnel (did you mean gap?)"),
        (
            _session() + _session(),
            "session 2 (shop.visits): topic: produced already by session 1",
        ),
        (
            _session(**{"from": '["shop.clicks"]'})
            + _session(topic='"shop.days"', **{"from": '["shop.clicks", "shop.visits"]'}),
            "session 2 (shop.days): from: names the session topic shop.visits of session 1; a "
            "session topic cannot be a source",
        ),
        (
            _session(topic='"shop.rate"')
            + '[[rule]]\ntopics = ["shop.*"]\nwindows = ["1m"]\nseries = ["1s:15m"]\n'
            + '[[derive]]\ntopic = "shop.rate"\nevery = "1s"\nvalue = "count[1s](shop.a)"\n',
            "session 1 (shop.rate): topic: produced already by a [[derive]] rule",
        ),
    ],
)
def test_a_bad_session_rule_is_one_line_naming_the_rule_and_the_problem(
    text: str, line: str
) -> None:
    with pytest.raises(RulesError) as caught:
        _rules(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("rules file rules.toml: ")
    assert line in message, message


def test_a_session_that_is_no_table_is_one_line() -> None:
    with pytest.raises(RulesError, match=r"write each session rule as a \[\[session\]\] table"):
        _rules('session = "shop.visits"\n')


ALERTED = """
[[rule]]
topics = ["shop.visits"]
windows = ["1m"]
stats = ["count"]

[[rule]]
topics = ["shop.*"]
windows = ["1m"]
stats = ["count"]

[[session]]
topic = "shop.visits"
from = ["shop.clicks"]
key = "user"
gap = "10s"
"""


def test_an_alert_may_name_a_session_topics_numbers_and_it_fires_on_them() -> None:
    rules = _rules(
        ALERTED
        + '[[alert]]\nname = "bouncing"\ntopics = ["shop.visits"]\nwhen = "bounce_rate[1m] > 0.5"\n'
    )
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0)
    base = 1_763_700_000 * S

    def visit(at: int, events: int) -> list[dict[str, Any]]:
        event = Event(1.0, base + at * S, {"events": str(events), "reached": "none", "open": "0"})
        drafts = aggregator.apply_events("shop.visits", [event])
        return [orjson.loads(d.body) for d in drafts if d.topic == ALERTS]

    assert visit(0, 3) == []  # no bounce: 0
    assert visit(1, 1) == []  # one of two: 0.5, not over it
    (change,) = visit(2, 1)  # two of three
    assert (change["alert"], change["state"]) == ("bouncing", "firing")
    assert change["value"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("alert", "line"),
    [
        (
            'topics = ["shop.clicks"]\nwhen = "bounce_rate[1m] > 0.5"',
            "statistic 'bounce_rate' is not kept by rule 2",
        ),
        ('topics = ["shop.visits"]\nwhen = "funnel[1m] > 0.5"', "unknown statistic 'funnel'"),
    ],
)
def test_an_alert_on_session_numbers_of_another_topic_or_on_the_funnel_is_refused(
    alert: str, line: str
) -> None:
    with pytest.raises(RulesError) as caught:
        _rules(ALERTED + f'[[alert]]\nname = "a"\n{alert}\n')
    assert line in str(caught.value), caught.value


def test_without_session_rules_no_alert_may_name_session_numbers() -> None:
    text = '[[rule]]\ntopics = ["a"]\nwindows = ["1m"]\n'
    with pytest.raises(RulesError, match="unknown statistic 'bounce_rate'"):
        _rules(text + '[[alert]]\nname = "a"\ntopics = ["a"]\nwhen = "bounce_rate[1m] > 0.5"\n')


def test_the_widest_grace_a_session_rules_sources_may_take() -> None:
    """How long a session rule keeps its sessions open past `gap`: the longest grace among
    the rules its sources may take, the server's where a source may take none."""
    rules = _rules(
        '[[rule]]\ntopics = ["app.clicks"]\ngrace = "1h"\n'
        '[[rule]]\ntopics = ["app.*"]\ngrace = "10m"\n'
        '[[rule]]\ntopics = ["web.*"]\n'
        '[[rule]]\ntopics = ["kiosk.*"]\ngrace = "1s"\n'
    )
    five = 5 * S
    assert rules.widest_grace_under(["app.clicks"], five) == 3600 * S  # rule 1 covers it
    assert rules.widest_grace_under(["app.*"], five) == 3600 * S  # app.clicks among them
    assert rules.widest_grace_under(["app.views"], five) == 600 * S
    assert rules.widest_grace_under(["web.*"], five) == five  # no grace: the server's
    assert rules.widest_grace_under(["kiosk.*"], five) == S
    assert rules.widest_grace_under(["kiosk.*", "shop"], five) == five  # shop: no rule
    assert rules.widest_grace_under(["*"], five) == 3600 * S
