"""The rules file: which rule a topic takes, what a valid file means, and the one line a bad
file stops the process with."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import inspect, structs

from pushsvc.config import Settings
from pushsvc.errors import ConfigError
from pushsvc.rules.alerts import AlertTable
from pushsvc.rules.analytics import MAX_GROUPS_CAP, Rules, default_rule, load_rules, parse_rules
from pushsvc.rules.derive import DeriveTable
from pushsvc.rules.file_shape import RulesFile, RuleTable
from pushsvc.rules.sessions import SessionTable
from pushsvc.stats import STAT_KEYS

S = 1_000_000
DEFAULT = default_rule((10 * S, 60 * S, 300 * S), ("count", "mean"))

RESTAURANT = """
[[rule]]
topics = ["restaurant.latency.*"]
windows = ["1h", "10s", "1m"]
last = [100]
stats = ["count", "mean", "p99", "rate"]
group_by = ["station"]
max_groups = 20

[[rule]]
topics = ["restaurant.*", "kitchen"]
windows = ["30s"]
group_by = ["dish"]
"""


def _rules(text: str) -> Rules:
    return parse_rules(tomllib.loads(text), DEFAULT, source="rules.toml")


def test_a_topic_takes_the_first_rule_that_matches_it() -> None:
    rules = _rules(RESTAURANT)
    latency = rules.for_topic("restaurant.latency.grill")
    assert latency.number == 1 and latency.group_by == ("station",)
    # Windows ascending; exact up to 5m, wider from a sketch; then the count windows.
    assert latency.labels == ("10s", "1m", "1h", "last100")
    assert latency.sketch_windows_us == (3600 * S,)
    assert latency.stats == ("count", "mean", "p99", "rate")
    ratings = rules.for_topic("restaurant.ratings")
    assert ratings.number == 2 and ratings.labels == ("30s",)
    # A field the rule leaves out is the server's.
    assert ratings.stats == DEFAULT.stats and ratings.max_groups == 100
    assert rules.for_topic("kitchen").number == 2
    assert rules.for_topic("orders") is DEFAULT


def test_every_label_and_statistic_some_topic_has_is_known() -> None:
    rules = _rules(RESTAURANT)
    assert set(rules.labels) == {"10s", "1m", "5m", "1h", "last100", "30s"}
    assert rules.stats == ("count", "mean", "p99", "rate")


def test_the_digest_names_what_is_computed() -> None:
    same = _rules(RESTAURANT)
    assert same.digest == _rules(RESTAURANT).digest
    assert same.digest != _rules(RESTAURANT.replace("max_groups = 20", "max_groups = 21")).digest
    # The server's own windows are part of it: another --windows computes other statistics.
    other_default = default_rule((10 * S,), ("count", "mean"))
    assert same.digest != parse_rules(tomllib.loads(RESTAURANT), other_default).digest


def test_get_rules_describes_windows_as_a_client_needs_them() -> None:
    described = _rules(RESTAURANT).describe()
    first = described["rules"][0]
    assert first["topics"] == ["restaurant.latency.*"]
    windows = {w["label"]: w for w in first["windows"]}
    assert windows["10s"] == {
        "label": "10s",
        "kind": "time",
        "seconds": 10.0,
        "percentiles": "exact",
    }
    assert windows["1h"]["percentiles"] == "sketch" and windows["1h"]["edge_seconds"] == 60.0
    assert windows["last100"] == {"label": "last100", "kind": "count", "events": 100}
    assert first["group_by"] == ["station"] and first["max_groups"] == 20
    assert described["default"]["rule"] == 0


A = '[[rule]]\ntopics = ["a"]\n'
"""The head of a rule for topic a: each case below adds a line to it."""


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            '[[rule]]\ntopics = ["a"]\nwindow = ["1m"]',
            "rule 1 (a): window: unknown field",
        ),
        (A + 'windows = ["10x"]', "rule 1 (a): windows: '10x' is not a duration"),
        (A + 'windows = ["0s"]', "rule 1 (a): windows: '0s' must be longer than 0"),
        (A + "last = [0]", "rule 1 (a): last: 0 is not a positive number of events"),
        (
            f'[[rule]]\ntopics = ["a"]\ngroup_by = ["x"]\nmax_groups = {MAX_GROUPS_CAP + 1}',
            f"rule 1 (a): max_groups: {MAX_GROUPS_CAP + 1} is over the cap of {MAX_GROUPS_CAP}",
        ),
        ("[[rule]]\ntopics = []", "rule 1: topics: empty"),
        ('[[rule]]\nwindows = ["1m"]', "rule 1: topics: missing"),
        ('[[rule]]\ntopics = ["a*"]', "rule 1 (a*): topics: invalid topic"),
        (A + 'windows = ["1m", "60s"]', "rule 1 (a): windows: '1m' is given twice"),
        (A + "last = [5, 5]", "rule 1 (a): last: 5 is given twice"),
        (A + 'stats = ["median"]', "rule 1 (a): stats: unknown statistic 'median'"),
        (A + "max_groups = 5", "rule 1 (a): max_groups: only means something with group_by"),
        (A + 'series = ["1m"]', "rule 1 (a): series: '1m' is not resolution:retention"),
        ('[[rules]]\ntopics = ["a"]', "unknown table 'rules'"),
        (
            '[[rulle]]\ntopics = ["a"]',
            "holds [[rule]], [[alert]], [[derive]] and [[session]] tables (did you mean rule?)",
        ),
        (A + 'windws = ["1m"]', "rule 1 (a): windws: unknown field; a rule has topics, windows, "),
        (A + 'windws = ["1m"]', "late (did you mean windows?)"),
        (
            A + 'top = [{ tag = "p", kk = 3 }]',
            "rule 1 (a): top: unknown key 'kk'; top has tag, k (did you mean k?)",
        ),
        (A + "last = [100001]", "rule 1 (a): last: 100001 is over the cap of 100000 events"),
        (A + "windows = []", "rule 1 (a): windows: a rule needs at least one window"),
        ("alert = 5", "write each alert as a [[alert]] table"),
        (A + '\n[[rule]]\ntopics = ["b"]\nlast = [-1]', "rule 2 (b): last: -1"),
        (A + 'distinct = ["user id"]', "rule 1 (a): distinct: 'user id' is not a tag this"),
        (A + 'distinct = [""]', "rule 1 (a): distinct: '' is not a tag this"),
        (A + "distinct = [7]", "rule 1 (a): distinct: 7 is not a tag this"),
        (A + 'distinct = "user"', "rule 1 (a): distinct: expected a list, got str 'user'"),
        (A + 'distinct = ["user", "user"]', "rule 1 (a): distinct: 'user' is given twice"),
        (A + 'top = [{ tag = "p", k = 0 }]', "rule 1 (a): top: k for 'p' is 0; k is a whole"),
        (A + 'top = [{ tag = "p", k = 101 }]', "rule 1 (a): top: k for 'p' is 101"),
        (A + 'top = [{ tag = "p", k = 2.5 }]', "rule 1 (a): top: k for 'p' is 2.5"),
        (A + 'top = [{ tag = "p", k = true }]', "rule 1 (a): top: k for 'p' is True"),
        (A + 'top = [{ tag = "p" }]', "rule 1 (a): top: k is missing"),
        (A + "top = [{ k = 3 }]", "rule 1 (a): top: tag is missing"),
        (A + 'top = [{ tag = "p", k = 3, n = 1 }]', "rule 1 (a): top: unknown key 'n'"),
        (A + 'top = [{ tag = "p.q", k = 3 }]', "rule 1 (a): top: 'p.q' is not a tag this"),
        (A + 'top = ["p"]', "rule 1 (a): top: write each entry as { tag"),
        (A + "grace = 60", 'rule 1 (a): grace: durations are strings like "10s", got int 60'),
        (A + 'grace = "soon"', "rule 1 (a): grace: "),
        (A + 'grace = "-1s"', "rule 1 (a): grace: "),
        (A + 'late = "drop"', "rule 1 (a): late: str 'drop' is neither \"keep\""),
        (A + 'top = { tag = "p", k = 3 }', "rule 1 (a): top: expected a list, got dict"),
        (
            A + 'top = [{ tag = "p", k = 3 }, { tag = "p", k = 5 }]',
            "rule 1 (a): top: 'p' is given twice",
        ),
    ],
)
def test_a_bad_rules_file_is_one_line_naming_the_rule_and_the_field(
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


def test_distinct_and_top_are_statistics_of_every_window_and_described() -> None:
    rules = _rules(
        A + 'windows = ["1m"]\nlast = [10]\ndistinct = ["user"]\n'
        'top = [{ tag = "product", k = 10 }, { tag = "shop", k = 60 }]\n'
    )
    (rule,) = rules.rules
    assert rule.distinct == ("user",) and rule.top == (("product", 10), ("shop", 60))
    assert rule.reported == (*DEFAULT.stats, "distinct_user", "top_product", "top_shop")
    assert rules.stats[-3:] == ("distinct_user", "top_product", "top_shop")
    described = rule.describe()
    assert [d["stat"] for d in described["distinct"]] == ["distinct_user"]
    assert [(t["k"], t["exact_up_to"]) for t in described["top"]] == [(10, 1000), (60, 1200)]
    # A file without them keeps the digest it had (processes of two versions agree).
    assert "distinct" not in _rules(A).rules[0].describe()


def test_a_rule_has_its_grace_and_late_handling_and_others_take_the_servers() -> None:
    rules = _rules(
        '[[rule]]\ntopics = ["gw.*"]\ngrace = "1h"\n'
        '[[rule]]\ntopics = ["strict"]\ngrace = "0s"\nlate = "refuse"\n'
        '[[rule]]\ntopics = ["other"]\n'
    )
    assert rules.grace_of("gw.a", 5_000_000) == (3_600_000_000, False)
    assert rules.grace_of("strict", 5_000_000) == (0, True)
    assert rules.grace_of("other", 5_000_000) == (5_000_000, False)
    assert rules.grace_of("unmatched", 7_000_000) == (7_000_000, False)
    assert rules.widest_grace_us(5_000_000) == 3_600_000_000
    described = [rule.describe() for rule in rules.rules]
    assert described[0]["grace_seconds"] == 3600 and "late" not in described[0]
    assert (described[1]["grace_seconds"], described[1]["late"]) == (0, "refuse")
    assert "grace_seconds" not in described[2]


def test_a_file_that_is_not_toml_or_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[[rule]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(str(path), DEFAULT)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_rules(str(tmp_path / "missing.toml"), DEFAULT)


def test_settings_read_the_rules_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RESTAURANT)
    settings = Settings.load({"rules": str(path)}, environ={})
    assert settings.rules.for_topic("kitchen").group_by == ("dish",)
    path.write_text('[[rule]]\ntopics = ["a"]\nlast = [0]')
    with pytest.raises(ConfigError, match="rule 1 \\(a\\): last"):
        Settings.load({"rules": str(path)}, environ={})
    # Without a file every topic takes the server's windows and every statistic but rate.
    plain = Settings.load({"windows": "1m"}, environ={})
    assert plain.rules.for_topic("x").labels == ("1m",)
    assert plain.rules.for_topic("x").stats == STAT_KEYS


def test_a_window_keeps_the_label_the_file_writes_and_any_equal_duration_names_it() -> None:
    day = default_rule((10 * S, 86400 * S), ("count", "mean"))
    rules = parse_rules(
        tomllib.loads(
            '[[rule]]\ntopics = ["a.*"]\nwindows = ["1d", "120s", "1.5h"]\n'
            '[[rule]]\ntopics = ["b.*"]\nstats = ["count"]\n'
        ),
        day,
    )
    # As written; a spelling that is not a whole number and a unit is labelled as before.
    assert rules.for_topic("a.x").labels == ("120s", "90m", "1d")
    # The server's own day window, and a rule that takes it, are labelled the file's way too.
    assert rules.default.labels == ("10s", "1d") and rules.for_topic("b.x").labels == ("10s", "1d")
    assert [w["label"] for w in rules.describe()["rules"][0]["windows"]] == ["120s", "90m", "1d"]
    assert rules.window_named("24h") == rules.window_named("86400s") == "1d"
    assert rules.window_named("2m") == "120s" and rules.window_named("last5") == "last5"
    assert rules.windows_named("24h, 10s,2d") == "1d,10s,2d"


def test_a_window_written_two_ways_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        _rules(
            '[[rule]]\ntopics = ["a.*"]\nwindows = ["1d"]\n'
            '[[rule]]\ntopics = ["b.*"]\nwindows = ["1m", "24h"]\n'
        )
    assert str(refused.value) == (
        "rules file rules.toml: rule 2: windows: '24h' is the window rule 1 writes '1d'; "
        "write a window one way in every rule"
    )


def test_an_alert_names_a_window_by_any_equal_duration() -> None:
    rules = _rules(
        '[[rule]]\ntopics = ["a.*"]\nwindows = ["1d"]\nstats = ["count"]\n'
        '[[alert]]\nname = "busy"\ntopics = ["a.*"]\nwhen = "count[24h] > 5"\n'
        'clear = "count[86400s] < 2"\n'
    )
    alert = rules.alerts[0]
    assert alert.when.window == "1d" and alert.clear is not None and alert.clear.window == "1d"
    assert alert.when.text == "count[24h] > 5"  # described as written
    assert alert.when.value({"1d": {"count": 7}}) == 7


def _wordings(info: inspect.Type) -> Iterator[str]:
    """Every wording the file's types give for a value they refuse."""
    if isinstance(info, inspect.Metadata):
        yield from (info.extra or {}).values()
        yield from _wordings(info.type)
    elif isinstance(info, inspect.StructType):
        for field in info.fields:
            yield from _wordings(field.type)
    elif isinstance(info, inspect.ListType):
        yield from _wordings(info.item_type)
    elif isinstance(info, inspect.DictType):
        yield from _wordings(info.value_type)
    elif isinstance(info, inspect.UnionType):
        for kind in info.types:
            yield from _wordings(kind)


def test_every_wording_for_a_refused_value_can_be_said() -> None:
    # A brace left single in one would raise at the first file that reaches it.
    wordings = set(_wordings(inspect.type_info(RulesFile)))
    assert len(wordings) >= 20
    for words in wordings:
        said = words.format(value=0, described="int 0", parent={"tag": "p"})
        assert "{" not in said.replace("{ ", "") and "\n" not in said


_NAMES = st.sampled_from(
    ["topics", "windows", "last", "stats", "group_by", "max_groups", "top", "tag", "k",
     "series", "distinct", "late", "grace", "anomaly", "name", "when", "for", "labels",
     "topic", "from", "key", "gap", "funnel", "steps", "within", "every", "value", "zz"]
)  # fmt: skip
_VALUES = st.recursive(
    st.one_of(
        st.integers(-2, 200_000),
        st.booleans(),
        st.floats(allow_nan=False),
        st.sampled_from(["a", "a.*", "*", "1m", "0s", "10x", "", "mean", "keep", "1s:1h", "u"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=8,
)
_KINDS = {"rule": RuleTable, "alert": AlertTable, "derive": DeriveTable, "session": SessionTable}


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, object]:
    """Documents near valid ones: each table has mostly its own kind's fields."""
    document: dict[str, object] = {}
    for kind in draw(st.lists(st.sampled_from([*_KINDS, "rules"]), max_size=2, unique=True)):
        own = [field.encode_name for field in structs.fields(_KINDS.get(kind, RuleTable))]
        names = st.sampled_from(own) | _NAMES
        tables = st.lists(st.dictionaries(names, _VALUES, max_size=6), min_size=1, max_size=2)
        document[kind] = draw(tables | _VALUES)
    return document


@settings(max_examples=300, deadline=None)
@given(_documents())
def test_any_document_is_rules_or_one_line_naming_what_is_wrong(document: dict) -> None:
    try:
        parse_rules(document, DEFAULT, source="rules.toml")
    except ConfigError as refused:
        message = str(refused)
        assert message.startswith("rules file rules.toml: ") and "\n" not in message
