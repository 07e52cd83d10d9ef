"""Alert rules and instance states (pure): the `[[alert]]` tables of a rules file are checked at
start with one line per problem; an instance moves inactive → pending → firing → resolved as
Prometheus's alerting rules do, on the topic clock, with `for`, `keep_firing_for` and
hysteresis; a null statistic never matches; groups are instances of their own; the state
survives a restore exactly."""

from __future__ import annotations

import re
import tomllib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.alerts.first_look import first_look
from pushsvc.alerts.states import TopicAlerts
from pushsvc.core.topics import overlap
from pushsvc.errors import RulesError
from pushsvc.rules.alerts import AlertRule, covers, parse_condition
from pushsvc.rules.analytics import default_rule, parse_rules

S = 1_000_000
RULES = """
[[rule]]
topics = ["kitchen.*"]
windows = ["10s", "1m"]
stats = ["count", "mean", "p99"]
group_by = ["station"]
"""


def _alerts(alerts: str, rules: str = RULES) -> tuple[AlertRule, ...]:
    default = default_rule((10 * S, 60 * S, 300 * S), ("count", "mean", "max"))
    return parse_rules(tomllib.loads(rules + alerts), default).alerts


def _alert(when: str = "mean[1m] > 10", **fields: str) -> AlertRule:
    extra = "".join(f'{k} = "{v}"\n' for k, v in fields.items())
    (alert,) = _alerts(
        f'[[alert]]\nname = "a"\ntopics = ["kitchen.*"]\nwhen = "{when}"\n{extra}'
        'labels = { severity = "page" }\nannotations = { summary = "too slow" }\n'
    )
    return alert


def _run(alert: AlertRule, steps: list[tuple[float, float | None]]) -> list[tuple[str, float]]:
    """(state, since in s) of every change, feeding (clock s, mean) evaluations."""
    topic = TopicAlerts("kitchen.a", [alert])
    out = []
    for clock, mean in steps:
        windows = {"1m": {"mean": mean, "count": 1}}
        out += [(c.state, c.since_us / S) for c in topic.evaluate(round(clock * S), windows)]
    return out


def test_pending_then_firing_after_for_then_resolved() -> None:
    alert = _alert(**{"for": "30s"})
    steps = [(0, 5), (10, 11), (20, 12), (39.9, 13), (40, 14), (50, 15), (60, 2)]
    assert _run(alert, steps) == [("pending", 10), ("firing", 40), ("resolved", 60)]


def test_a_pending_instance_that_clears_goes_back_to_inactive() -> None:
    alert = _alert(**{"for": "30s"})
    assert _run(alert, [(0, 11), (10, 5), (20, 12), (49, 12), (50, 12)]) == [
        ("pending", 0),
        ("inactive", 10),  # at the first evaluation where `when` does not hold
        ("pending", 20),  # a fresh pending period: `for` counts from here
        ("firing", 50),
    ]


def test_a_pending_instance_that_clears_is_no_longer_live() -> None:
    topic = TopicAlerts("kitchen.a", [_alert(**{"for": "30s"})])
    topic.evaluate(0, {"1m": {"mean": 11.0}})
    assert topic.live() and [i.state for i in topic.active()] == ["pending"]
    topic.evaluate(10 * S, {"1m": {"mean": 5.0}})
    assert not topic.live() and list(topic.active()) == []


def test_for_zero_fires_at_once() -> None:
    assert _run(_alert(), [(0, 5), (1, 11), (2, 3)]) == [("firing", 1), ("resolved", 2)]


def test_keep_firing_for_holds_through_a_short_clear_and_a_relapse_resets_it() -> None:
    alert = _alert(keep_firing_for="1m")
    steps = [(0, 11), (10, 5), (50, 12), (60, 5), (119, 5), (120, 5)]
    # Cleared at 10, relapsed at 50 (still firing), cleared again at 60: resolved at 120.
    assert _run(alert, steps) == [("firing", 0), ("resolved", 120)]


def test_hysteresis_keeps_firing_between_the_two_thresholds() -> None:
    alert = _alert(when="mean[1m] > 900", clear="mean[1m] < 800")
    steps = [(0, 950), (1, 850), (2, 801), (3, 799), (4, 850), (5, 901)]
    assert _run(alert, steps) == [("firing", 0), ("resolved", 3), ("firing", 5)]


def test_a_null_statistic_never_matches_and_resolves() -> None:
    alert = _alert(when="mean[1m] < 100")
    assert _run(alert, [(0, None), (1, 50), (2, None)]) == [("firing", 1), ("resolved", 2)]


def test_groups_and_the_overflow_group_are_instances_of_their_own() -> None:
    topic = TopicAlerts("kitchen.a", [_alert()])
    hot = {"1m": {"mean": 50.0}}
    cold = {"1m": {"mean": 1.0}}
    grill = topic.evaluate(0, hot, '["grill"]', {"station": "grill"})
    other = topic.evaluate(0, hot, '["(other)"]', {"station": "(other)"})
    fry = topic.evaluate(0, cold, '["fry"]', {"station": "fry"})
    whole = topic.evaluate(0, hot)
    assert [(c.group, c.state) for c in grill + other + fry + whole] == [
        ({"station": "grill"}, "firing"),
        ({"station": "(other)"}, "firing"),
        (None, "firing"),
    ]
    assert {i.group_id for i in topic.active()} == {'["grill"]', '["(other)"]', ""}
    # A forgotten group's firing instance resolves, at the clock it is forgotten.
    gone = topic.forget_group('["grill"]', 7 * S)
    assert [(c.state, c.since_us) for c in gone] == [("resolved", 7 * S)]


def test_a_forgotten_groups_pending_instance_turns_inactive() -> None:
    topic = TopicAlerts("kitchen.a", [_alert(**{"for": "30s"})])
    topic.evaluate(0, {"1m": {"mean": 50.0}}, '["grill"]', {"station": "grill"})
    gone = topic.forget_group('["grill"]', 9 * S)
    assert [(c.state, c.since_us) for c in gone] == [("inactive", 9 * S)]
    assert list(topic.active()) == []


def test_a_change_carries_what_the_alerts_topic_shows() -> None:
    (change,) = TopicAlerts("kitchen.a", [_alert()]).evaluate(
        5 * S, {"1m": {"mean": 12.5}}, '["grill"]', {"station": "grill"}
    )
    assert change.body() == (
        b'{"alert":"a","topic":"kitchen.a","group":{"station":"grill"},"state":"firing",'
        b'"value":12.5,"since":5.0,"labels":{"severity":"page"},'
        b'"annotations":{"summary":"too slow"}}'
    )


@settings(max_examples=150, deadline=None)
@given(
    means=st.lists(st.one_of(st.none(), st.floats(0, 20)), min_size=1, max_size=60),
    cut=st.floats(0, 1),
)
def test_a_restored_state_continues_exactly(means: list[float | None], cut: float) -> None:
    alert = _alert(clear="mean[1m] < 8", **{"for": "3s", "keep_firing_for": "2s"})
    rules = [alert]
    at = int(len(means) * cut)
    steps = [(i * S, {"1m": {"mean": m}}) for i, m in enumerate(means)]
    running = TopicAlerts("t", rules)
    for clock, windows in steps[:at]:
        running.evaluate(clock, windows)
    restored = TopicAlerts.restored("t", rules, running.durable_state())
    for clock, windows in steps[at:]:
        assert restored.evaluate(clock, windows) == running.evaluate(clock, windows)


def test_changes_come_in_rule_order_whichever_instance_was_live_first() -> None:
    hot, cold = _alerts(
        '[[alert]]\nname = "hot"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] > 10"\n'
        '[[alert]]\nname = "cold"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] < 5"\n'
    )
    topic = TopicAlerts("kitchen.a", [hot, cold])
    assert [(c.alert, c.state) for c in topic.evaluate(0, {"1m": {"mean": 1.0}})] == [
        ("cold", "firing")
    ]
    assert [(c.alert, c.state) for c in topic.evaluate(S, {"1m": {"mean": 20.0}})] == [
        ("hot", "firing"),
        ("cold", "resolved"),
    ]


_OPS = (">", ">=", "<", "<=", "==", "!=")
_VALUES = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([-1.5, 0.0, 0.5, 2.0, 1e300]))


@settings(max_examples=300, deadline=None)
@given(
    conditions=st.lists(
        st.tuples(
            st.sampled_from(["count", "mean", "p99"]),
            st.sampled_from(["10s", "1m"]),
            st.sampled_from(_OPS),
            st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
        ),
        min_size=1,
        max_size=8,
    ),
    windows=st.dictionaries(
        st.sampled_from(["10s", "1m"]),
        st.one_of(st.none(), st.dictionaries(st.sampled_from(["count", "mean", "p99"]), _VALUES)),
    ),
)
def test_the_first_look_finds_exactly_the_conditions_that_hold(
    conditions: list[tuple[str, str, str, float]], windows: dict
) -> None:
    parsed = [parse_condition(f"{stat}[{window}] {op} {t!r}") for stat, window, op, t in conditions]
    expected = {i for i, c in enumerate(parsed) if c.holds(c.value(windows))}
    assert set(first_look(parsed)(windows)) == expected


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'name = "a"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] >> 3"',
            "when: 'mean[1m] >> 3' is not",
        ),
        ('name = "a"\ntopics = ["kitchen.*"]\nwhen = "avg[1m] > 3"', "unknown statistic 'avg'"),
        (
            'name = "a"\ntopics = ["kitchen.*"]\nwhen = "mean[5m] > 3"',
            "window '5m' is not kept by rule 1",
        ),
        (
            'name = "a"\ntopics = ["orders"]\nwhen = "p99[1m] > 3"',
            "statistic 'p99' is not kept by the server's windows",
        ),
        ('name = "a"\ntopics = ["kitchen.*"]\nwhen = "max[1m] > 3"', "statistic 'max' is not kept"),
        ('name = "a-b"\ntopics = ["x"]\nwhen = "mean[1m] > 3"', "name: 'a-b'"),
        ('name = "a"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] > 3"\nfor = "soon"', "for: "),
        (
            'name = "a"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] > 3"\nlabels = { 1x = "y" }',
            "labels: '1x'",
        ),
        (
            'name = "a"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] > 3"\nsevere = true',
            "severe: unknown field; an alert has name, topics, when",
        ),
        ('name = "a"\ntopics = ["kitchen.*"]', "when: missing"),
        (
            'name = "a"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] > 3"\nlabels = { x = 1 }',
            "alert 1 (a): labels: give a table of names to strings",
        ),
        (
            'nme = "a"\ntopics = ["kitchen.*"]\nwhen = "mean[1m] > 3"',
            "alert 1: nme: unknown field; an alert has name, topics, when, clear, for, "
            "keep_firing_for, labels, annotations (did you mean name?)",
        ),
    ],
)
def test_a_bad_alert_is_one_line_naming_it(table: str, message: str) -> None:
    with pytest.raises(RulesError, match=re.escape(message)) as raised:
        _alerts("[[alert]]\n" + table + "\n")
    assert "\n" not in str(raised.value) and "alert 1" in str(raised.value)


_TAGGED = '[[rule]]\ntopics = ["shop.*"]\nwindows = ["1h"]\ndistinct = ["user"]\n'
_TAGGED += 'top = [{ tag = "product", k = 3 }]\n'


def test_a_distinct_count_can_be_alerted_on() -> None:
    (alert,) = _alerts(
        '[[alert]]\nname = "crowd"\ntopics = ["shop.*"]\nwhen = "distinct_user[1h] > 5000"\n',
        _TAGGED,
    )
    assert alert.when.holds(alert.when.value({"1h": {"distinct_user": 5001}}))
    assert not alert.when.holds(alert.when.value({"1h": {"distinct_user": 5000}}))


@pytest.mark.parametrize(
    ("topics", "when", "message"),
    [
        ("shop.*", "top_product[1h] > 3", "when: top_product is a list of values, not a number"),
        ("shop.*", "distinct_product[1h] > 3", "when: unknown statistic 'distinct_product'"),
        ("other", "distinct_user[1m] > 3", "'distinct_user' is not kept by the server's windows"),
    ],
)
def test_top_values_and_distinct_counts_not_kept_are_refused(
    topics: str, when: str, message: str
) -> None:
    with pytest.raises(RulesError, match=re.escape(message)) as raised:
        _alerts(f'[[alert]]\nname = "a"\ntopics = ["{topics}"]\nwhen = "{when}"\n', _TAGGED)
    assert "\n" not in str(raised.value)


def test_a_duplicate_name_is_refused() -> None:
    one = '[[alert]]\nname = "a"\ntopics = ["kitchen.x"]\nwhen = "mean[1m] > 3"\n'
    with pytest.raises(RulesError, match="alert 2 \\(a\\): name: 'a' is given twice"):
        _alerts(one + one)


def test_windows_are_checked_against_every_rule_a_matching_topic_can_take() -> None:
    # kitchen.grill can only take rule 1 (its kitchen.* covers it): the server's windows,
    # which have no p99, are not asked.
    (alert,) = _alerts('[[alert]]\nname = "a"\ntopics = ["kitchen.grill"]\nwhen = "p99[10s] > 3"\n')
    assert alert.when == parse_condition("p99[10s] > 3")
    assert overlap("kitchen.*", "kitchen.grill") and overlap("a.b.*", "a.*")
    assert not overlap("a.*", "b.*") and not overlap("x", "y")
    assert covers("kitchen.*", "kitchen.a.*") and not covers("kitchen.*", "*")


_LINES = '[[rule]]\ntopics = ["line.*"]\nwindows = ["1m", "1d"]\nstats = ["count"]\n'
_LINES += 'group_by = ["station"]\n'


def _message_alert(when: str, clear: str = "") -> AlertRule:
    (alert,) = _alerts(
        f'[[alert]]\nname = "errors"\ntopics = ["line.*"]\nwhen = "{when}"\n'
        + (f'clear = "{clear}"\n' if clear else ""),
        _LINES,
    )
    return alert


def _with_messages(**by_type: int) -> dict:
    """A 1m window with these messages by type (absent where there are none, as updates give
    it)."""
    window: dict = {"count": 0}
    if by_type:
        window["messages"] = {t: {"count": n, "rate": n / 60} for t, n in by_type.items()}
    return {"1m": window, "1d": {"count": 0}}


def test_a_message_count_by_type_can_be_alerted_on_and_counts_0_without_them() -> None:
    count = _message_alert("messages(error)[1m] > 5").when
    assert (count.message_type, count.stat) == ("error", "count")
    assert count.value(_with_messages(error=6, shipped=90)) == 6
    assert count.holds(count.value(_with_messages(error=6)))
    assert not count.holds(count.value(_with_messages(error=5)))
    assert count.value(_with_messages(shipped=90)) == 0 == count.value(_with_messages())
    rate = _message_alert("message_rate(order.shipped:v2)[1m] >= 0.5").when
    assert rate.value(_with_messages(**{"order.shipped:v2": 30})) == 0.5
    assert rate.holds(rate.value(_with_messages(**{"order.shipped:v2": 30})))
    # A heartbeat that stops: fewer than one in the last minute holds once none is left.
    quiet = _message_alert("messages(heartbeat)[1m] < 1").when
    assert quiet.holds(quiet.value(_with_messages(shipped=3)))
    assert not quiet.holds(quiet.value(_with_messages(heartbeat=1)))


def test_a_message_alert_fires_and_resolves_when_the_messages_stop_for_the_topic_only() -> None:
    alert = _message_alert("messages(error)[1m] > 2")
    topic = TopicAlerts("line.a", [alert])
    changes = []
    for clock, errors in ((0, 1), (1, 3), (2, 4), (61, 0)):
        windows = _with_messages(error=errors) if errors else _with_messages()
        changes += [(c.state, c.group, c.value) for c in topic.evaluate(clock * S, windows)]
        # A group's windows carry no message counts: never an instance of its own.
        assert topic.evaluate(clock * S, _with_messages(), "g", {"station": "x"}) == []
        assert topic.evaluate(clock * S, windows, "g", {"station": "x"}) == []
    assert changes == [("firing", None, 3.0), ("resolved", None, 0.0)]


@given(
    conditions=st.lists(
        st.tuples(
            st.sampled_from(["messages", "message_rate"]),
            st.sampled_from(["error", "shipped", "a.b:c-d"]),
            st.sampled_from(["1m", "10s"]),
            st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
            st.sampled_from([0.0, 1.0, 2.5]),
        ),
        min_size=1,
        max_size=5,
    ),
    counts=st.dictionaries(st.sampled_from(["error", "shipped", "a.b:c-d"]), st.integers(1, 4)),
)
def test_the_first_look_finds_exactly_the_message_conditions_that_hold(
    conditions: list[tuple[str, str, str, str, float]], counts: dict[str, int]
) -> None:
    parsed = [parse_condition(f"{f}({t})[{w}] {op} {x!r}") for f, t, w, op, x in conditions]
    windows = _with_messages(**counts)
    windows["10s"] = {"count": 0}
    expected = {i for i, c in enumerate(parsed) if c.holds(c.value(windows))}
    assert set(first_look(parsed)(windows)) == expected


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("messages(error)[1d] > 3", "counted in the exact time windows of rule 1 (1m)"),
        ("messages(error)[5m] > 3", "not in '5m'"),
        ("messages(gap)[1m] > 3", "no message has the type 'gap'"),
        ("messages(bad type)[1m] > 3", "is not stat[window] op number"),
        ("messages()[1m] > 3", "is not stat[window] op number"),
        (f"messages({'x' * 65})[1m] > 3", "is not stat[window] op number"),
        ("messages(error)[1m] > inf", "is not stat[window] op number"),
    ],
)
def test_a_message_condition_on_a_window_that_counts_none_is_refused(
    when: str, message: str
) -> None:
    with pytest.raises(RulesError, match=re.escape(message)) as raised:
        _message_alert(when)
    assert "\n" not in str(raised.value) and "alert 1 (errors): when: " in str(raised.value)


def test_message_alerts_move_on_the_aggregators_ticks_once_the_messages_stop() -> None:
    """Through the aggregator: messages alone (no value) trip the alerts as they are applied,
    and the idle ticks alone resolve the errors' alert once they leave the window and fire the
    heartbeat's once it stops, with no event after them."""
    from pushsvc.aggregate.aggregator import Aggregator
    from pushsvc.core.event import Event, Message
    from pushsvc.core.updates import Kind

    rules = parse_rules(
        tomllib.loads(
            '[[rule]]\ntopics = ["line.*"]\nwindows = ["10s"]\nstats = ["count"]\n'
            '[[alert]]\nname = "errors"\ntopics = ["line.*"]\n'
            'when = "messages(error)[10s] > 2"\n'
            '[[alert]]\nname = "silent"\ntopics = ["line.*"]\n'
            'when = "messages(heartbeat)[10s] < 1"\nfor = "5s"\n'
        ),
        default_rule((10 * S,), ("count",)),
    )
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=5 * S)
    t0 = 1_763_700_000 * S

    def changes(drafts: list) -> list[tuple[str, str, float]]:
        bodies = [orjson.loads(d.body) for d in drafts if d.kind is Kind.ALERT]
        return [(b["alert"], b["state"], b["since"] - t0 / S) for b in bodies]

    def message(at_s: int, kind: str) -> list[tuple[str, str, float]]:
        event = Event(None, t0 + at_s * S, message=Message(kind, b"{}"))
        return changes(aggregator.apply_events("line.a", [event]))

    assert message(0, "heartbeat") == []
    assert message(1, "error") + message(2, "error") == []
    assert message(3, "error") == [("errors", "firing", 3)]
    # No event after: the ticks alone move the clock. At 11 s the first error has left the
    # window (two remain), and the last heartbeat too: pending, then firing 5 s on.
    assert changes(aggregator.apply_ticks({"line.a": t0 + 11 * S})) == [
        ("errors", "resolved", 11),
        ("silent", "pending", 11),
    ]
    assert changes(aggregator.apply_ticks({"line.a": t0 + 16 * S})) == [("silent", "firing", 16)]
    assert message(17, "heartbeat") == [("silent", "resolved", 17)]
