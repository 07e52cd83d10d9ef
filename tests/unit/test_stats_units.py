"""TopicWindows on hand-built streams: streams where running sums go wrong, idle ticks, edges."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedList

from pushsvc.stats import QUANTILES, SCALAR_STATS, STAT_KEYS, TopicWindows, WindowSpec
from pushsvc.stats.order import order_stats_internal, order_stats_public

S = 1_000_000


def _windows(
    widths: Sequence[int], labels: Sequence[str], *, stats: Sequence[str] = STAT_KEYS
) -> TopicWindows:
    """What the aggregator uses: the generated fast paths (checked against the reference
    in test_stats_oracle.py)."""
    return WindowSpec(widths, labels, stats).new()  # µs


BASE = 1_763_700_000 * S
EMPTY = {"count": 0, "sum": 0.0} | {key: None for key in STAT_KEYS[2:]}


def exact_var(values: list[float]) -> Fraction:
    exact = [Fraction(v) for v in values]
    mean = sum(exact, Fraction(0)) / len(exact)
    return sum(((v - mean) ** 2 for v in exact), Fraction(0)) / (len(exact) - 1)


def window_values(events: list[tuple[int, float]], clock: int, width: int) -> list[float]:
    return [v for ts, v in events if clock - width < ts <= clock]


def test_regression_spike_1e8_leaving_values_near_1() -> None:
    # Plain Welford with removals keeps the 1e8 spike's rounding residue in its
    # running sums; once the spike leaves a window of values near 1 the variance is garbage.
    tw = _windows([10 * S], ["10s"])
    events = []
    ts = BASE
    for i in range(400):
        value = 1e8 if i == 50 else 1.0 + (i % 7) * 1e-3 + (i % 3) * 1e-6
        tw.insert(ts, value)
        events.append((ts, value))
        window = window_values(events, ts, 10 * S)
        var = tw.summary()["10s"]["var"]
        if len(window) > 1:
            exact = exact_var(window)
            assert abs(Fraction(var) - exact) <= Fraction(1e-9) * exact, (i, var, float(exact))
        ts += 100_000
    # The spike is long gone and the window holds 100 values near 1.
    assert tw.summary()["10s"]["count"] == 100
    assert tw.summary()["10s"]["max"] < 1.01


def test_regression_1_1e9_spike_and_small_ints_leave_values_near_1e9() -> None:
    # Small integers, then a 1.1e9 spike, then values near 1e9; once the spike
    # and the small integers have left the 10 s window, pandas 3 reported a variance
    # orders of magnitude off. The tail is built so the exact answer is known: every 10 s
    # window of it holds 625 values, 624 of 1e9 and one of 1e9 + 2.25, so
    # var = 2.25**2 * (1/625) * (624/625) * 625/624 = 2.25**2 / 625 = 0.0081 exactly.
    tw = _windows([10 * S], ["10s"])
    events: list[tuple[int, float]] = []

    def insert(ts: int, value: float) -> None:
        tw.insert(ts, value)
        events.append((ts, value))

    ts = BASE
    for i in range(50):
        insert(ts, float(i % 7))
        ts += S
    insert(ts, 1.1e9)
    ts += 1
    for k in range(3000):
        insert(ts, 1e9 + 2.25 if k % 625 == 300 else 1e9)
        if k % 10 == 0 and k >= 625:  # spot checks once only 1e9-ish values are left
            window = window_values(events, ts, 10 * S)
            assert tw.summary()["10s"]["var"] == float(exact_var(window))
        ts += 16_000

    stats = tw.summary()["10s"]
    window = window_values(events, tw.clock_us, 10 * S)
    assert len(window) == stats["count"] == 625
    assert exact_var(window) == Fraction(81, 10_000)
    assert stats["var"] == 0.0081
    assert stats["stddev"] == math.sqrt(0.0081)
    assert stats["mean"] == float(Fraction(624 * 10**9 + 10**9 + Fraction(9, 4), 625))

    # Check that pandas really goes wrong here, against the installed pandas rather than
    # quoting a number.
    series = pd.Series(
        [v for _, v in events], index=pd.to_datetime([t for t, _ in events], unit="us")
    )
    pandas_var = series.rolling("10s").var().iloc[-1]
    if not math.isclose(pandas_var, 0.0081, rel_tol=1e-9):
        # pandas is fooled here (20.5 with pandas 3.1.1 when this was written); we are exact.
        assert abs(stats["var"] - 0.0081) < abs(pandas_var - 0.0081)


def test_identical_values_have_variance_exactly_zero() -> None:
    tw = _windows([2 * S, 60 * S], ["2s", "1m"])
    for i, value in enumerate([5.0, 1e9 + 0.1, 1e9 + 0.1, 1e9 + 0.1, 1e9 + 0.1]):
        tw.insert(BASE + i * S, value)
    short, long_ = tw.summary()["2s"], tw.summary()["1m"]
    assert (short["count"], short["var"], short["stddev"]) == (2, 0.0, 0.0)
    assert short["mean"] == short["min"] == short["max"] == short["p99"] == 1e9 + 0.1
    assert long_["var"] > 0  # the 5.0 is still in the minute window

    tw = _windows([S], ["1s"])
    for _ in range(1000):
        tw.insert(BASE, 0.1)
    stats = tw.summary()["1s"]
    assert (stats["count"], stats["var"], stats["stddev"]) == (1000, 0.0, 0.0)
    assert stats["sum"] == float(1000 * Fraction(0.1))  # the exact sum, correctly rounded


def test_one_value_has_mean_and_quantiles_but_no_variance() -> None:
    tw = _windows([S], ["1s"])
    tw.insert(BASE, -2.5)
    assert tw.summary()["1s"] == {
        "count": 1, "sum": -2.5, "mean": -2.5, "min": -2.5, "max": -2.5,
        "var": None, "stddev": None, "p50": -2.5, "p90": -2.5, "p99": -2.5,
    }  # fmt: skip


def test_summary_keys_and_window_order() -> None:
    tw = _windows([60 * S, 10 * S, 300 * S], ["1m", "10s", "5m"])
    assert list(tw.summary()) == ["1m", "10s", "5m"]
    assert all(stats == EMPTY for stats in tw.summary().values())
    tw.insert(BASE, 1.0)
    assert all(tuple(stats) == STAT_KEYS for stats in tw.summary().values())
    assert STAT_KEYS[-len(QUANTILES) :] == tuple(name for name, _ in QUANTILES)


def test_window_is_open_at_t_minus_w_and_closed_at_t() -> None:
    tw = _windows([2 * S], ["2s"])
    tw.insert(BASE, 1.0)
    tw.insert(BASE + 1, 2.0)
    tw.insert(BASE + 2 * S, 3.0)  # T - w == BASE: the first event is out, BASE + 1 is in
    assert tw.summary()["2s"]["count"] == 2
    assert tw.summary()["2s"]["min"] == 2.0
    tw.insert(BASE + 2 * S, 4.0)  # ties at T all count
    assert tw.summary()["2s"]["count"] == 3
    tw.insert(BASE + 2 * S + 1, 5.0)  # now BASE + 1 == T - w
    assert tw.summary()["2s"]["count"] == 3
    assert tw.summary()["2s"]["sum"] == 12.0
    assert len(tw) == 3


def test_late_event_goes_in_place_and_the_clock_does_not_move_back() -> None:
    tw = _windows([2 * S, 10 * S], ["2s", "10s"])
    tw.insert(BASE, 1.0)
    tw.insert(BASE + 5 * S, 2.0)
    tw.insert(BASE + 4 * S, 10.0)  # late, inside both windows
    assert tw.clock_us == BASE + 5 * S
    assert tw.summary()["2s"]["count"] == 2
    assert tw.summary()["10s"]["count"] == 3
    tw.insert(BASE + 3 * S, 20.0)  # late, exactly T - 2s: in 10s only
    assert tw.summary()["2s"]["sum"] == 12.0
    assert tw.summary()["10s"]["sum"] == 33.0
    # Sliding on puts the late events' order to use: at T = 6.5 s the 2 s window holds (4.5, 6.5].
    tw.insert(BASE + 6 * S + S // 2, 0.5)
    assert tw.summary()["2s"]["count"] == 2
    assert tw.summary()["2s"]["max"] == 2.0


def test_late_event_older_than_every_window_changes_nothing() -> None:
    tw = _windows([S, 3 * S], ["1s", "3s"])
    tw.insert(BASE + 10 * S, 1.0)
    tw.insert(BASE + 11 * S, 2.0)
    before = tw.summary()
    tw.insert(BASE + 8 * S, 99.0)  # T - 3 s exactly: outside (T - 3s, T]
    tw.insert(BASE + 7 * S, 99.0)
    assert tw.summary() == before
    assert len(tw) == 2
    assert tw.clock_us == BASE + 11 * S


def test_advance_slides_windows_and_reports_changes() -> None:
    tw = _windows([2 * S, 4 * S], ["2s", "4s"])
    assert tw.advance(BASE) is False  # nothing accepted yet: no clock to move
    assert tw.clock_us is None
    for i, value in enumerate([1.0, 2.0, 3.0]):
        tw.insert(BASE + i * S, value)  # T = 2 s; 2s window holds (0, 2]
    assert tw.summary()["2s"]["count"] == 2
    assert tw.advance(BASE + 2 * S) is False  # not later than T
    assert tw.advance(BASE + 2 * S + S // 2) is False  # (0.5, 2.5]: same events
    assert tw.clock_us == BASE + 2 * S + S // 2
    assert tw.advance(BASE + 3 * S) is True  # (1, 3]: the 1 s event left
    assert tw.summary()["2s"]["count"] == 1
    assert tw.summary()["2s"]["var"] is None
    assert tw.summary()["4s"]["count"] == 3
    assert tw.advance(BASE + 4 * S) is True  # only the 4s window changes: (0, 4]
    assert tw.summary()["4s"]["count"] == 2
    assert tw.advance(BASE + 20 * S) is True
    assert tw.summary() == {"2s": EMPTY, "4s": EMPTY}
    assert len(tw) == 0
    assert tw.advance(BASE + 21 * S) is False  # nothing left to leave
    # Events after the windows emptied start afresh, with exact results.
    tw.insert(BASE + 21 * S, 3.0)
    tw.insert(BASE + 21 * S, 5.0)
    stats = tw.summary()["2s"]
    assert [stats[key] for key in ("count", "sum", "mean", "var")] == [2, 8.0, 4.0, 2.0]
    tw.insert(BASE + 21 * S, 0.1)
    assert tw.summary()["2s"]["var"] == float(exact_var([3.0, 5.0, 0.1]))
    assert tw.advance(BASE + 22 * S) is False  # (20, 22]: still all three


def test_a_late_event_before_a_tick_boundary_leaves_with_the_tick() -> None:
    tw = _windows([2 * S], ["2s"])
    tw.insert(BASE + 5 * S, 1.0)
    tw.insert(BASE + 4 * S, 2.0)  # late
    assert tw.advance(BASE + 6 * S) is True  # (4, 6]: the late event leaves
    assert tw.summary()["2s"]["sum"] == 1.0


def test_tiny_values_passing_through_keep_results_exact_and_integers_small() -> None:
    # A 1e-300 forces the exact integer scale down to ~2**-1049; once it has left and the
    # buffer compacts, the scale must come back, or every later event pays for
    # 2000-bit integers. The scale is internal, so this reads it on purpose.
    tw = _windows([S, 3 * S], ["1s", "3s"])
    events = []
    for i in range(12_000):
        value = 1e-300 if i == 100 else (i % 13) * 0.25
        ts = BASE + i * 1000
        tw.insert(ts, value)
        events.append((ts, value))
    assert tw._shift <= 2
    for label, width in (("1s", S), ("3s", 3 * S)):
        window = window_values(events, tw.clock_us, width)
        stats = tw.summary()[label]
        assert stats["count"] == len(window)
        assert stats["sum"] == math.fsum(window)
        assert stats["var"] == float(exact_var(window))


def test_long_stream_with_late_events_matches_pandas_and_exact_sums() -> None:
    # Thousands of events, so the buffer compacts several times under default settings.
    widths, labels = (S, 3 * S), ("1s", "3s")
    tw = _windows(widths, labels)
    events: list[tuple[int, float]] = []
    clock = BASE
    for i in range(15_000):
        ts = clock + 1000 if i % 17 else clock - (i * 7919) % (4 * S)  # late within 4 s
        value = ((i * 2654435761) % 1000) / 8 - 60.0
        tw.insert(ts, value)
        events.append((ts, value))
        clock = max(clock, ts)
        if i % 1500 == 1499:
            ordered = sorted(events, key=lambda e: e[0])
            series = pd.Series(
                [v for _, v in ordered], index=pd.to_datetime([t for t, _ in ordered], unit="us")
            )
            for width, label in zip(widths, labels, strict=True):
                stats = tw.summary()[label]
                rolling = series.rolling(pd.Timedelta(width, unit="us"))
                assert stats["count"] == rolling.count().iloc[-1]
                assert stats["min"] == rolling.min().iloc[-1]
                assert stats["max"] == rolling.max().iloc[-1]
                for name, q in QUANTILES:
                    assert stats[name] == rolling.quantile(q, interpolation="linear").iloc[-1]
                window = window_values(events, clock, width)
                assert stats["sum"] == math.fsum(window)
                assert stats["var"] == float(exact_var(window))
    assert len(tw) == tw.summary()["3s"]["count"]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(-50, 50).map(float), min_size=1, max_size=4000),
    removals=st.integers(0, 2000),
)
def test_order_stats_fast_path_equals_public_api(values: list[float], removals: int) -> None:
    # Built by add/remove like the windows do, so sublists split and shrink; up to 4000
    # values spans several 1000-value sublists and quantile pairs straddling them.
    sl = SortedList()
    for value in values:
        sl.add(value)
    for value in values[: min(removals, len(values) - 1)]:
        sl.remove(value)
    assert order_stats_internal(sl) == order_stats_public(sl)
    assert order_stats_public(sl)[:2] == [min(sl), max(sl)]


def test_order_stats_across_a_sublist_boundary() -> None:
    sl = SortedList(map(float, range(2000)))  # two sublists of 1000; p50 pairs 999 and 1000
    expected = pd.Series(list(sl)).quantile([0.5, 0.9, 0.99], interpolation="linear").tolist()
    assert order_stats_internal(sl) == order_stats_public(sl) == [0.0, 1999.0, *expected]


@pytest.mark.parametrize(
    ("widths", "labels"),
    [([], []), ([S], ["a", "b"]), ([S, S], ["a", "a"]), ([0], ["a"]), ([1.5], ["a"])],
)
def test_bad_window_configuration_is_rejected(widths: list, labels: list) -> None:
    with pytest.raises(ValueError):
        _windows(widths, labels)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value_is_rejected_and_changes_nothing(value: float) -> None:
    tw = _windows([S], ["1s"])
    tw.insert(BASE, 1.0)
    before = tw.summary()
    with pytest.raises(ValueError, match="finite"):
        tw.insert(BASE + 1, value)
    assert tw.summary() == before
    assert tw.clock_us == BASE


def test_results_beyond_the_double_range_are_infinite_not_errors() -> None:
    tw = _windows([S], ["1s"])
    tw.insert(BASE, 1.5e308)
    tw.insert(BASE, 1.5e308)
    stats = tw.summary()["1s"]
    assert (stats["sum"], stats["mean"], stats["var"]) == (math.inf, 1.5e308, 0.0)
    tw.insert(BASE, -1.5e308)
    stats = tw.summary()["1s"]
    assert stats["sum"] == 1.5e308
    assert stats["var"] == stats["stddev"] == math.inf
    assert not any(isinstance(v, float) and math.isnan(v) for v in stats.values())


# -- statistic selection, min/max without a sorted list, batches, bounded pauses ----------


def test_only_the_selected_statistics_are_reported_in_stat_keys_order() -> None:
    tw = _windows([S, 10 * S], ["1s", "10s"], stats=["p90", "count", "mean"])
    assert tw.stats == ("count", "mean", "p90")
    assert tw.summary() == {label: {"count": 0, "mean": None, "p90": None} for label in tw.labels}
    for i, value in enumerate([4.0, 1.0, 3.0, 2.0]):
        tw.insert(BASE + i * S // 2, value)
    # 1s window: (0.5 s, 1.5 s] holds 3.0 and 2.0.
    assert tw.summary() == {
        "1s": {"count": 2, "mean": 2.5, "p90": 2.9},
        "10s": {"count": 4, "mean": 2.5, "p90": 3.7},
    }
    assert list(_windows([S], ["1s"], stats=SCALAR_STATS).summary()["1s"]) == list(STAT_KEYS[:7])


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        (["mean", "median"], "'median'"),
        (["p95"], "'p95'"),
        ([], "at least one"),
        ("mean", "string"),
    ],
)
def test_unknown_or_empty_statistic_selection_is_rejected(stats: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _windows([S], ["1s"], stats=stats)


def test_scalar_selection_keeps_no_sorted_list() -> None:
    # The point of the selection: O(1) min/max, not a SortedList per window (white-box).
    scalar = _windows([S, 2 * S], ["1s", "2s"], stats=SCALAR_STATS)
    assert scalar._sorted == () and scalar._ext is not None
    full = _windows([S, 2 * S], ["1s", "2s"])
    assert len(full._sorted) == 2 and full._ext is None


def test_min_max_without_sorted_list_handle_late_events_in_place() -> None:
    # Windows 2 s and 10 s. Each late event lands in the middle of the buffer; some are a new
    # extreme only of the wide window, some of both, some of neither.
    tw = _windows([2 * S, 10 * S], ["2s", "10s"], stats=("min", "max"))
    events: list[tuple[int, float]] = []

    def insert(ts: int, value: float) -> dict[str, dict[str, float | int | None]]:
        tw.insert(ts, value)
        events.append((ts, value))
        return tw.summary()

    insert(BASE, 5.0)
    insert(BASE + 4 * S, 3.0)
    insert(BASE + 5 * S, 4.0)
    # Late and outside the 2 s window (T - 2 s = 3 s): the wide window's max only.
    assert insert(BASE + 2 * S, 9.0) == {
        "2s": {"min": 3.0, "max": 4.0},
        "10s": {"min": 3.0, "max": 9.0},
    }
    # Late inside both, dominating the later 4.0 for max but not the later 3.0 for min.
    assert insert(BASE + 4 * S + 1, 6.0) == {
        "2s": {"min": 3.0, "max": 6.0},
        "10s": {"min": 3.0, "max": 9.0},
    }
    # Late, dominated by a later value in both directions: nothing changes.
    assert insert(BASE + 4 * S + 2, 3.5) == {
        "2s": {"min": 3.0, "max": 6.0},
        "10s": {"min": 3.0, "max": 9.0},
    }
    # A tie with a later value, then time moves on so that only later events are left.
    insert(BASE + 4 * S + 3, 4.0)
    assert insert(BASE + 6 * S + 2, 1.0) == {
        "2s": {"min": 1.0, "max": 4.0},  # (4 s + 2 µs, 6 s + 2 µs]: 4.0 (late), 4.0, 1.0
        "10s": {"min": 1.0, "max": 9.0},
    }
    for label, width in (("2s", 2 * S), ("10s", 10 * S)):
        window = window_values(events, tw.clock_us, width)
        assert tw.summary()[label] == {"min": min(window), "max": max(window)}


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 3), st.integers(-4, 4).map(float), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
def test_min_max_equal_brute_force_after_appends_late_events_and_ticks(
    ops: list[tuple[int, float, bool]],
) -> None:
    # Few distinct values and timestamps: ties everywhere, which is where monotonic lists slip.
    widths = (2, 5, 9)
    tw = _windows(widths, ["a", "b", "c"], stats=("count", "min", "max"))
    events: list[tuple[int, float]] = []
    clock = BASE
    for step, value, late in ops:
        if late and events:
            ts = clock - step  # up to 3 µs late, inside or outside the narrow windows
            tw.insert(ts, value)
            if ts > clock - max(widths):
                events.append((ts, value))
        elif step == 3 and events:
            clock += 4
            tw.advance(clock)
            continue
        else:
            clock += step
            tw.insert(clock, value)
            events.append((clock, value))
        for label, width in zip("abc", widths, strict=True):
            window = window_values(events, clock, width)
            got = tw.summary()[label]
            if window:
                assert got == {"count": len(window), "min": min(window), "max": max(window)}
            else:
                assert got == {"count": 0, "min": None, "max": None}


def test_insert_many_returns_the_summary_after_each_event() -> None:
    tw = _windows([S], ["1s"], stats=("count", "sum", "max"))
    out = tw.insert_many([(BASE, 1.0), (BASE + S // 2, 2.0), (BASE + S, 4.0), (BASE + 1, 8.0)])
    assert out == [
        {"1s": {"count": 1, "sum": 1.0, "max": 1.0}},
        {"1s": {"count": 2, "sum": 3.0, "max": 2.0}},
        {"1s": {"count": 2, "sum": 6.0, "max": 4.0}},  # the event at BASE left
        {"1s": {"count": 3, "sum": 14.0, "max": 8.0}},  # late, inside the window
    ]
    assert tw.insert_many([]) == []


def test_insert_many_stops_at_a_bad_value_after_applying_the_ones_before() -> None:
    tw = _windows([S], ["1s"], stats=("count", "sum"))
    with pytest.raises(ValueError, match="finite"):
        tw.insert_many([(BASE, 1.0), (BASE + 1, 2.0), (BASE + 2, math.nan), (BASE + 3, 4.0)])
    assert tw.summary() == {"1s": {"count": 2, "sum": 3.0}}
    assert tw.clock_us == BASE + 1
    assert tw.insert_many([(BASE + 3, 4.0)]) == [{"1s": {"count": 3, "sum": 7.0}}]


@pytest.mark.parametrize("stats", [STAT_KEYS, SCALAR_STATS])
def test_values_beyond_the_fast_range_are_exact_and_the_topic_recovers(stats) -> None:
    # 1e200 squared is beyond the double range and 1e-300 needs a ~2**-1049 scale: both go
    # through the exact general path; once they have left, results are exact again.
    tw = _windows([S, 2 * S], ["1s", "2s"], stats=stats)
    events: list[tuple[int, float]] = []
    for i in range(40):
        value = {10: 1e200, 11: -1e200, 12: 1e-300}.get(i, 0.1 * (i % 5))
        ts = BASE + i * (S // 10)
        tw.insert(ts, value)
        events.append((ts, value))
        for label, width in (("1s", S), ("2s", 2 * S)):
            window = window_values(events, ts, width)
            got = tw.summary()[label]
            assert got["sum"] == float(sum(map(Fraction, window), Fraction(0)))
            if len(window) > 1 and max(map(abs, window)) < 1e150:
                assert got["var"] == float(exact_var(window))
            elif len(window) > 1:
                assert got["var"] == math.inf
    assert tw._shift <= 60  # back to the scale of multiples of 0.1


def test_buffer_compaction_frees_a_bounded_slice_at_a_time(monkeypatch) -> None:
    # Deleting the buffer's dead head frees every dead entry at once (~25 ns each), so the
    # slice must stay small against the buffer, never "half of it" (milliseconds at 100k).
    from pushsvc.stats import windows as windows_module

    monkeypatch.setattr(windows_module, "_COMPACT_MIN", 64)
    tw = _windows([S, 3 * S], ["1s", "3s"], stats=SCALAR_STATS)
    slices: list[tuple[int, int]] = []
    compact = type(tw)._compact

    def recording_compact(self) -> None:
        slices.append((len(self._ts) - len(self), len(self._ts)))  # (dead head, buffer)
        compact(self)

    monkeypatch.setattr(type(tw), "_compact", recording_compact)
    events = [(BASE + i * 100, float(i % 7)) for i in range(100_000)]  # 30k events held
    for k in range(0, len(events), 1000):
        tw.insert_many(events[k : k + 1000])
    assert len(slices) > 10
    assert all(head <= max(64, (length - head) // 8) for head, length in slices), slices[:5]
    stats = tw.summary()["3s"]
    assert stats["count"] == 30_000 and stats["sum"] == math.fsum(v for _, v in events[-30_000:])
