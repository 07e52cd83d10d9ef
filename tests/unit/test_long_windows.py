"""``LongWindows`` against pandas and exact rationals over the rounded window, its sketch
quantiles against pandas' linear quantile, its memory, and its state round trip.

The set each window must hold after every operation (docs/design.md, "Long windows"): the
accepted events with ts in ``(floor((T - w) / s) * s, T]``, ``s = w // 60``. pandas gives
count, min, max and the quantiles of that set, ``harness.oracle.Exact`` its sum, mean, var
and stddev (which must be the correctly rounded exact values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from harness.oracle import Exact, mismatches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.stats.layout import ALL_STATS
from pushsvc.stats.long_windows import LongWindows
from support.datasets import skewed

S = 1_000_000
BASE = 1_763_700_000 * S
A = 0.01
SLACK = 1 + 1e-9  # see test_sketch.py
TINY = 2.3e-308
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
EXACT_STATS = ("count", "sum", "mean", "min", "max", "var", "stddev")

# 3 s (sub-buckets of 50 ms) and a width that is no multiple of 60 (sub-buckets of 116,666 µs).
WIDTHS = (3 * S, 7 * S + 3)
LABELS = ("3s", "7s")


@dataclass
class Stream:
    """What the topic accepted (arrival order) and its clock."""

    events: list[tuple[int, float]] = field(default_factory=list)
    clock: int | None = None

    def window(self, width: int) -> list[float]:
        assert self.clock is not None
        step = width // 60
        edge = (self.clock - width) // step * step
        ordered = sorted(self.events, key=lambda e: e[0])  # stable: ties in arrival order
        return [v for ts, v in ordered if edge < ts <= self.clock]


def quantile_bound(values: Sequence[float], q: float) -> float:
    """sketch.py's bound: A * |x| for same-sign neighbours, else relative to their magnitudes."""
    ordered = sorted(values)
    place = q * (len(ordered) - 1)
    lo = int(place)
    f = place - lo
    hi = min(lo + 1, len(ordered) - 1)
    return A * ((1 - f) * abs(ordered[lo]) + f * abs(ordered[hi])) * SLACK + 2 * TINY


def check(lw: LongWindows, stream: Stream) -> None:
    got = lw.summary()
    assert list(got) == list(LABELS)
    for label, width in zip(LABELS, WIDTHS, strict=True):
        row = got[label]
        assert tuple(row) == ALL_STATS
        window = stream.window(width)
        series = pd.Series(window, dtype="float64")
        order: dict[str, float] = {
            "count": int(series.count()),
            "min": float(series.min()),
            "max": float(series.max()),
        }
        for name, q in QUANTILES:
            order[name] = float(series.quantile(q, interpolation="linear"))
        wrong = mismatches(row, order, Exact.of(window), EXACT_STATS)
        assert not wrong, (label, wrong)
        assert row["rate"] == len(window) * S / width
        for name, q in QUANTILES:
            if not window:
                assert row[name] is None
                continue
            value = row[name]
            assert isinstance(value, float)
            assert abs(value - order[name]) <= quantile_bound(window, q), (label, name)
            assert order["min"] <= value <= order["max"]


values = st.one_of(
    st.integers(-1000, 1000).map(float),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 0.1, 1e-300, -3e-310, 1e15, 1e150, -1e150]),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 400_000), values),
        st.tuples(st.just("event"), st.just(0), values),  # ties
        st.tuples(st.just("late"), st.integers(0, 5 * S), values),
        st.tuples(st.just("event"), st.integers(5 * S, 30 * S), values),  # after an idle gap
        st.tuples(st.just("tick"), st.integers(0, 2 * S), st.just(0.0)),
    ),
    max_size=60,
)


def apply(lw: LongWindows, stream: Stream, op: tuple[str, int, float]) -> bool | None:
    """One operation on both; advance()'s answer for a tick."""
    kind, dt, value = op
    if kind == "tick":
        if stream.clock is None:
            assert lw.advance(BASE) is False
            return None
        before = [len(stream.window(w)) for w in WIDTHS]
        changed = lw.advance(stream.clock + dt)
        stream.clock += dt
        assert changed == (before != [len(stream.window(w)) for w in WIDTHS])
        return changed
    if stream.clock is None:
        ts = BASE
    else:
        ts = stream.clock - dt if kind == "late" else stream.clock + dt
    stream.clock = max(stream.clock or ts, ts)
    stream.events.append((ts, value))
    lw.insert(ts, value, stream.clock)
    return None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_against_pandas_and_exact_rationals(ops: list[tuple[str, int, float]]) -> None:
    lw = LongWindows(WIDTHS, LABELS, ALL_STATS)
    stream = Stream()
    for op in ops:
        apply(lw, stream, op)
        if stream.clock is not None:
            check(lw, stream)
    assert lw.is_empty() == all(not stream.window(w) for w in WIDTHS if stream.clock)


@settings(max_examples=100, deadline=None)
@given(ops=ops, split=st.floats(0, 1))
def test_state_round_trip_continues_bit_identically(
    ops: list[tuple[str, int, float]], split: float
) -> None:
    lw = LongWindows(WIDTHS, LABELS, ALL_STATS)
    stream = Stream()
    cut = int(split * len(ops))
    for op in ops[:cut]:
        apply(lw, stream, op)
    state = lw.to_state()
    back = LongWindows.from_state(WIDTHS, LABELS, ALL_STATS, state)
    assert back.to_state() == state
    twin = Stream(list(stream.events), stream.clock)
    for op in ops[cut:]:
        assert apply(lw, stream, op) == apply(back, twin, op)
        # repr: the same doubles bit for bit (-0.0 and 0.0 differ there).
        assert repr(back.summary()) == repr(lw.summary())
    assert back.to_state() == lw.to_state()
    assert back.is_empty() == lw.is_empty()


def test_state_round_trip_on_a_long_stream() -> None:
    """Thousands of events over many sub-buckets (late ones, both signs, idle ticks), split
    at several points: the restored windows answer what the original does, bit for bit."""
    rng = np.random.default_rng(21)
    n = 6_000
    gaps = rng.integers(0, 4_000, n)
    late = rng.random(n) < 0.05
    values = np.round(rng.normal(5, 20, n), 3).tolist()
    lw = LongWindows(WIDTHS, LABELS, ALL_STATS)
    copies: list[LongWindows] = []
    clock = BASE
    for i in range(n):
        clock += int(gaps[i])
        ts = clock - int(rng.integers(0, 5 * S)) if late[i] else clock
        for windows in (lw, *copies):
            windows.insert(ts, values[i], clock)
        if i % 1_000 == 999:
            tick = clock + 500_000
            assert len({windows.advance(tick) for windows in (lw, *copies)}) == 1
            clock = tick
        if i in (1_500, 3_000, 4_500):
            copies.append(LongWindows.from_state(WIDTHS, LABELS, ALL_STATS, lw.to_state()))
        want = repr(lw.summary())
        assert all(repr(windows.summary()) == want for windows in copies), i
    assert lw.footprint()["7s"][0] > 50
    assert all(windows.to_state() == lw.to_state() for windows in copies)


def test_the_old_edge_is_rounded_out_to_a_sub_bucket() -> None:
    lw = LongWindows([60 * S], ["1m"], ["count", "min", "max"])
    assert lw.sub_bucket_us("1m") == S
    t0 = BASE + 500_000  # inside the sub-bucket (BASE, BASE + 1 s]
    lw.insert(t0, 1.0, t0)
    # At T = t0 + 60 s the exact window (T - 60 s, T] has lost the event; its sub-bucket
    # (ending at BASE + 1 s) is still held: T - w = t0 rounds down to BASE.
    assert lw.advance(t0 + 60 * S) is False
    assert lw.summary()["1m"] == {"count": 1, "min": 1.0, "max": 1.0}
    # A late event in that same sub-bucket still counts, older than T - w as it is.
    lw.insert(BASE + 1, 5.0, t0 + 60 * S)
    assert lw.summary()["1m"]["count"] == 2
    # Once T - w reaches the next sub-bucket, both leave together.
    assert lw.advance(BASE + 61 * S - 1) is False
    assert lw.advance(BASE + 61 * S) is True
    assert lw.summary()["1m"] == {"count": 0, "min": None, "max": None}
    assert lw.is_empty()
    # A late event whose sub-bucket has left goes nowhere.
    lw.insert(BASE + S, 9.0, BASE + 61 * S)
    assert lw.is_empty()


def test_empty_and_single_value_windows() -> None:
    lw = LongWindows([10 * S, 20 * S], ["10s", "20s"], ALL_STATS)
    empty = {"count": 0, "sum": 0.0, "rate": 0.0} | {
        name: None for name in ALL_STATS if name not in ("count", "sum", "rate")
    }
    assert lw.summary() == {"10s": {k: empty[k] for k in ALL_STATS}, "20s": empty}
    assert lw.is_empty()
    assert lw.advance(BASE) is False  # before the first event
    lw.insert(BASE, 2.5, BASE)
    one = lw.summary()["10s"]
    assert one == {
        "count": 1, "sum": 2.5, "mean": 2.5, "min": 2.5, "max": 2.5, "var": None,
        "stddev": None, "p50": 2.5, "p90": 2.5, "p99": 2.5, "rate": 0.1,
    }  # fmt: skip
    assert lw.advance(BASE) is False  # not later
    assert lw.advance(BASE + 15 * S) is True  # left 10s, still in 20s
    got = lw.summary()
    assert got["10s"] == empty
    assert got["20s"]["count"] == 1
    assert not lw.is_empty()


def test_selected_stats_in_all_stats_order() -> None:
    lw = LongWindows([10 * S], ["10s"], ["rate", "p99", "count", "mean"])
    assert lw.stats == ("count", "mean", "p99", "rate")
    lw.insert(BASE, 4.0, BASE)
    lw.insert(BASE + 1, 6.0, BASE + 1)
    assert lw.summary() == {"10s": {"count": 2, "mean": 5.0, "p99": pytest.approx(6, 0.01),
                                    "rate": 0.2}}  # fmt: skip


def datasets(n: int) -> dict[str, list[float]]:
    return skewed(n, seed=3)


@pytest.mark.parametrize("name", ["lognormal", "bimodal", "pareto"])
def test_quantiles_within_one_percent_of_pandas(name: str) -> None:
    """30,000 events, 5 ms apart, through a 1m window (sub-buckets of 1 s), read at points
    where sub-buckets have left and the window holds about 12,000."""
    width = 60 * S
    lw = LongWindows([width], ["1m"], ALL_STATS)
    stream = Stream()
    checks = 0
    for i, value in enumerate(datasets(30_000)[name]):
        ts = BASE + 5_000 * i
        stream.clock = ts
        stream.events.append((ts, value))
        lw.insert(ts, value, ts)
        if i % 3_001 == 3_000:
            window = pd.Series(stream.window(width))
            row = lw.summary()["1m"]
            assert row["count"] == len(window)
            for stat, q in QUANTILES:
                want = float(window.quantile(q, interpolation="linear"))
                got = row[stat]
                assert isinstance(got, float)
                assert abs(got - want) <= A * abs(want) * SLACK, (name, i, stat, got, want)
            checks += 1
    assert checks == 9


def test_memory_follows_sub_buckets_and_bins_not_events() -> None:
    """The same two minutes of values in [1, 1000] at 50 and at 2,000 events/s: a 1m window
    holds at most 62 sub-buckets and the bins of that range, and its state grows with the
    counts' widths only (a few bytes per bin), not with the 40 times more events."""
    rng = np.random.default_rng(9)
    width = 60 * S
    sizes = {}
    for rate in (50, 2_000):
        lw = LongWindows([width], ["1m"], ALL_STATS)
        gap = S // rate
        values = rng.uniform(1, 1000, 120 * rate).tolist()
        for i, value in enumerate(values):
            ts = BASE + gap * i
            lw.insert(ts, value, ts)
        subs, bins = lw.footprint()["1m"]
        assert subs <= 62
        # 347 keys cover [1, 1000]; each store is laid out in at most 1024 bins.
        assert bins <= 1024 * (subs + 1)
        sizes[rate] = len(lw.to_state())
    assert sizes[2_000] < 4 * sizes[50]


def test_rescaling_follows_the_values_held() -> None:
    """A value that needs a fine integer scale (2**-1074) makes every sum finer; once it has
    left, the scale coarsens again and the moments stay exact all along."""
    lw = LongWindows([10 * S], ["10s"], ["sum", "mean", "var"])
    lw.insert(BASE, 1.5, BASE)
    lw.insert(BASE + 1, 5e-324, BASE + 1)
    lw.insert(BASE + 3 * S, 2.25, BASE + 3 * S)
    assert lw.summary()["10s"]["sum"] == 1.5 + 5e-324 + 2.25
    # The sub-bucket of the two early events leaves (sub-buckets are 166,666 µs wide).
    assert lw.advance(BASE + 10 * S + 200_000) is True
    assert lw.summary()["10s"] == {"sum": 2.25, "mean": 2.25, "var": None}
    assert lw._windows[0].shift == 2  # 2.25 = 9 * 2**-2


def test_invalid_configuration() -> None:
    cases: list[tuple[Sequence[int], Sequence[str], Sequence[str], float, str]] = [
        ([59], ["x"], ["count"], A, "at least 60"),
        ([True], ["x"], ["count"], A, "integers"),
        ([60 * S], ["x", "y"], ["count"], A, "one label per"),
        ([], [], ["count"], A, "at least one window"),
        ([60 * S, 120 * S], ["x", "x"], ["count"], A, "distinct"),
        ([60 * S], ["x"], ["median"], A, "unknown statistic"),
        ([60 * S], ["x"], [], A, "at least one statistic"),
        ([60 * S], ["x"], "count", A, "not one string"),
        ([60 * S], ["x"], ["count"], 0.0, "accuracy"),
        ([60 * S], ["x"], ["count"], 1.0, "accuracy"),
    ]
    for widths, labels, stats, accuracy, message in cases:
        with pytest.raises(ValueError, match=message):
            LongWindows(widths, labels, stats, accuracy=accuracy)


def test_bad_events_change_nothing() -> None:
    lw = LongWindows([60 * S], ["1m"], ALL_STATS)
    lw.insert(BASE, 1.0, BASE)
    state = lw.to_state()
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="finite"):
            lw.insert(BASE + 1, value, BASE + 1)
    with pytest.raises(ValueError, match="after the clock"):
        lw.insert(BASE + 2, 1.0, BASE + 1)
    assert lw.to_state() == state


def test_state_for_other_settings_or_damaged_is_refused() -> None:
    lw = LongWindows(WIDTHS, LABELS, ALL_STATS)
    for i in range(50):
        lw.insert(BASE + 100_000 * i, float(i % 7) - 2.5, BASE + 100_000 * i)
    state = lw.to_state()
    with pytest.raises(ValueError, match="widths"):
        LongWindows.from_state([3 * S, 8 * S], LABELS, ALL_STATS, state)
    with pytest.raises(ValueError, match="accuracy"):
        LongWindows.from_state(WIDTHS, LABELS, ALL_STATS, state, accuracy=0.02)
    for cut in range(0, len(state), 7):
        with pytest.raises(ValueError):
            LongWindows.from_state(WIDTHS, LABELS, ALL_STATS, state[:cut])
    with pytest.raises(ValueError, match="unread"):
        LongWindows.from_state(WIDTHS, LABELS, ALL_STATS, state + b"\1")
    # Fewer stats is fine: the state holds everything any selection needs.
    narrow = LongWindows.from_state(WIDTHS, LABELS, ["count"], state)
    assert narrow.summary() == {label: {"count": row["count"]} for label, row in
                                lw.summary().items()}  # fmt: skip
