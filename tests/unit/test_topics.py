"""Topic names and stream selectors."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.core.answers import error_of
from pushsvc.core.topics import TopicMatcher, validate_topic
from pushsvc.errors import InvalidTopic
from pushsvc.http.api.error_replies import status_of

VALID = [
    "a",
    "A",
    "0",
    "orders",
    "sensors.kitchen.temp",
    "a-b_c:d.e",
    "9lives",
    "x" * 128,
    "a.",
    "a..b",
]

INVALID = [
    "",
    "-leading-dash",
    ".dot",
    "_under",
    ":colon",
    "x" * 129,
    "has space",
    "sl/ash",
    "per%cent",
    "star*",
    "*",
    "orders\n",  # a `$` anchored regex would accept this
    "\norders",
    "caf\u00e9",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, but not an ASCII one
    "\uff41",  # FULLWIDTH LATIN SMALL LETTER A
    "a\x00",
]


@pytest.mark.parametrize("name", VALID)
def test_valid_topic_names(name: str) -> None:
    assert validate_topic(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        validate_topic(name)
    assert status_of(info.value) == 400
    assert error_of(info.value).error.code == "invalid_topic"


def test_a_name_refused_for_an_accent_says_ascii() -> None:
    """`café` has letters only: the refusal says which letters it means."""
    with pytest.raises(InvalidTopic) as info:
        validate_topic("caf\u00e9")
    assert error_of(info.value).error.message == (
        "invalid topic 'caf\u00e9': use 1 to 128 ASCII letters, digits and '._:-' (no accents "
        "or other scripts), starting with a letter or a digit"
    )


@pytest.mark.parametrize("name", [None, 5, b"orders"])
def test_non_string_topic_is_invalid(name: object) -> None:
    with pytest.raises(InvalidTopic):
        validate_topic(name)  # type: ignore[arg-type]


def test_error_message_of_a_huge_name_is_short() -> None:
    with pytest.raises(InvalidTopic) as info:
        validate_topic("!" * 100_000)
    assert len(info.value.message) < 300


_FIRST = set(string.ascii_letters + string.digits)
_REST = _FIRST | set("._:-")


@given(st.text(alphabet=st.sampled_from(sorted(_REST | set("*/ \n\u00e9\u0663"))), max_size=130))
def test_topic_rule_matches_its_definition(name: str) -> None:
    # The DESIGN rule spelled out character by character, independent of the regex.
    expected = 1 <= len(name) <= 128 and name[0] in _FIRST and all(c in _REST for c in name)
    try:
        validate_topic(name)
    except InvalidTopic:
        assert not expected
    else:
        assert expected


MATCHES = [
    # (selectors, topic, matched)
    (["orders"], "orders", True),
    (["orders"], "orders2", False),
    (["orders"], "Orders", False),
    (["a", "b"], "b", True),
    (["sensors.*"], "sensors.kitchen", True),
    (["sensors.*"], "sensors.kitchen.temp", True),
    (["sensors.*"], "sensors.", True),
    (["sensors.*"], "sensors", False),
    (["sensors.*"], "sensorsX", False),
    (["sensors.*"], "my.sensors.a", False),
    (["sensors.*", "orders"], "orders", True),
    (["sensors.*", "orders"], "sensors.a", True),
    (["sensors.*", "orders"], "other", False),
    (["a.*", "a.b.*"], "a.b.c", True),
    (["a..*"], "a..x", True),
    (["a..*"], "a.x", False),
    (["*"], "anything", True),
    (["*", "orders"], "x.y", True),
]


@pytest.mark.parametrize(("selectors", "topic", "matched"), MATCHES)
def test_matcher(selectors: list[str], topic: str, matched: bool) -> None:
    assert TopicMatcher(selectors)(topic) is matched


@pytest.mark.parametrize(
    "selector",
    [
        "",
        "a*",
        "*.x",
        "*.*",
        ".*",
        "**",
        "a.**",
        "a.*.b",
        "sensors*",
        "-a.*",
        "a b.*",
        "a\n",
        "a.*\n",
    ],
)
def test_invalid_selectors(selector: str) -> None:
    with pytest.raises(InvalidTopic):
        TopicMatcher(["ok", selector])


@pytest.mark.parametrize(
    ("selector", "example"),
    [("p*", "p.*"), ("sensors*", "sensors.*"), ("sensors.**", "sensors.*"), ("a*b", "sensors.*")],
)
def test_a_glob_like_selector_is_refused_showing_how_patterns_are_written(
    selector: str, example: str
) -> None:
    with pytest.raises(InvalidTopic) as refused:
        TopicMatcher([selector])
    assert refused.value.message == (
        f"invalid topic pattern {selector!r}: a pattern is a topic name followed by '.*' "
        f"(like {example!r}: every topic whose name starts with {example[:-1]!r}), "
        "or '*' alone for every topic"
    )


def test_no_selector_is_invalid() -> None:
    with pytest.raises(InvalidTopic):
        TopicMatcher([])


def test_a_bare_string_is_not_a_list_of_selectors() -> None:
    # "ab" would otherwise silently mean topics "a" and "b".
    with pytest.raises(TypeError):
        TopicMatcher("ab")


def test_matcher_properties() -> None:
    matcher = TopicMatcher(["b", "a", "s.*", "a"])
    assert matcher.names == {"a", "b"}
    assert not matcher.exact
    assert matcher.selectors == ("b", "a", "s.*", "a")
    assert TopicMatcher(["a", "b"]).exact
    assert not TopicMatcher(["*"]).exact


def test_many_exact_names() -> None:
    names = [f"topic-{i}" for i in range(10_000)]
    matcher = TopicMatcher(names)
    assert all(matcher(n) for n in names[::97])
    assert not matcher("topic-10000")
