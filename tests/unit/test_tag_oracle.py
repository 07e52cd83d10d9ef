"""Distinct counts and top values against pandas, through the aggregator: every window kind
(time, long, count), the topic and its groups, after every event and every idle tick.

Small alphabets check the exact answers (`nunique`, `value_counts`) with late events, ties and
ticks; a stream of many values checks the sketches' promises: each distinct count within
4 % and their mean error within 1.5 %, each top list within Space-Saving's bounds."""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rule, Rules, default_rule
from support.tag_oracle import Kind, distinct, frame, held, top, top_problems

S = 1_000_000
KINDS = (
    Kind("2s", 2 * S),
    Kind("10s", 10 * S),
    Kind("2m", 120 * S, long=True),
    Kind("last3", last=3),
    Kind("last7", last=7),
)
TAGS = ("user", "product", "region")


def _rules(group: bool) -> Rules:
    rule = Rule(
        1,
        ("t",),
        (2 * S, 10 * S, 120 * S),
        (3, 7),
        ("count",),
        ("region",) if group else (),
        exact_up_to_us=10 * S,
        distinct=("user",),
        top=(("product", 2),),
    )
    return Rules([rule], default_rule((10 * S,), ("count",)))


@st.composite
def _steps(draw: st.DrawFn) -> list[tuple[str, int, dict[str, str] | None]]:
    """Events (with ties, late events, gaps of every size) and idle ticks."""
    steps: list[tuple[str, int, dict[str, str] | None]] = []
    clock = 1_700_000_000 * S
    for _ in range(draw(st.integers(1, 50))):
        gap = draw(st.sampled_from([0, 0, 1, 300_000, 1_500_000, 2 * S + 1, 9 * S, 61 * S]))
        if draw(st.integers(0, 9)) == 0:
            clock += gap + 1
            steps.append(("tick", clock, None))
            continue
        clock += gap
        ts = clock
        if gap == 0 and draw(st.booleans()):
            ts -= draw(st.sampled_from([1, 500_000, 2 * S, 3 * S]))  # late
        tags = {
            name: draw(st.sampled_from(values))
            for name, values in (("user", "abcdef"), ("product", "pqrst"), ("region", "xy"))
            if draw(st.integers(0, 4))
        }
        steps.append(("event", ts, tags or None))
    return steps


def _check_windows(
    windows: Mapping[str, Mapping[str, object]], rows: pd.DataFrame, clock: int, where: str
) -> None:
    for kind in KINDS:
        inside = held(rows, clock, kind)
        got = windows[kind.label]
        assert got["distinct_user"] == distinct(inside, "user"), (where, kind.label)
        assert got["top_product"] == top(inside, "product", 2), (where, kind.label)


def _run(group: bool, steps: list[tuple[str, int, dict[str, str] | None]]) -> None:
    aggregator = Aggregator(rules=_rules(group), wall_clock=lambda: 0)
    rows: list[tuple[int, dict[str, str] | None]] = []
    clock: int | None = None
    for n, (kind, ts, tags) in enumerate(steps):
        if kind == "tick":
            if clock is None:
                continue
            drafts = aggregator.apply_ticks({"t": ts})
            clock = max(clock, ts)
        else:
            drafts = aggregator.apply_events("t", [Event(1.0, ts, tags)])
            rows.append((ts, tags))
            clock = ts if clock is None else max(clock, ts)
        data = frame(rows, TAGS)
        for draft in drafts:
            body = orjson.loads(draft.body)
            _check_windows(body["windows"], data, clock, f"step {n}, topic")
            parts = [body["group"]] if "group" in body else body.get("groups", [])
            for part in parts:
                region = part["key"]["region"]
                if region is None:
                    mine = data[data["region"].isna()]
                else:
                    mine = data[data["region"] == region]
                _check_windows(part["windows"], mine, clock, f"step {n}, group {region}")


@pytest.mark.slow  # the whole suite runs it; `-m fast` leaves it out
@settings(max_examples=40, deadline=None)
@given(_steps())
def test_every_window_of_the_topic_matches_pandas(
    steps: list[tuple[str, int, dict[str, str] | None]],
) -> None:
    _run(False, steps)


@pytest.mark.slow  # the whole suite runs it; `-m fast` leaves it out
@settings(max_examples=40, deadline=None)
@given(_steps())
def test_every_window_of_every_group_matches_pandas(
    steps: list[tuple[str, int, dict[str, str] | None]],
) -> None:
    _run(True, steps)


@pytest.mark.slow  # the whole suite runs it; `-m fast` leaves it out
def test_many_values_keep_the_sketches_promises() -> None:
    """40,000 events at 1,000 a second: ~8,000 different users in a 10 s window (exact: it
    holds its events) and more in a 2 m long window (a HyperLogLog), and products drawn from
    6,000 (Zipf-like) so that a long window's sub-buckets overflow their 1,000 counters."""
    rng = random.Random(3)
    rule = Rule(
        1,
        ("t",),
        (10 * S, 120 * S),
        (),
        ("count",),
        exact_up_to_us=10 * S,
        distinct=("user",),
        top=(("product", 5),),
    )
    aggregator = Aggregator(
        rules=Rules([rule], default_rule((10 * S,), ("count",))), wall_clock=lambda: 0
    )
    start = 1_700_000_000 * S
    events = [
        Event(
            1.0,
            start + i * 1000,
            {"user": f"u{rng.randrange(40_000)}", "product": f"p{int(6000 * rng.random() ** 3)}"},
        )
        for i in range(40_000)
    ]
    drafts = aggregator.apply_events("t", events)
    data = frame([(e.ts_us, e.tags) for e in events], ("user", "product"))
    errors = []
    approximate_tops = 0
    for i in range(1_500, len(events), 401):
        body = orjson.loads(drafts[i].body)
        clock = events[i].ts_us
        seen = data.iloc[: i + 1]
        for kind in (Kind("10s", 10 * S), Kind("2m", 120 * S, long=True)):
            inside = held(seen, clock, kind)
            got = body["windows"][kind.label]
            want = distinct(inside, "user")
            assert want > 1000
            if not kind.long:  # it holds its events: exact at any number of values
                assert got["distinct_user"] == want, (i, kind.label)
            error = abs(got["distinct_user"] - want) / want
            assert error <= 0.04, (i, kind.label, got["distinct_user"], want)
            errors.append(error)
            problems = top_problems(got["top_product"], inside, "product", 5)
            assert not problems, (i, kind.label, problems)
            approximate_tops += any("error" in e for e in got["top_product"])
    assert statistics.fmean(errors) <= 0.015
    assert approximate_tops > 10  # the long window's Space-Saving was exercised
