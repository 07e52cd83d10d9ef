"""A window's top list as the update carries it: encoded once where it changes (exact
windows, count windows, a long window's Space-Saving list with its error). It must be the
JSON an update would have had from the list of dicts (orjson's own encoding, key for key),
and the list `value_counts` gives (or, past the Space-Saving threshold, within its bound),
for any text a tag value may be.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.stats.tagged import CountTags, ExactTags, TagSpec, TimeTags
from support.tag_oracle import Kind, frame, held, top, top_problems

S = 1_000_000
START = 1_700_000_000 * S

# Any text a producer's JSON can carry: orjson refuses lone surrogates on the way in.
_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _listed(windows: dict[str, dict[str, object]], label: str) -> list[dict[str, Any]]:
    """The window's top list as a subscriber parses it, after checking that its encoding is
    orjson's own for those entries (what the update carried before it was encoded ahead)."""
    body = orjson.dumps(windows)
    assert body == orjson.dumps(orjson.loads(body))
    entries: list[dict[str, Any]] = orjson.loads(body)[label]["top_product"]
    for entry in entries:
        assert list(entry)[:2] == ["value", "count"] and set(entry) <= {"value", "count", "error"}
    return entries


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(_values, min_size=1, max_size=8, unique=True),
    picks=st.lists(st.integers(0, 7), min_size=1, max_size=40),
)
def test_exact_and_count_windows_list_value_counts_for_any_text(
    values: list[str], picks: list[int]
) -> None:
    spec = TagSpec((), (("product", 3),))
    exact = ExactTags((5 * S,), ("5s",), spec)
    counted = CountTags((7,), spec)
    rows: list[tuple[int, dict[str, str] | None]] = []
    for i, pick in enumerate(picks):
        ts = START + i * 400_000
        tags = {"product": values[pick % len(values)]}
        rows.append((ts, tags))
        exact.insert(ts, tags, ts)
        counted.insert(ts, tags, ts)
        windows: dict[str, dict[str, object]] = {"5s": {}, "last7": {}}
        exact.fill(windows)
        counted.fill(windows)
        data = frame(rows, ("product",))
        for kind in (Kind("5s", 5 * S), Kind("last7", last=7)):
            assert _listed(windows, kind.label) == top(held(data, ts, kind), "product", 3)


@settings(max_examples=15, deadline=None)
@given(hot=st.lists(_values, min_size=3, max_size=3, unique=True), error_at=st.integers(0, 400))
def test_a_long_windows_approximate_list_is_orjsons_encoding_within_the_bound(
    hot: list[str], error_at: int
) -> None:
    """A 1m long window (sub-buckets of 1 s, 1,000 counters each) fed 1,500 values in one
    second: Space-Saving replaces, and every entry carries `"error"`, the sub-bucket's floor
    (the smallest counter: 1 while some of the 1,000 counters hold one event; at most N/m)."""
    tags = TimeTags((60 * S,), ("1m",), TagSpec((), (("product", 3),)))
    rows: list[tuple[int, dict[str, str] | None]] = []
    n = 1_500 + error_at
    for i in range(n):
        ts = START + i * 500  # all within one sub-bucket
        value = hot[i % 3] if i % 4 == 0 else f"cold-{i}"
        rows.append((ts, {"product": value}))
        tags.insert(ts, {"product": value}, ts)
    windows: dict[str, dict[str, object]] = {"1m": {}}
    tags.fill(windows)
    got = _listed(windows, "1m")
    assert all(entry["error"] == 1 for entry in got)
    inside = held(frame(rows, ("product",)), rows[-1][0], Kind("1m", 60 * S, long=True))
    assert not top_problems(got, inside, "product", 3)
    assert {entry["value"] for entry in got} == set(hot)
    # One more event: the same list, the same bytes (a list is encoded when it changes).
    ts = rows[-1][0] + 1
    tags.insert(ts, {"product": f"cold-{n}"}, ts)
    before = windows["1m"]["top_product"]
    tags.fill(windows)
    assert windows["1m"]["top_product"] is before
    assert _listed(windows, "1m") == got


def test_an_empty_window_lists_nothing() -> None:
    spec = TagSpec((), (("product", 3),))
    windows: dict[str, dict[str, object]] = {"1m": {}, "last7": {}}
    TimeTags((60 * S,), ("1m",), spec).fill(windows)
    CountTags((7,), spec).fill(windows)
    assert orjson.dumps(windows) == b'{"1m":{"top_product":[]},"last7":{"top_product":[]}}'
