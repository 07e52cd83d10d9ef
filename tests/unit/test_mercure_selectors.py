"""Mercure topic matchers: exact and `*`, URL patterns as the spec and the conformance suite use
them, and the limits that bound a pattern's cost."""

from __future__ import annotations

import gc
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urlpattern import URLPattern

from pushsvc.deliver import mercure_selectors
from pushsvc.deliver.mercure_selectors import (
    FALLBACK_BASE_URL,
    MAX_PATTERN_GROUPS,
    MAX_SELECTOR_LENGTH,
    MAX_SELECTORS,
    MAX_URLPATTERN_TOPIC_LENGTH,
    MAX_URLPATTERNS,
    MatcherKind,
    Selector,
    SelectorSet,
)

HUB = "https://hub.example.com/.well-known/mercure"


def exact(*texts: str) -> SelectorSet:
    return SelectorSet([Selector("match", t) for t in texts])


def patterns(*texts: str, base_url: str | None = None) -> SelectorSet:
    selectors = [Selector("urlpattern", t) for t in texts]
    return SelectorSet(selectors) if base_url is None else SelectorSet(selectors, base_url=base_url)


def test_exact_is_byte_for_byte() -> None:
    selectors = exact("https://example.com/foo", "bar")
    assert selectors.matches_any(["bar"])
    assert selectors.matches_any(["x", "https://example.com/foo"])
    for other in ["Bar", "bar ", "https://EXAMPLE.com/foo", "https://example.com/foo/", "/foo"]:
        assert not selectors.matches_any([other]), other
    assert not selectors.matches_any([])


@pytest.mark.parametrize("kind", ["match", "urlpattern"])
def test_the_wildcard_selects_every_topic_whatever_its_kind(kind: MatcherKind) -> None:
    selectors = SelectorSet([Selector(kind, "*")])
    assert selectors.matches_any(["anything"]) and selectors.matches_any(["https://a/b"])
    assert selectors.matches_all(["x", "y"])
    assert Selector(kind, "*").is_wildcard


def test_the_conformance_suites_url_patterns() -> None:
    selectors = patterns("https://example.net/foo/:random")
    assert selectors.matches_any(["https://example.net/foo/abc"])
    assert not selectors.matches_any(["https://example.net/bar/x"])
    assert not selectors.matches_any(["https://example.net/foo/will-not-match/deeper"])
    assert not patterns("https://example.net/bar/:var").matches_any(
        ["https://example.net/foo/will-not-match"]
    )
    # Several selectors of both kinds, as the suite's "multiple topic selectors" case.
    both = SelectorSet([Selector("match", "foo"), Selector("urlpattern", "https://e.net/:x")])
    assert both.matches_any(["https://e.net/1"]) and both.matches_any(["foo"])


def test_the_specs_examples() -> None:
    books = patterns("https://example.com/books/:id")
    assert books.matches_any(["https://example.com/books/1"])
    assert not books.matches_any(["https://example.com/books"])
    users = patterns("https://example.com/users/42/*")
    assert users.matches_any(["https://example.com/users/42/books/1"])
    assert not users.matches_any(["https://example.com/users/43/books/1"])


def test_relative_patterns_and_topics_resolve_against_the_hubs_url() -> None:
    events = patterns("/.well-known/mercure/subscriptions/:type/:topic/:sub", base_url=HUB)
    assert events.matches_any(["/.well-known/mercure/subscriptions/exact/t/s"])
    assert events.matches_any(["https://hub.example.com/.well-known/mercure/subscriptions/e/t/s"])
    assert not events.matches_any(["https://other.example/.well-known/mercure/subscriptions/e/t/s"])
    # Without the hub's URL, relative matches relative still.
    assert patterns("/books/:id").matches_any(["/books/7"])


def test_case_the_host_is_case_insensitive_the_path_is_not() -> None:
    selectors = patterns("https://example.com/Books/:id")
    assert selectors.matches_any(["https://EXAMPLE.com/Books/1"])
    assert not selectors.matches_any(["https://example.com/books/1"])  # no ignoreCase


def test_a_topic_that_is_no_url_is_matched_by_no_url_pattern() -> None:
    selectors = patterns("https://example.com/:x")
    for topic in ["http://[bad", "https://exa mple.com/x", ""]:
        assert not selectors.matches_any([topic])


def test_a_regexp_group_is_allowed_within_bounds() -> None:
    selectors = patterns("https://example.com/books/:id([0-9]+)", "https://example.com/(a+)+b")
    assert selectors.matches_any(["https://example.com/books/12"])
    assert not selectors.matches_any(["https://example.com/books/twelve"])
    # The classic catastrophic backtracking pattern: the engine never backtracks.
    assert not selectors.matches_any(["https://example.com/" + "a" * 2000 + "c"])
    assert selectors.matches_any(["https://example.com/aaab"])


def test_a_topic_too_long_for_url_patterns_is_matched_by_the_wildcard_only() -> None:
    long_topic = "https://example.com/" + "a" * MAX_URLPATTERN_TOPIC_LENGTH
    assert not patterns("https://example.com/*").matches_any([long_topic])
    assert patterns("*").matches_any([long_topic]) and exact("*").matches_any([long_topic])
    fits = "https://example.com/" + "a" * (MAX_URLPATTERN_TOPIC_LENGTH - 20)
    assert patterns("https://example.com/*").matches_any([fits])


def test_matches_all_needs_every_topic() -> None:
    selectors = SelectorSet([Selector("match", "a"), Selector("urlpattern", "https://e.net/:x")])
    assert selectors.matches_all(["a", "https://e.net/1"])
    assert not selectors.matches_all(["a", "b"])


@pytest.mark.parametrize(
    ("selector", "words"),
    [
        (Selector("urlpattern", "https://example.com/("), "is not a URL pattern"),
        (Selector("urlpattern", "https://example.com/{"), "is not a URL pattern"),
        (Selector("urlpattern", "https://e.com/(a\\1)"), "is not a URL pattern"),  # back-reference
        (Selector("urlpattern", "https://e.com/((?=a)a)"), "is not a URL pattern"),  # look-ahead
        (Selector("urlpattern", "https://e.com/((a|a)*)*b"), "is not a URL pattern"),
        (Selector("urlpattern", "https://e.com/(a{1000}){1000}"), "counted repetition"),
        (Selector("urlpattern", "https://e.com/(\\p{L}+)"), "\\p"),
        (Selector("urlpattern", "https://e.com/(\\w+)"), "\\w"),
        (Selector("urlpattern", "https://e.com/(\\W+)"), "\\W"),
        (Selector("urlpattern", "https://e.com/" + "*" * 17), f"at most {MAX_PATTERN_GROUPS}"),
        (
            Selector("urlpattern", "https://e.com/" + "/".join(f":p{i}" for i in range(17))),
            "17 groups",
        ),
        (Selector("urlpattern", "https://e.com/" + "([0-9])" * 17), "17 groups"),
        (Selector("match", "a" * (MAX_SELECTOR_LENGTH + 1)), f"at most {MAX_SELECTOR_LENGTH}"),
        (Selector("urlpattern", "a" * (MAX_SELECTOR_LENGTH + 1)), f"at most {MAX_SELECTOR_LENGTH}"),
        (Selector("match", "a\nb"), "U+000A"),
        (Selector("match", "a\x7fb"), "U+007F"),
        (Selector("match", "a\x85b"), "U+0085"),
        (Selector("match", "a\u200bb"), "U+200B"),  # a format character (Cf)
    ],
)
def test_what_the_limits_refuse(selector: Selector, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        SelectorSet([selector])
    assert words in str(caught.value)


def test_escaped_characters_are_no_groups() -> None:
    # Literal `\*` and `\(` are characters, not groups; \d and \s are allowed in a group.
    SelectorSet([Selector("urlpattern", "https://e.com/" + "\\*" * 40 + "/(\\d+)/(\\s*)")])


def test_the_numbers_of_selectors_are_bounded() -> None:
    SelectorSet([Selector("match", str(i)) for i in range(MAX_SELECTORS)])
    with pytest.raises(ValueError, match=f"at most {MAX_SELECTORS}"):
        SelectorSet([Selector("match", str(i)) for i in range(MAX_SELECTORS + 1)])
    with pytest.raises(ValueError, match=f"at most {MAX_URLPATTERNS} per subscription"):
        SelectorSet([Selector("urlpattern", f"/p/{i}") for i in range(MAX_URLPATTERNS + 1)])
    # Duplicates count once.
    assert len(SelectorSet([Selector("match", "a")] * (MAX_SELECTORS + 5)).selectors) == 1


def test_the_base_url_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="must be absolute"):
        SelectorSet([], base_url="/.well-known/mercure")


class _Counting:
    """A URLPattern that counts its compilations and its evaluations (the test's wrapper
    around the library's class)."""

    made = 0
    tested = 0

    def __init__(self, *args: object) -> None:
        type(self).made += 1
        self._pattern = URLPattern(*args)

    def test(self, *args: object) -> bool:
        type(self).tested += 1
        return bool(self._pattern.test(*args))

    def __getattr__(self, name: str) -> object:
        return getattr(self._pattern, name)


def test_subscriptions_with_the_same_pattern_share_its_compilation_and_its_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mercure_selectors, "URLPattern", _Counting)
    text = f"https://shared.example/{uuid.uuid4().hex}/:id"
    first, second, third = patterns(text), patterns(text), patterns(text)
    assert _Counting.made == 1  # compiled once, for the three
    topic = text.replace(":id", "1")
    assert first.matches_any([topic])
    assert second.matches_any([topic]) and third.matches_any([topic])
    assert _Counting.tested == 1  # evaluated once: the others found its result


@pytest.mark.parametrize(
    ("name", "kind"),
    [("match", "match"), ("match_exact", "match"), ("match_urlpattern", "urlpattern")],
)
def test_query_parameters_name_the_kind(name: str, kind: MatcherKind) -> None:
    assert Selector.of_param(name, "x") == Selector(kind, "x")


@pytest.mark.parametrize(
    "name", ["match_regex", "match_URLPattern", "matcher", "match_", "Match", "MATCH_exact"]
)
def test_unknown_matcher_parameters_are_refused(name: str) -> None:
    assert Selector.is_param(name)
    with pytest.raises(ValueError, match="unknown topic matcher parameter"):
        Selector.of_param(name, "x")


@pytest.mark.parametrize("name", ["topic", "last_event_id", "mat", "authorization"])
def test_other_parameters_are_not_matchers(name: str) -> None:
    assert not Selector.is_param(name)


def test_match_types_of_tokens() -> None:
    assert Selector.of_type(None, "x") == Selector("match", "x")
    assert Selector.of_type("exact", "x").match_type == "exact"
    assert Selector.of_type("urlpattern", "x").match_type == "urlpattern"
    with pytest.raises(ValueError, match="unsupported match_type 'Exact'"):
        Selector.of_type("Exact", "x")


# --- properties -----------------------------------------------------------------------------

_SEGMENT = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_URL = st.builds(
    lambda host, segments: f"https://{host}.example/" + "/".join(segments),
    st.sampled_from(["a", "b", "shop"]),
    st.lists(_SEGMENT, min_size=0, max_size=4),
)


@settings(max_examples=50)  # each example compiles a pattern
@given(pattern=_URL, topic=_URL)
def test_a_pattern_without_special_characters_is_an_exact_match_on_urls(
    pattern: str, topic: str
) -> None:
    assert patterns(pattern).matches_any([topic]) == (topic == pattern)
    assert patterns(pattern).matches_any([pattern])


@settings(max_examples=50)
@given(prefix=_URL, segment=_SEGMENT, rest=st.lists(_SEGMENT, max_size=2))
def test_a_named_group_matches_one_segment_exactly(
    prefix: str, segment: str, rest: list[str]
) -> None:
    base = prefix.rstrip("/")
    selectors = patterns(base + "/:id")
    topic = "/".join([base, segment, *rest])
    assert selectors.matches_any([topic]) == (not rest)


@given(topics=st.lists(st.text(max_size=30), max_size=5), texts=st.lists(st.text(), max_size=5))
def test_exact_selectors_are_set_membership(topics: list[str], texts: list[str]) -> None:
    valid = [t for t in texts if t.isprintable() and t != "*" and len(t) <= MAX_SELECTOR_LENGTH]
    try:
        selectors = exact(*valid)
    except ValueError:
        return  # a format character that isprintable() lets through: refused, as tested above
    assert selectors.matches_any(topics) == bool(set(valid) & set(topics))


def test_equal_sets_hash_alike_so_subscribers_group_by_set() -> None:
    a = SelectorSet([Selector("match", "x"), Selector("urlpattern", "/p/:id")])
    b = SelectorSet([Selector("urlpattern", "/p/:id"), Selector("match", "x")])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != SelectorSet([Selector("match", "x")])
    assert a != SelectorSet(list(a.selectors), base_url=HUB)  # relative patterns differ


def test_the_result_memo_holds_no_compiled_pattern_alive() -> None:
    import gc

    from pushsvc.deliver import mercure_selectors

    text = "https://freed.example/only-this-test/:id"
    selectors = patterns(text)
    assert selectors.matches_any(["https://freed.example/only-this-test/1"])
    del selectors
    for i in range(mercure_selectors.COMPILED_CACHE_SIZE):  # push it out of the recent ones
        mercure_selectors._compiled(f"/filler/{i}", "http://mercure.invalid")
    gc.collect()
    assert (text, "http://mercure.invalid") not in mercure_selectors._live


def test_distinct_live_patterns_are_bounded_per_process_and_shared_ones_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from collections import OrderedDict

    from pushsvc.deliver import mercure_selectors

    # Only the patterns live subscriptions hold: none kept for reconnections.
    monkeypatch.setattr(mercure_selectors, "_recent", OrderedDict())
    monkeypatch.setattr(mercure_selectors, "COMPILED_CACHE_SIZE", 0)
    gc.collect()
    held = len(mercure_selectors._live)
    monkeypatch.setattr(mercure_selectors, "MAX_LIVE_PATTERNS", held + 3)
    base = "https://example.com/bounded"
    live = [SelectorSet([Selector("urlpattern", f"{base}/{n}/:id")]) for n in range(3)]
    with pytest.raises(mercure_selectors.TooManyLivePatterns):
        SelectorSet([Selector("urlpattern", f"{base}/3/:id")])
    # One a live subscription holds is shared, at no cost to the bound.
    again = SelectorSet([Selector("urlpattern", f"{base}/0/:id")])
    assert again.matches_any([f"{base}/0/x"])
    del live, again
    gc.collect()  # the compiled patterns go with their last subscription
    assert SelectorSet([Selector("urlpattern", f"{base}/3/:id")]).matches_any([f"{base}/3/y"])


def test_a_pattern_is_refused_by_what_it_takes_compiled_not_by_its_length() -> None:
    # 248 classes that span all of Unicode: some 1.6 MB compiled, within every other bound.
    costly = "https://e123456.com/:p(" + "[^a]" * 248 + ")"
    with pytest.raises(ValueError, match=r"KiB compiled \(at most 512 KiB\)"):
        patterns(costly)
    # As long, but of narrow classes: taken.
    assert patterns("https://e123456.com/:p(" + "[a-z]" * 198 + ")").matches_any(
        ["https://e123456.com/" + "b" * 198]
    )


def test_the_compiled_patterns_are_bounded_in_bytes_the_recent_ones_let_go_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from collections import OrderedDict

    from pushsvc.deliver import mercure_selectors
    from pushsvc.deliver.mercure_pattern_bytes import EVALUATION_BYTES

    base = f"https://example.com/bytes-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(mercure_selectors, "_recent", OrderedDict())  # this test's only
    gc.collect()
    # Room for the patterns alive now and about three more.
    room = mercure_selectors.alive_bytes() + 3 * (EVALUATION_BYTES + (120 << 10))
    monkeypatch.setattr(mercure_selectors, "MAX_LIVE_PATTERN_BYTES", room)
    recent = patterns(f"{base}/recent/:id")
    del recent  # no subscription holds it: only the recent ones
    live = [patterns(f"{base}/{n}/:id") for n in range(2)]
    assert (f"{base}/recent/:id", FALLBACK_BASE_URL) in mercure_selectors._live
    live.append(patterns(f"{base}/2/:id"))  # the recent one is let go to make room
    gc.collect()
    assert (f"{base}/recent/:id", FALLBACK_BASE_URL) not in mercure_selectors._live
    with pytest.raises(mercure_selectors.TooManyLivePatterns, match="MiB compiled"):
        patterns(f"{base}/3/:id")
    assert patterns(f"{base}/0/:id").matches_any([f"{base}/0/x"])  # shared: no more bytes
    del live
    gc.collect()  # given back with the last subscription
    assert patterns(f"{base}/3/:id").matches_any([f"{base}/3/y"])
