"""Pages of topic names read range by range (`pushsvc.core.topic_pages`), held against the
contract spelt out: the names a scope allows, in name order, each once, `limit` at a time —
and never a name outside the scope read from the index.

The index is a sorted list read by bisection, as SortedDict.irange and ZRANGE BYLEX read
theirs; every name it hands out is recorded, so a test sees what a page cost.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from pushsvc.core.topic_pages import (
    IndexRange,
    NamePage,
    TopicRange,
    common_ranges,
    merged_head,
    topic_ranges,
    walk,
)
from pushsvc.core.topics import TOPIC_PATTERN
from pushsvc.security.scopes import Scope

segments = st.sampled_from(["a", "b", "ab", "a-b", "c:1", "0", "z", "A"])
dotted = st.lists(segments, min_size=1, max_size=3).map(".".join)
topics = st.one_of(dotted, dotted, dotted, st.from_regex(f"\\A{TOPIC_PATTERN}\\Z"))
selectors = st.one_of(topics, dotted.map(lambda prefix: prefix + ".*"), st.just("*"))
selector_lists = st.lists(selectors, min_size=1, max_size=5)


class Index:
    """A sorted list of names that records every name a read hands out."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = sorted(set(names))
        self.handed: list[str] = []

    def read(self, part: IndexRange, count: int) -> list[str]:
        if part.low_inclusive:
            start = bisect.bisect_left(self.names, part.low)
        else:
            start = bisect.bisect_right(self.names, part.low)
        found: list[str] = []
        for name in self.names[start:]:
            if part.high is not None and (
                name > part.high or (name == part.high and not part.high_inclusive)
            ):
                break
            if len(found) == count:
                break
            found.append(name)
        self.handed += found
        return found


def pages(index: Index, ranges: Sequence[TopicRange], limit: int) -> list[NamePage]:
    read, after = [], None
    while True:
        page = walk(ranges, after, limit, index.read)
        read.append(page)
        if not page.more:
            return read
        after = page.names[-1]


@given(names=st.lists(topics, max_size=40), scope=selector_lists, limit=st.integers(1, 7))
def test_pages_list_every_name_the_scope_allows_once_in_order(
    names: list[str], scope: list[str], limit: int
) -> None:
    index = Index(names)
    allowed = Scope.of(scope)
    read = pages(index, topic_ranges(scope), limit)
    listed = [name for page in read for name in page.names]
    assert listed == [name for name in index.names if allowed.allows(name)]
    assert all(len(page.names) == limit for page in read[:-1])
    assert len(read[-1].names) <= limit


@given(names=st.lists(topics, max_size=40), scope=selector_lists, limit=st.integers(1, 7))
def test_a_page_never_reads_a_name_outside_the_scope_and_at_most_one_past_the_page(
    names: list[str], scope: list[str], limit: int
) -> None:
    index = Index(names)
    allowed = Scope.of(scope)
    walk(topic_ranges(scope), None, limit, index.read)
    assert all(allowed.allows(name) for name in index.handed)
    assert len(index.handed) <= limit + 1


def contains(scope_range: TopicRange, name: str) -> bool:
    if scope_range.exact:
        return name == scope_range.low
    return name.startswith(scope_range.low)


@given(scope=selector_lists, names=st.lists(topics, min_size=1, max_size=12))
def test_each_name_the_scope_allows_is_in_exactly_one_range_and_the_others_in_none(
    scope: list[str], names: list[str]
) -> None:
    ranges = topic_ranges(scope)
    assert list(ranges) == sorted(ranges)
    allowed = Scope.of(scope)
    for name in names + [s[:-1] + "x" for s in scope if s.endswith(".*")]:
        holding = sum(contains(r, name) for r in ranges)
        assert holding == (1 if allowed.allows(name) else 0)


def test_a_scope_of_names_and_patterns_inside_wider_patterns_reads_the_widest_only() -> None:
    ranges = topic_ranges(["a.b.*", "a.*", "a.b.c", "a", "b.*", "c"])
    assert ranges == (
        TopicRange("a", exact=True),
        TopicRange("a.", exact=False),
        TopicRange("b.", exact=False),
        TopicRange("c", exact=True),
    )
    assert topic_ranges(["a.*", "*"]) == (TopicRange("", exact=False),)


def test_a_page_after_a_name_outside_every_range_starts_at_the_next_range() -> None:
    index = Index(["a.1", "a.2", "b", "c.1", "d"])
    ranges = topic_ranges(["a.*", "c.*"])
    assert walk(ranges, "b", 10, index.read) == NamePage(["c.1"], more=False)
    assert walk(ranges, "a.1", 1, index.read) == NamePage(["a.2"], more=True)
    assert walk(ranges, "zzz", 10, index.read) == NamePage([], more=False)


@given(a=selector_lists, b=selector_lists, names=st.lists(topics, min_size=1, max_size=12))
def test_common_ranges_hold_exactly_the_names_both_lists_select(
    a: list[str], b: list[str], names: list[str]
) -> None:
    ranges = common_ranges(a, b)
    assert list(ranges) == sorted(ranges)
    probes = names + [s[:-1] + "x" for s in a + b if s.endswith(".*")]
    probes += [s for s in a + b if not s.endswith("*")]
    for name in probes:
        holding = sum(contains(r, name) for r in ranges)
        assert holding == (1 if Scope.of(a).allows(name) and Scope.of(b).allows(name) else 0)


_RUNS = st.integers(1, 20).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 60)), max_size=40),
        st.integers(1, 300),
    )
)


@given(_RUNS)
def test_the_merged_head_of_sorted_sources_is_their_union_sorted_cut_at_count(
    drawn: tuple[int, list[tuple[int, int]], int],
) -> None:
    # Names 0, 1, 2, ... in runs, each run in one source (a topic is in one partition): evenly
    # spread, all in one source, or anything between.
    n, runs, count = drawn
    sources: list[list[int]] = [[] for _ in range(n)]
    names = 0
    for owner, length in runs:
        sources[owner] += range(names, names + length)
        names += length

    def read(asking: dict[int, int | None], chunk: int) -> dict[int, list[int]]:
        answers = {}
        for source, after in asking.items():
            kept = sources[source]
            start = 0 if after is None else bisect.bisect_right(kept, after)
            answers[source] = kept[start : start + chunk]
        return answers

    assert merged_head(count, n, read) == list(range(names))[:count]


def test_names_spread_evenly_are_read_about_twice_a_share_per_source() -> None:
    sources = [list(range(p, 16_000, 16)) for p in range(16)]
    read_names = 0

    def read(asking: dict[int, int | None], chunk: int) -> dict[int, list[int]]:
        nonlocal read_names
        answers = {}
        for source, after in asking.items():
            start = 0 if after is None else bisect.bisect_right(sources[source], after)
            answers[source] = sources[source][start : start + chunk]
            read_names += len(answers[source])
        return answers

    assert merged_head(1001, 16, read) == list(range(1001))
    assert read_names <= 2_200  # the whole page from each partition: 16,016
