"""Group by against pandas: every group's windows, after every event, equal pandas' rolling
over that group's events (`groupby(tags).rolling(w)`), read at the topic clock T.

A group's time windows run on the topic's clock, so a group is read at T even when its own
newest event is older: the oracle puts a NaN row at T into the group's rows, as it does for
an idle tick (harness/oracle.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import orjson
import pandas as pd
import pytest
from harness.oracle import Exact, mismatches, rolling
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rule, Rules, default_rule
from pushsvc.stats.groups import OTHER

S = 1_000_000
WIDTHS = (2 * S, 10 * S)
LABELS = ("2s", "10s")
STATS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
LATENESS = 5 * S


def _rules(
    stats: Sequence[str], max_groups: int = 100, group_by: tuple[str, ...] = ("k", "j")
) -> Rules:
    rule = Rule(1, ("t",), WIDTHS, (), tuple(stats), group_by, max_groups)
    return Rules([rule], default_rule(WIDTHS, STATS))


@st.composite
def _streams(draw: st.DrawFn) -> list[Event]:
    """Events with ties, late events within the lateness, idle gaps, and tags that vary in
    which of the two grouping tags they carry."""
    events = []
    clock = 1_700_000_000 * S
    newest = clock
    for _ in range(draw(st.integers(1, 60))):
        step = draw(st.sampled_from([0, 0, 1, 250_000, 700_000, 3 * S, 12 * S]))
        clock += step
        ts = clock
        if draw(st.booleans()) and step == 0:
            ts = max(newest - LATENESS + 1, clock - draw(st.integers(0, 4 * S)))  # late
        newest = max(newest, ts)
        tags = draw(
            st.sampled_from([None, {"k": "a"}, {"k": "b"}, {"k": "a", "j": "x"}, {"j": "x"}])
        )
        value = draw(st.sampled_from([1.0, 2.5, -3.0, 1e6, 0.1, 7.0]))
        events.append(Event(value, ts, tags))
    return events


def _key(
    tags: dict[str, str] | None, group_by: tuple[str, ...] = ("k", "j")
) -> tuple[str | None, ...]:
    tags = tags or {}
    return tuple(tags.get(tag) for tag in group_by)


def _nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _check(
    aggregator: Aggregator,
    events: list[Event],
    stats: Sequence[str],
    max_groups: int,
    group_by: tuple[str, ...] = ("k", "j"),
) -> None:
    drafts = []
    for event in events:  # one event per batch: each update checked at its own moment
        drafts += aggregator.apply_events("t", [event])

    seen: dict[tuple[str | None, ...], list[tuple[int, int, float]]] = {}
    admitted: list[tuple[str | None, ...]] = []
    states, expected_keys, got = [], [], []
    clock = None
    for arrival, (event, update) in enumerate(zip(events, drafts, strict=True)):
        clock = event.ts_us if clock is None else max(clock, event.ts_us)
        key = _key(event.tags, group_by)
        if key not in admitted and len(admitted) < max_groups:
            admitted.append(key)
        if key not in admitted:
            key = (OTHER,) * len(group_by)
        seen.setdefault(key, []).append((event.ts_us, arrival, event.value))
        rows = sorted(seen[key])  # by time, ties in arrival order
        state = [(ts, v) for ts, _, v in rows]
        if clock > rows[-1][0]:
            state.append((clock, math.nan))  # the group read at the topic clock
        states.append(state)
        expected_keys.append(key)
        got.append(orjson.loads(update.body))
    order = rolling(states, WIDTHS)
    for i, (state, key, body) in enumerate(zip(states, expected_keys, got, strict=True)):
        group = body["group"]
        assert tuple(group["key"][tag] for tag in group_by) == key
        t = body["ts"] * S
        for width, label in zip(WIDTHS, LABELS, strict=True):
            window = [v for ts, v in state if ts > round(t) - width and not math.isnan(v)]
            row = {name: column[i] for name, column in order[width].items()}
            row = {k: None if _nan(v) else v for k, v in row.items()}
            problems = mismatches(group["windows"][label], row, Exact.of(window), stats)
            assert not problems, (i, label, key, problems)
            if "rate" in stats:
                assert group["windows"][label]["rate"] == len(window) / (width / S)


@settings(max_examples=60, deadline=None)
@given(_streams())
def test_every_group_window_matches_pandas_after_every_event(events: list[Event]) -> None:
    aggregator = Aggregator(rules=_rules(STATS), wall_clock=lambda: 0)
    _check(aggregator, events, STATS, 100)


@settings(max_examples=40, deadline=None)
@given(_streams())
def test_groups_past_max_groups_share_the_overflow_group(events: list[Event]) -> None:
    stats = (*STATS, "rate")
    aggregator = Aggregator(rules=_rules(stats, max_groups=2), wall_clock=lambda: 0)
    _check(aggregator, events, stats, 2)
    first_two = list(dict.fromkeys(_key(e.tags) for e in events))[:2]
    overflowed = sum(1 for e in events if _key(e.tags) not in first_two)
    assert aggregator.group_overflow == overflowed
    assert aggregator.group_count() == len(first_two) + (overflowed > 0)


@settings(max_examples=40, deadline=None)
@given(_streams())
def test_one_group_by_tag_with_rate_matches_pandas(events: list[Event]) -> None:
    # One tag is routed by its value alone, and exact windows with `rate` take the fused
    # insert-and-summary path: both checked here, with an overflow group.
    stats = (*STATS, "rate")
    rules = _rules(stats, max_groups=1, group_by=("k",))
    _check(Aggregator(rules=rules, wall_clock=lambda: 0), events, stats, 1, ("k",))


def test_pandas_groupby_rolling_agrees_on_an_in_order_stream() -> None:
    # The oracle above reads groups at the topic clock; for events in time order (distinct
    # times) each group's own newest row is the event, so pandas' groupby().rolling() names
    # the same numbers directly.
    rng = np.random.default_rng(7)
    ts = 1_700_000_000 * S + np.cumsum(rng.integers(1, 900_000, 400))
    tags = rng.choice(["grill", "fry", "wok"], 400)
    values = rng.lognormal(3, 1, 400).round(3)
    rules = Rules([Rule(1, ("t",), WIDTHS, (), STATS, ("station",))], default_rule(WIDTHS, STATS))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0)
    events = [
        Event(float(v), int(t), {"station": str(g)})
        for t, g, v in zip(ts, tags, values, strict=True)
    ]
    bodies = [orjson.loads(d.body) for d in aggregator.apply_events("t", events)]
    frame = pd.DataFrame(
        {"station": tags, "value": values, "row": np.arange(400)},
        index=pd.to_datetime(ts, unit="us"),
    )
    for width, label in zip(WIDTHS, LABELS, strict=True):
        rolled = frame.groupby("station").rolling(pd.Timedelta(width, unit="us"))
        expected = pd.DataFrame(
            {
                "row": rolled["row"].max().to_numpy(),
                "count": rolled["value"].count().to_numpy(),
                "mean": rolled["value"].mean().to_numpy(),
                "p90": rolled["value"].quantile(0.9).to_numpy(),
            }
        ).set_index("row")
        for i, body in enumerate(bodies):
            window = body["group"]["windows"][label]
            assert window["count"] == expected.loc[i, "count"]
            assert math.isclose(window["mean"], expected.loc[i, "mean"], rel_tol=1e-12)
            assert window["p90"] == pytest.approx(expected.loc[i, "p90"], rel=1e-12)
