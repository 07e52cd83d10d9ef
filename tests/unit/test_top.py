"""Top values (`pushsvc.stats.top`): ranked exact counts against `collections.Counter`,
Space-Saving's bounds, and the sub-bucketed window's promise (every listed count within
`[c, c + N/m]`, no value with `c > N/m` that ranks missing) as sub-buckets come and go."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.stats.state_codec import StateReader, StateWriter
from pushsvc.stats.top import BucketedTop, RankedCounts, SpaceSaving, counters_for


def _oracle(values: list[str], k: int) -> list[tuple[str, int]]:
    """pandas' value_counts, ties by value ascending."""
    if not values:
        return []
    counts = pd.Series(values).value_counts()
    frame = counts.rename_axis("value").reset_index(name="count")
    frame = frame.sort_values(["count", "value"], ascending=[False, True])
    return [(str(v), int(c)) for v, c in frame.head(k).itertuples(index=False)]


@given(st.lists(st.tuples(st.integers(0, 12), st.booleans()), max_size=200), st.integers(1, 5))
def test_ranked_counts_rank_like_value_counts(ops: list[tuple[int, bool]], k: int) -> None:
    ranked = RankedCounts()
    held: Counter[str] = Counter()
    for v, remove in ops:
        value = f"v{v}"
        if remove and held[value]:
            ranked.add(value, -1)
            held[value] -= 1
        else:
            ranked.add(value)
            held[value] += 1
        assert ranked.top(k) == _oracle(list(held.elements()), k)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(-4, 4)), max_size=400),
    st.integers(1, 4),
    st.sampled_from([0, 8]),
)
def test_a_reader_caching_by_version_sees_the_ranking_of_many_values(
    ops: list[tuple[int, int]], k: int, reserve: int
) -> None:
    """More values than the list keeps (k plus its reserve): listed values fall out of the
    list and unlisted ones come in, the list is made again when too few are left, and a
    reader that renders again only when ``version`` moves (as windows do) always holds the
    oracle's top k. A reserve of 0 (k entries kept beyond k) lets a wrong entry at the list's
    end reach the top k within a few steps."""
    ranked = RankedCounts(reserve)
    held: Counter[str] = Counter()
    seen, cached = -1, ranked.top(k)
    for v, n in ops:
        value = f"v{v:02d}"
        n = max(n, -held[value])
        ranked.add(value, n)
        held[value] += n
        if ranked.version != seen:
            cached, seen = ranked.top(k), ranked.version
        assert cached == _oracle(list(held.elements()), k)


def test_a_listed_value_that_an_unlisted_one_may_pass_leaves_the_list() -> None:
    """k = 1 and no reserve beyond k: two entries kept. b falls below c, which is not listed:
    b must leave the list, or once a is gone the list would name b, not c, first."""
    ranked = RankedCounts(reserve=0)
    for value, n in (("a", 5), ("b", 4), ("c", 3)):
        ranked.add(value, n)
    assert ranked.top(1) == [("a", 5)]
    ranked.add("b", -3)
    assert ranked.top(1) == [("a", 5)]
    ranked.add("a", -5)
    assert ranked.top(1) == [("c", 3)]
    assert ranked.top(3) == [("c", 3), ("b", 1)]


@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(-3, 3), st.booleans()), max_size=200),
    st.integers(1, 5),
)
def test_ranked_counts_stay_ranked_through_steps_of_any_size(
    ops: list[tuple[int, int, bool]], k: int
) -> None:
    """Counts moving by more than one (a long window's floors) and reads now and then: the
    cached list moves entries up and down, or is rebuilt, and always equals the oracle's."""
    ranked = RankedCounts()
    held: Counter[str] = Counter()
    for v, n, read in ops:
        value = f"v{v}"
        n = max(n, -held[value])
        ranked.add(value, n)
        held[value] += n
        if read:
            assert ranked.top(k) == _oracle(list(held.elements()), k)
    assert ranked.top(k) == _oracle(list(held.elements()), k)


@given(st.lists(st.integers(0, 30), max_size=400), st.integers(1, 8))
def test_space_saving_bounds(stream: list[int], capacity: int) -> None:
    summary = SpaceSaving(capacity)
    seen: Counter[str] = Counter()
    for v in stream:
        summary.add(str(v))
        seen[str(v)] += 1
        floor = summary.floor
        assert floor <= summary.n / capacity
        for value, count in seen.items():
            estimate = summary.counts.get(value)
            if estimate is None:
                assert count <= floor
            else:
                assert count <= estimate <= count + floor
        if len(seen) <= capacity:
            assert floor == 0 and summary.counts == dict(seen)


_adds = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 40), st.integers(0, 3)),
        st.tuples(st.just("next"), st.just(0), st.just(0)),
    ),
    max_size=400,
)


@settings(max_examples=150)
@given(_adds, st.integers(1, 6), st.integers(1, 4), st.integers(1, 4))
def test_a_bucketed_window_keeps_the_space_saving_promise(
    steps: list[tuple[str, int, int]], capacity: int, k: int, span: int
) -> None:
    """Values skewed towards small numbers; sub-buckets `now - span + 1 .. now` in the window
    (late adds land up to 3 sub-buckets back); `next` opens a new one."""
    window = BucketedTop(capacity)
    events: list[tuple[int, str]] = []
    now = 0
    for kind, v, back in steps:
        if kind == "next":
            now += 1
            window.evict(now - span + 1)
        else:
            bucket = now - back
            if bucket < now - span + 1:
                continue
            value = f"v{v % (1 + v // 4)}"
            window.add(bucket, value)
            events.append((bucket, value))
        held = [value for bucket, value in events if bucket > now - span]
        counts = Counter(held)
        n = len(held)
        assert window.n == n
        listed = window.top(k)
        error = n / capacity
        for value, estimate in listed:
            assert counts[value] <= estimate <= counts[value] + error
        if window.exact:
            assert listed == _oracle(held, k)
        # Ordered by estimate descending, then value; a value whose true count beats the k-th
        # estimate is listed.
        assert listed == sorted(listed, key=lambda item: (-item[1], item[0]))
        if len(listed) == k:
            kth = listed[-1][1]
            for value, count in counts.items():
                if count > kth:
                    assert value in dict(listed)
        else:
            assert all(value in dict(listed) for value, c in counts.items() if c > error)


@given(_adds, st.integers(1, 6))
def test_bucketed_state_round_trip(steps: list[tuple[str, int, int]], capacity: int) -> None:
    window = BucketedTop(capacity)
    now = 0
    for kind, v, back in steps:
        if kind == "next":
            now += 1
        else:
            window.add(now - back, f"v{v % 9}")
    out = StateWriter()
    window.write(out)
    source = StateReader(bytes(out))
    copy = BucketedTop.read(source, capacity)
    source.done()
    assert (copy.top(5), copy.n, copy.exact) == (window.top(5), window.n, window.exact)
    copy.evict(now - 1)
    window.evict(now - 1)
    assert copy.top(5) == window.top(5)


def test_counters_follow_k() -> None:
    assert (counters_for(1), counters_for(10), counters_for(100)) == (1000, 1000, 2000)
