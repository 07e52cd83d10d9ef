"""CountWindows against oracles after every event of generated streams, and on hand-built ones.

* pandas defines the semantics (docs/design.md, "Analytics rules"): window ``lastN`` after an
  event is ``rolling(N, min_periods=1)`` read at the newest row of all events accepted so far,
  sorted stably by ``ts`` (ties keep arrival order). With late events the window is the last N
  of everything so far in ``ts`` order, so the oracle is recomputed from the events so far at
  every step. pandas is the oracle of count, min, max and the quantiles.
* Exact rationals (``harness.oracle.Exact``) check sum, mean, var and stddev on the same set of
  events: the last N in that order. The engine promises the correctly rounded exact value.
* ``rate`` is checked against its definition, ``(count - 1) / (newest ts - oldest ts)`` per
  second of that set, as a rational rounded once.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from harness.oracle import QUANTILES, Exact, mismatches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.stats import count_windows
from pushsvc.stats.count_windows import MAX_SIZE, CountWindows
from pushsvc.stats.layout import ALL_STATS, SCALAR_STATS

S = 1_000_000  # µs
BASE = 1_763_700_000 * S
EMPTY = {"count": 0, "sum": 0.0} | dict.fromkeys(ALL_STATS[2:])

Summary = dict[str, dict[str, float | int | None]]

# Values per stream: a regime (what most values look like) plus spikes and arbitrary values.
REGIMES = {
    "small ints": st.integers(-3, 3).map(float),  # many duplicates
    "near 1": st.floats(-1e-3, 1e-3).map(lambda d: 1.0 + d),
    "1e9 + noise": st.floats(-1.0, 1.0).map(lambda d: 1e9 + d),
    "decimals": st.integers(-(10**6), 10**6).map(lambda i: i / 1000),
    "negative": st.floats(-1e6, -1e-6),
    "any": st.floats(-1e6, 1e6, allow_nan=False),  # includes tiny and subnormal values
}
# Large magnitudes and tiny values; none so large that a variance leaves the double range.
SPIKES = st.sampled_from([1e16, -1e16, 1.1e9, 1e100, -1e100, 1e-300, 5e-324, -2.5e-310, 0.0])
SIZES = st.lists(st.sampled_from([1, 2, 3, 4, 5, 7, 10, 16]), min_size=1, max_size=3, unique=True)
SELECTIONS = st.sampled_from(
    [
        ALL_STATS,
        SCALAR_STATS,
        ("count", "rate"),
        ("mean", "p90"),
        ("min", "max", "rate"),
        ("var", "p50", "p99"),
    ]
)


@dataclass(frozen=True)
class Event:
    ts_us: int
    value: float


# Built once: a strategy made anew on every draw is validated anew.
REGIME_NAMES = st.sampled_from(sorted(REGIMES))
VALUES = {name: st.one_of(r, r, r, SPIKES, REGIMES["any"]) for name, r in REGIMES.items()}
GAPS = st.one_of(st.integers(1, 1000), st.integers(1, 10 * S), st.just(3600 * S))
KINDS = st.sampled_from(["next", "next", "next", "tie", "old tie", "late", "ancient"])


@st.composite
def streams(draw: st.DrawFn, max_events: int = 50) -> list[Event]:
    """Accepted events in arrival order: in order, ties with the newest and with older events,
    late ones (near the newest, or older than everything held), gaps long and short."""
    values = VALUES[draw(REGIME_NAMES)]
    events: list[Event] = []
    clock = BASE + draw(st.integers(0, S))
    for _ in range(draw(st.integers(1, max_events))):
        kind = draw(KINDS)
        if not events:
            kind = "next"
        if kind == "next":
            ts = clock + draw(GAPS) if events else clock
        elif kind == "tie":
            ts = clock
        elif kind == "old tie":
            ts = events[draw(st.integers(0, len(events) - 1))].ts_us
        elif kind == "late":
            ts = clock - draw(st.integers(0, 5 * S))
        else:
            ts = min(e.ts_us for e in events) - draw(st.integers(0, S))
        repeat: bool = draw(st.booleans())  # a value seen before: duplicates
        if events and repeat:
            value = events[draw(st.integers(0, len(events) - 1))].value
        else:
            value = draw(values)
        events.append(Event(ts, value))
        clock = max(clock, ts)
    return events


def sorted_states(events: list[Event]) -> list[list[Event]]:
    """The accepted events after each one, in ts order; sorted() is stable, so ties keep
    their arrival order."""
    return [sorted(events[: k + 1], key=lambda e: e.ts_us) for k in range(len(events))]


def pandas_rolling(states: list[list[Event]], size: int) -> dict[str, np.ndarray]:
    """``rolling(size, min_periods=1)`` statistics at the newest row of each state.

    One pandas call per statistic: the states are laid end to end, each after ``size`` NaN
    rows, which rolling aggregations skip, so no window reaches into the previous state.
    """
    values: list[float] = []
    last_rows = []
    for state in states:
        values += [math.nan] * size + [e.value for e in state]
        last_rows.append(len(values) - 1)
    window = pd.Series(values).rolling(size, min_periods=1)
    columns = {"count": window.count(), "min": window.min(), "max": window.max()}
    for name, q in QUANTILES:
        columns[name] = window.quantile(q, interpolation="linear")
    return {name: column.to_numpy()[last_rows] for name, column in columns.items()}


def expected_rate(window: list[Event]) -> float | None:
    span = window[-1].ts_us - window[0].ts_us if window else 0
    if len(window) < 2 or span == 0:
        return None
    return float(Fraction((len(window) - 1) * S, span))


def check_against_oracles(
    events: list[Event], summaries: list[Summary], sizes: list[int], stats: tuple[str, ...]
) -> None:
    states = sorted_states(events)
    oracle = {size: pandas_rolling(states, size) for size in sizes}
    for k, (state, summary) in enumerate(zip(states, summaries, strict=True)):
        where = f"after event {k} {events[k]}"
        assert list(summary) == [f"last{n}" for n in sizes], where
        for size in sizes:
            got = summary[f"last{size}"]
            here = f"{where}, window last{size}"
            assert tuple(got) == stats, here
            window = state[-size:]
            order = {name: column[k] for name, column in oracle[size].items()}
            wrong = mismatches(got, order, Exact.of([e.value for e in window]), stats)
            assert not wrong, (here, wrong)
            if "rate" in stats:
                assert got["rate"] == expected_rate(window), here


# The buffer deletes its dead head once it is this long (at least): the default, and one
# that deletes it after nearly every event once the largest window is full.
COMPACTION = st.sampled_from([count_windows._COMPACT_MIN, 1, 3])


def new_windows(sizes: list[int], stats: tuple[str, ...], compact_min: int) -> CountWindows:
    with mock.patch.object(count_windows, "_COMPACT_MIN", compact_min):
        return CountWindows(sizes, stats)


def run(
    sizes: list[int], stats: tuple[str, ...], events: list[Event], compact_min: int
) -> list[Summary]:
    windows = new_windows(sizes, stats, compact_min)
    clock = events[0].ts_us
    summaries = []
    for e in events:
        clock = max(clock, e.ts_us)
        windows.insert(e.ts_us, e.value, clock)
        summaries.append(windows.summary())
    return summaries


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=SIZES, stats=SELECTIONS, events=streams(), compact_min=COMPACTION)
def test_every_event_matches_pandas_and_the_exact_moments(
    sizes: list[int], stats: tuple[str, ...], events: list[Event], compact_min: int
) -> None:
    check_against_oracles(events, run(sizes, stats, events, compact_min), sizes, stats)


@pytest.mark.slow  # the whole suite runs it; `-m fast` leaves it out
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams(max_events=400), compact_min=COMPACTION)
def test_long_streams_match_too(events: list[Event], compact_min: int) -> None:
    sizes = [150, 3]
    summaries = run(sizes, ALL_STATS, events, compact_min)
    check_against_oracles(events, summaries, sizes, ALL_STATS)


@settings(max_examples=150, deadline=None)
@given(sizes=SIZES, stats=SELECTIONS, events=streams(), compact_min=COMPACTION, data=st.data())
def test_state_round_trip_continues_identically(
    sizes: list[int],
    stats: tuple[str, ...],
    events: list[Event],
    compact_min: int,
    data: st.DataObject,
) -> None:
    split = data.draw(st.integers(0, len(events)), label="split")
    original = new_windows(sizes, stats, compact_min)
    restored = new_windows(sizes, stats, compact_min)
    clock = events[0].ts_us
    for k, e in enumerate(events):
        if k == split:
            restored = CountWindows.from_state(sizes, stats, restored.to_state())
            assert repr(restored.summary()) == repr(original.summary())
        clock = max(clock, e.ts_us)
        original.insert(e.ts_us, e.value, clock)
        restored.insert(e.ts_us, e.value, clock)
        # repr tells -0.0 from 0.0: bit-identical, not just equal.
        assert repr(restored.summary()) == repr(original.summary()), (k, split)
        assert restored.to_state() == original.to_state()
    assert len(restored) == len(original) == min(len(events), max(sizes))


def events_from(values: list[float], start: int = BASE, step: int = S) -> list[Event]:
    return [Event(start + i * step, v) for i, v in enumerate(values)]


def exact_summary_check(windows: CountWindows, window: list[float], label: str) -> None:
    """sum, mean, var and stddev are the correctly rounded exact values."""
    got = windows.summary()[label]
    exact = Exact.of(window)
    assert got["sum"] == float(exact.sum)
    assert got["mean"] == (None if exact.mean is None else float(exact.mean))
    if exact.var is None:
        assert got["var"] is None and got["stddev"] is None
    else:
        assert got["var"] == float(exact.var)
        assert got["stddev"] == math.sqrt(float(exact.var))


@pytest.mark.parametrize(
    ("spike", "base", "noise"),
    [(1e16, 1.0, 1e-3), (-1e16, 1.0, 1e-7), (1.1e9, 1e9, 0.25), (1e100, 3.0, 1e-9)],
    ids=["1e16 near 1", "-1e16 near 1", "1.1e9 near 1e9", "1e100 near 3"],
)
def test_regression_a_spike_leaving_leaves_exact_moments(
    spike: float, base: float, noise: float
) -> None:
    # Running float sums keep the spike's rounding residue after it has left: the variance of
    # values near `base` is then garbage. Exact integer sums cancel it exactly.
    windows = CountWindows([10, 30], ALL_STATS)
    values = [spike if i == 20 else base + (i % 7) * noise for i in range(80)]
    for i, e in enumerate(events_from(values)):
        windows.insert(e.ts_us, e.value, e.ts_us)
        exact_summary_check(windows, values[max(0, i - 9) : i + 1], "last10")
        exact_summary_check(windows, values[max(0, i - 29) : i + 1], "last30")
    assert windows.summary()["last30"]["max"] == base + 6 * noise  # the spike has left


def test_regression_cancellation_and_a_late_spike_in_place() -> None:
    windows = CountWindows([3], ALL_STATS)
    for ts, v in [(10, 1e16), (20, 1.0), (30, -1e16)]:
        windows.insert(ts, v, 30)
    exact_summary_check(windows, [1e16, 1.0, -1e16], "last3")
    assert windows.summary()["last3"]["sum"] == 1.0
    # A late spike between the first two pushes the oldest (1e16) out, in place.
    windows.insert(15, 3e16, 30)
    exact_summary_check(windows, [3e16, 1.0, -1e16], "last3")
    assert windows.summary()["last3"]["sum"] == 2e16  # 2e16 + 1, correctly rounded (ulp 4)


def test_a_tiny_value_makes_the_scale_fine_only_while_it_is_held() -> None:
    windows = CountWindows([4], ("sum", "mean", "var", "stddev"))
    values = [1.5, 2.25, 5e-324, 3.0, 4.0, 0.5, 0.75, 8.0]
    for i, e in enumerate(events_from(values)):
        windows.insert(e.ts_us, e.value, e.ts_us)
        exact_summary_check(windows, values[max(0, i - 3) : i + 1], "last4")
        # The integer scale is what the values held need (the subnormal: 2**-1074).
        assert windows._shift == [1, 2, 1074, 1074, 1074, 1074, 2, 2][i]


def test_late_events_in_place() -> None:
    windows = CountWindows([3, 5], ALL_STATS)
    for ts in (10, 20, 30, 40):
        windows.insert(ts, float(ts), 40)
    assert windows.summary()["last3"]["count"] == 3
    # Older than the three last3 holds: last3 is unchanged, last5 (not full) takes it.
    before = windows.summary()["last3"]
    windows.insert(5, 5.0, 40)
    after = windows.summary()
    assert after["last3"] == before
    assert after["last5"]["min"] == 5.0 and after["last5"]["count"] == 5
    # A tie with a held ts goes after it: last3 then holds 30, 30 (late) and 40.
    windows.insert(30, 31.0, 40)
    after = windows.summary()
    assert (after["last3"]["min"], after["last3"]["max"], after["last3"]["sum"]) == (30, 40, 101)
    assert after["last3"]["rate"] == 2 * S / 10
    # Older than all five held, with last5 full: nothing changes, and the event is not kept.
    state = windows.to_state()
    windows.insert(1, -1e9, 40)
    assert windows.to_state() == state
    assert len(windows) == 5


def test_rate_is_null_below_two_events_and_without_time_between_them() -> None:
    windows = CountWindows([3], ("count", "rate"))
    windows.insert(BASE, 1.0, BASE)
    assert windows.summary()["last3"] == {"count": 1, "rate": None}
    windows.insert(BASE, 2.0, BASE)
    assert windows.summary()["last3"] == {"count": 2, "rate": None}
    windows.insert(BASE + 250_000, 2.0, BASE + 250_000)
    assert windows.summary()["last3"] == {"count": 3, "rate": 8.0}  # 2 events in 0.25 s


def test_empty_windows_and_ticks() -> None:
    windows = CountWindows([2, 1], ALL_STATS)
    assert windows.labels == ("last2", "last1")
    assert windows.stats == ALL_STATS
    assert windows.is_empty()
    assert windows.summary() == {"last2": EMPTY, "last1": EMPTY}
    assert windows.advance(BASE) is False
    windows.insert(BASE, 4.0, BASE)
    assert not windows.is_empty()
    before = windows.to_state()
    # Ticks never change count windows, however far they move the clock.
    assert windows.advance(BASE + 3600 * S) is False
    assert windows.to_state() == before
    assert windows.summary()["last1"]["mean"] == 4.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_refused_and_changes_nothing(bad: float) -> None:
    windows = CountWindows([2], ALL_STATS)
    windows.insert(BASE, 1.0, BASE)
    state, summary = windows.to_state(), windows.summary()
    with pytest.raises(ValueError, match="finite"):
        windows.insert(BASE + 1, bad, BASE + 1)
    assert (windows.to_state(), windows.summary()) == (state, summary)


def test_stats_are_reported_in_all_stats_order() -> None:
    windows = CountWindows([5], ["rate", "p99", "count", "count"])
    assert windows.stats == ("count", "p99", "rate")
    windows.insert(BASE, 1.0, BASE)
    assert list(windows.summary()["last5"]) == ["count", "p99", "rate"]


@pytest.mark.parametrize(
    ("sizes", "stats", "message"),
    [
        ([], ALL_STATS, "at least one size"),
        ("100", ALL_STATS, "at least one size"),
        ([0], ALL_STATS, "positive integers"),
        ([-5], ALL_STATS, "positive integers"),
        ([True], ALL_STATS, "positive integers"),
        ([10.0], ALL_STATS, "positive integers"),
        ([MAX_SIZE + 1], ALL_STATS, "above the limit"),
        ([10, 5, 10], ALL_STATS, "distinct"),
        ([10], [], "at least one statistic"),
        ([10], "count", "the string"),
        ([10], ["count", "median"], "unknown statistic 'median'"),
    ],
)
def test_invalid_configurations_are_refused(sizes: object, stats: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CountWindows(sizes, stats)  # type: ignore[arg-type]


def test_the_largest_size_is_accepted() -> None:
    assert CountWindows([MAX_SIZE, 1], ["count"]).labels == (f"last{MAX_SIZE}", "last1")


def test_state_is_compact_and_damage_is_refused() -> None:
    windows = CountWindows([4], ALL_STATS)
    for e in events_from([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]):
        windows.insert(e.ts_us, e.value, e.ts_us)
    state = windows.to_state()
    assert len(state) == 5 + 16 * 4  # a header, then 8 + 8 bytes per event held
    assert CountWindows.from_state([4], ALL_STATS, state).summary() == windows.summary()
    with pytest.raises(ValueError, match="more than 2"):
        CountWindows.from_state([2], ALL_STATS, state)
    with pytest.raises(ValueError, match="bytes for 4 events"):
        CountWindows.from_state([4], ALL_STATS, state[:-1])
    with pytest.raises(ValueError, match="header"):
        CountWindows.from_state([4], ALL_STATS, b"\x01")
    with pytest.raises(ValueError, match="version"):
        CountWindows.from_state([4], ALL_STATS, b"\x07" + state[1:])
    swapped = state[:5] + state[13:21] + state[5:13] + state[21:]
    with pytest.raises(ValueError, match="out of order"):
        CountWindows.from_state([4], ALL_STATS, swapped)
    nan = state[:-8] + struct.pack("<d", math.nan)
    with pytest.raises(ValueError, match="not finite"):
        CountWindows.from_state([4], ALL_STATS, nan)


def test_a_restore_holds_the_zeros_signs_as_the_original_does() -> None:
    """0.0 and -0.0 compare equal: a late -0.0 went after the 0.0 in the original's ordered
    window but before it in the restored one (rebuilt in time order), so their p50 and min
    differed in sign (found by the round-trip search above)."""
    stats = ("min", "max", "p50")
    original = CountWindows([2], stats)
    original.insert(1, 0.0, 1)
    original.insert(0, -0.0, 1)  # late: before the 0.0 in time
    restored = CountWindows.from_state([2], stats, original.to_state())
    assert repr(restored.summary()) == repr(original.summary())
