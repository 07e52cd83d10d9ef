"""Values of any magnitude, late at every position, through the aggregator, against pandas.

A rule may ask for a few statistics (`stats = ["count", "mean"]`): the windows then keep the
sums they need and no more, and the values beyond the fast path's range (above ``HUGE``, or
finer than its scale) send the topic to the exact general path. Hypothesis draws streams of
values from 1e-300 to 1e300 of both signs, each event on time or late by up to the grace
(into published series buckets, which are corrected), for several selections of statistics;
every update's statistics must equal pandas' rolling over the accepted events at their event
times (exact rationals for the moments, `harness.oracle`), and every series point the exact
values of its bucket's events.
"""

from __future__ import annotations

import dataclasses
import math

import orjson
from harness.oracle import Exact, mismatches, rolling
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.ingest import Event
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.rules.tiers import parse_tiers
from pushsvc.stats import SCALAR_STATS, STAT_KEYS

S = 1_000_000
BASE = 1_763_700_000 * S
WIDTHS = (10 * S,)
LABELS = ("10s",)
GRACE = 8 * S
LATENESS = 2 * S  # series buckets published at 2 s, corrected up to the grace
SELECTIONS = (("count", "mean"), ("mean",), ("sum", "var"), SCALAR_STATS, STAT_KEYS)

MAGNITUDES = st.sampled_from([1.0, 1e15, 1e100, 2.0**379, 3e114, 1e200, 1e300, 1e-300])
VALUES = st.one_of(
    st.builds(lambda m, f: m * f, MAGNITUDES, st.floats(1.0, 9.99) | st.floats(-9.99, -1.0)),
    st.floats(-1e300, 1e300, allow_nan=False),
    st.integers(-3, 3).map(float),
)


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[int, float]]:
    """(ts_us, value) in arrival order: on time, at the clock, or late by up to the grace."""
    clock = BASE
    events = [(clock, draw(VALUES))]
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["next", "tie", "late", "late"]))
        if kind == "next":
            clock += draw(st.sampled_from([1, S // 3, S, 3 * S, 11 * S]))
            ts = clock
        elif kind == "tie":
            ts = clock
        else:
            ts = clock - draw(st.integers(1, GRACE))
        events.append((ts, draw(VALUES)))
    return events


def _read(got: dict[str, float | int | None], n: int) -> dict[str, float | int | None]:
    """A window of `n` values' statistics as the engine holds them: JSON has no infinity,
    and the update says null for a variance beyond the double range (of values near 1e300),
    which the engine holds as ``inf`` (`pushsvc.stats.moments`)."""
    if n < 2:
        return got
    return {k: math.inf if v is None and k in ("var", "stddev") else v for k, v in got.items()}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(events=streams(), stats=st.sampled_from(SELECTIONS), batch=st.integers(1, 7))
def test_wide_values_late_anywhere_equal_pandas(
    events: list[tuple[int, float]], stats: tuple[str, ...], batch: int
) -> None:
    rule = dataclasses.replace(
        default_rule(WIDTHS, stats, parse_tiers("1s:15m,1m:24h")), grace_us=GRACE
    )
    aggregator = Aggregator(rules=Rules((), rule), wall_clock=lambda: 0, lateness_us=LATENESS)
    updates: list[dict[str, dict[str, float | int | None]]] = []
    points: dict[tuple[str, int], dict[str, object]] = {}
    for start in range(0, len(events), batch):
        chunk = [Event(v, ts, None) for ts, v in events[start : start + batch]]
        for made in aggregator.apply_events("t", chunk):
            body = orjson.loads(made.body)
            if made.series is None:
                updates.append(body["windows"])
            else:  # the latest revision of each bucket stands
                points[(made.series.resolution, made.series.t_us)] = body["point"]
    # A tick past every bucket's grace publishes what is still open or due for correction.
    clock = max(ts for ts, _ in events)
    for made in aggregator.apply_ticks({"t": clock + GRACE + 2 * 60 * S}):
        if made.series is not None:
            points[(made.series.resolution, made.series.t_us)] = orjson.loads(made.body)["point"]
    assert len(updates) == len(events)
    states = [sorted(events[: k + 1], key=lambda row: row[0]) for k in range(len(events))]
    oracle = rolling(states, WIDTHS)
    for k, (windows, state) in enumerate(zip(updates, states, strict=True)):
        newest = max(ts for ts, _ in state)
        for width, label in zip(WIDTHS, LABELS, strict=True):
            window = [v for ts, v in state if ts > newest - width]
            order = {name: float(column[k]) for name, column in oracle[width].items()}
            got = _read(windows[label], len(window))
            wrong = mismatches(got, order, Exact.of(window), stats)
            assert not wrong, (k, label, wrong)
    assert {start for resolution, start in points if resolution == "1s"} == {
        ts - ts % S for ts, _ in events
    }
    for (resolution, start), point in points.items():
        step = S if resolution == "1s" else 60 * S
        bucket = [v for ts, v in events if start <= ts < start + step]
        exact = Exact.of(bucket)
        assert point["count"] == exact.n, (resolution, start, point, bucket)
        if resolution == "1s":  # a finest bucket's sum is its values' exact sum, rounded once
            assert point["sum"] == float(exact.sum), (start, point, bucket)
