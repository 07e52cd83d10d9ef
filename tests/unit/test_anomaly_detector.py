"""The anomaly detector's promises, on series Hypothesis generates: a score depends only
on the points before it, a checkpoint restores the detector exactly, the state stays
bounded, and every score lies in [0, 1]."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.series.anomaly import DEFAULT_THRESHOLD, Detector, Params

# Values as metrics carry them: wide ranges, plateaus (repeated values), spikes.
values = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    st.sampled_from([0.0, 1.0, 100.0]),
)
series = st.lists(values, min_size=1, max_size=400)
params = st.builds(
    Params,
    learn=st.integers(min_value=2, max_value=60),
    short=st.integers(min_value=1, max_value=64),
    rest=st.integers(min_value=0, max_value=200),
    threshold=st.floats(min_value=0.05, max_value=1.0),
    direct=st.booleans(),
    damp=st.floats(min_value=0.0, max_value=1.0),
    context_weight=st.floats(min_value=0.0, max_value=1.0),
    levels=st.integers(min_value=2, max_value=255),
    orders=st.integers(min_value=0, max_value=16),
    table_bits=st.integers(min_value=8, max_value=16),
    regrid_margin=st.floats(min_value=0.0, max_value=2.0),
    wake=st.floats(min_value=0.0, max_value=2.0),
    wake_after=st.integers(min_value=0, max_value=50),
    wake_breakout=st.booleans(),
    mature=st.integers(min_value=0, max_value=400),
    calibrate=st.floats(min_value=0.0, max_value=5.0),
    calibrate_horizon=st.integers(min_value=1, max_value=5000),
    edge_bands=st.booleans(),
    block=st.integers(min_value=0, max_value=40),
    block_levels=st.integers(min_value=2, max_value=255),
    block_mature=st.integers(min_value=0, max_value=400),
)


def _scores(p: Params, points: list[float]) -> list[float]:
    detector = Detector(p)
    return [detector.score(v) for v in points]


@settings(max_examples=150, deadline=None)
@given(params, series, series)
def test_a_score_depends_only_on_the_points_before_it(
    p: Params, prefix: list[float], tail: list[float]
) -> None:
    # The same history, then a different future: the history's scores are unchanged.
    alone = _scores(p, prefix)
    followed = _scores(p, prefix + tail)
    assert followed[: len(prefix)] == alone


@settings(max_examples=150, deadline=None)
@given(params, series, series)
def test_a_restored_checkpoint_scores_the_rest_the_same(
    p: Params, before: list[float], after: list[float]
) -> None:
    uninterrupted = Detector(p)
    for v in before:
        uninterrupted.score(v)
    restored = Detector.from_bytes(uninterrupted.to_bytes())
    assert restored == uninterrupted
    assert [restored.score(v) for v in after] == [uninterrupted.score(v) for v in after]


@settings(max_examples=100, deadline=None)
@given(params, st.lists(values, min_size=1, max_size=2000))
def test_the_state_stays_bounded_and_scores_lie_in_the_unit_interval(
    p: Params, points: list[float]
) -> None:
    detector = Detector(p)
    for v in points:
        s = detector.score(v)
        assert 0.0 <= s <= 1.0 and not math.isnan(s)
        assert len(detector.to_bytes()) <= 16 * 1024
    assert len(detector.ring) <= p.short
    assert len(detector.bands) <= p.orders
    assert len(detector.table) == 1 << (p.table_bits - 3)
    assert detector.age <= p.mature
    assert all(0 <= band < 3 * p.levels for band in detector.bands)
    for blocks in (detector.on_grid, detector.own_grid):
        assert len(blocks.bands) <= p.orders and blocks.count < max(p.block, 1)
        assert len(blocks.table) == (1 << (p.table_bits - 5) if p.block else 0)


def test_the_largest_state_the_parameters_allow_fits_in_16_kb() -> None:
    for edge_bands in (False, True):
        p = Params(
            learn=2, short=64, orders=16, table_bits=16, levels=255, edge_bands=edge_bands, block=2
        )
        detector = Detector(p)
        for i in range(5000):
            detector.score(float(i * 7919 % 1000))
        assert len(detector.on_grid.bands) == len(detector.own_grid.bands) == 16
        # 8,950 bytes as in format 4, then 29 of header, 80 of floats, 64 of bands and
        # 4,096 of tables for the two block memories.
        assert len(detector.to_bytes()) <= 13219


def test_the_default_state_is_a_few_kilobytes() -> None:
    detector = Detector()
    for i in range(1000):
        detector.score(float(i % 37))
    # 2,048 bytes of sequence table, 168 of floats (16 of them the calibration's, since
    # format 4), 80 of ring, 46 of header (8 of them the maturing novelty's two counters,
    # since format 3; 10 the wake's conditions and the calibration's horizon and edge bands,
    # since format 4), 8 of bands (two bytes each since format 4); since format 5, the two
    # block memories: 1,024 bytes of tables, 80 of floats, 29 of header, 16 of bands.
    assert len(detector.to_bytes()) <= 3499


def test_a_spike_after_a_steady_history_is_flagged_and_the_history_is_not() -> None:
    p = Params(learn=50)
    steady = [10.0 + (i % 7) * 0.1 for i in range(300)]
    scores = _scores(p, [*steady, 500.0])
    assert max(scores[:-1]) < p.threshold <= scores[-1]


def test_nothing_is_flagged_while_learning() -> None:
    p = Params(learn=100)
    scores = _scores(p, [float(i % 3) for i in range(99)] + [1e6])
    assert max(scores) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(values, min_size=1, max_size=300))
def test_a_checkpoint_taken_just_after_a_flag_keeps_the_quiet_that_follows(
    after: list[float],
) -> None:
    p = Params(learn=50, rest=100)
    detector = Detector(p)
    steady = [10.0 + (i % 7) * 0.1 for i in range(300)]
    for v in steady:
        detector.score(v)
    assert detector.score(500.0) >= p.threshold
    restored = Detector.from_bytes(detector.to_bytes())
    assert [restored.score(v) for v in after] == [detector.score(v) for v in after]


def test_with_the_context_layer_a_repeating_shape_is_learnt_and_a_new_transition_flagged() -> None:
    # A square wave (two levels, a sharp jump each half period) has large first
    # differences at every jump; only its context memory tells those are normal.
    # A value in the middle of the range where the wave never goes is new.
    p = Params(learn=100, rest=0, context_weight=0.65)
    wave = [0.0 if (i // 20) % 2 else 10.0 for i in range(1000)]
    scores = _scores(p, [*wave, 5.0])
    assert max(scores[400:-1]) < p.threshold <= scores[-1]


def test_a_state_of_another_version_is_refused() -> None:
    data = bytearray(Detector().to_bytes())
    data[0] = 1
    try:
        Detector.from_bytes(bytes(data))
    except ValueError as e:
        assert "version" in str(e)
    else:
        raise AssertionError("a version-1 state was accepted")


def test_a_full_score_wakes_a_resting_detector_when_asked_and_only_then() -> None:
    steady = [10.0 + (i % 7) * 0.1 for i in range(300)]
    points = [*steady, 500.0, 10.0, 10.1, -5000.0]
    plain = {"learn": 50, "rest": 100, "wake_after": 0, "wake_breakout": False, "calibrate": 0.0}
    asleep = _scores(Params(**plain, wake=2.0), points)
    awake = _scores(Params(**plain, wake=1.0), points)
    assert asleep[-4] >= 0.5 and asleep[-1] == 0.0  # the second breakout falls in the rest
    assert awake[-4] >= 0.5 and awake[-1] == 1.0


def test_by_default_only_a_breakout_well_into_the_rest_wakes_it() -> None:
    """A small flag, then a large spike 30 points later: the spike is reported (a rest
    after a small flag must not hide it). The spike's own next points (its return, a second
    point as high) and a high score inside the range seen do not wake the rest."""
    p = Params(learn=50, rest=100)
    steady = [10.0 + (i % 7) * 0.1 for i in range(300)]
    small = _scores(p, [*steady, 13.0])
    assert small[-1] >= p.threshold  # the small flag that starts the rest
    quiet = [10.0 + (i % 7) * 0.1 for i in range(30)]
    scores = _scores(p, [*steady, 13.0, *quiet, 500.0, 10.0, 480.0, 10.0])
    assert scores[-4] >= p.wake  # the breakout, 31 points into the rest
    assert scores[-3:] == [0.0, 0.0, 0.0]  # the rest starts again; 480 is no breakout
    early = _scores(p, [*steady, 13.0, 10.0, 500.0])
    assert early[-1] == 0.0  # 1 point into the rest: the flagged anomaly going on


def test_each_flag_raises_the_bar_for_the_next() -> None:
    """After four spikes, each flagged, the same moderate surprise is flagged without the
    calibration and not with it (its score raised to the power 1 + calibrate * flags); a
    full score flags either way."""
    p = Params(learn=50, rest=20, context_weight=0.0)
    history = [10.0 + (i % 7) * 0.1 for i in range(400)]
    for _ in range(4):
        history += [40.0] + [10.0 + (i % 7) * 0.1 for i in range(60)]
    calibrated, plain = Detector(p), Detector(replace(p, calibrate=0.0))
    for v in history:
        calibrated.score(v)
        plain.score(v)
    assert calibrated.flags > 3.0 and plain.flags == 0.0
    full = Detector.from_bytes(calibrated.to_bytes())
    bar = 1.0 + p.calibrate * calibrated.flags * (1.0 - 1.0 / p.calibrate_horizon)
    moderate = plain.score(25.0)
    assert math.isclose(calibrated.score(25.0), moderate**bar)
    assert moderate >= p.threshold > moderate**bar
    assert full.score(1e6) == 1.0


def test_a_spike_on_a_slow_wave_is_the_first_flag_by_default() -> None:
    """A wave of 157 points' period and one spike of 12 of its amplitudes at point 200: the
    defaults flag the spike and nothing before it. A stretch of the wave not seen yet is new
    to the context layer, but its memory is young (restarted when the grid is fixed or
    redrawn), so the novelty's share is still small; without that maturing, the same blend
    flags the first unseen stretch after learning, and its rest would hide the spike but for
    the wake."""
    values = [
        max(50 + 5 * math.sin(i / 25) + j + (60 if i == 200 and j == 1 else 0) for j in range(3))
        for i in range(300)
    ]
    assert Params().context_weight > 0 and Params().mature > 0
    for learn in (20, 60, 160):
        detector = Detector(Params(learn=learn))
        flags = [i for i, v in enumerate(values) if detector.score(v) >= DEFAULT_THRESHOLD]
        assert flags[:1] == [200], (learn, flags)
        unripe = Detector(Params(learn=learn, mature=0, wake=2.0))
        flags = [i for i, v in enumerate(values) if unripe.score(v) >= DEFAULT_THRESHOLD]
        assert flags[0] < 200 and 200 not in flags, (learn, flags)
        # The default wake reports the spike even then: a breakout well into the rest.
        woken = Detector(Params(learn=learn, mature=0))
        flags = [i for i, v in enumerate(values) if woken.score(v) >= DEFAULT_THRESHOLD]
        assert flags[0] < 200 and 200 in flags, (learn, flags)


def test_the_novelty_gets_its_share_once_the_memory_has_matured() -> None:
    # A square wave learnt for 100 points; the same new value (the middle of the range,
    # where the wave never goes) shortly after the grid is fixed and long after.
    p = Params(learn=100, rest=0, mature=200)
    wave = [0.0 if (i // 20) % 2 else 10.0 for i in range(1000)]
    early = _scores(p, [*wave[:120], 5.0])[-1]
    late = _scores(p, [*wave, 5.0])[-1]
    surprise_only = _scores(replace(p, context_weight=0.0), [*wave, 5.0])[-1]
    assert early < p.threshold <= late
    assert late > surprise_only


# What the formats before 4 restore to: those of format 4's and 5's fields they did not
# have, as off (they scored without them), the others as the old default (the state stores
# them).
_OLD = {
    "wake_after": 0,
    "wake_breakout": False,
    "calibrate": 0.0,
    "edge_bands": False,
    "block": 0,
}
_OLD_PARAMS = Params(
    learn=20, context_weight=0.65, table_bits=8, rest=30, mature=0, wake=2.0, **_OLD
)

# A state written by format 2 (before the maturing novelty): Params(learn=20,
# context_weight=0.65, table_bits=8, rest=30) after the first 60 points of _V2_SERIES.
_V2_STATE = bytes.fromhex(
    "02140000000a0000001e0000003c000000170000000106040801040a000000000000e03f9a9999999999a93f"
    "613255302aa9333f0000000000000000cdcccccccccce43f9a9999999999b93f000000000000004070dab347"
    "ea9c22402b3778f72b2024401895a6911260024054a403284521a2bf3c84ce85cc981040c1169d4801002240"
    "86655008bb74314022212b079f02e93fc67544d143d6913f4e3d42f3ae531940203c5fb6f601224086655008"
    "bb743140000000000000f03f4cac1c91feffef3f47f3e6fa4ae8e23f1f9da383be53e33fb8aee1a4c351e33f"
    "b2cc311f29e2e23f26527d97ab02e23ffc42a91a06afe03f56df38309ac4dd3fde5a28f80733d93f00000000"
    "0001400000080000400000000010000000000004100000000000000020001000"
)
_V2_SERIES = [10 + math.sin(i / 5) + (8 if i in (50, 75, 110) else 0) for i in range(120)]


def _goes_on_as_uninterrupted(restored: Detector) -> None:
    """`restored` (a state saved after `_V2_SERIES`' first 60 points) equals a detector of its
    parameters fed those points, and scores the rest as that one does."""
    uninterrupted = Detector(restored.params)
    for v in _V2_SERIES[:60]:
        uninterrupted.score(v)
    assert restored == uninterrupted
    rest = _V2_SERIES[60:]
    assert [restored.score(v) for v in rest] == [uninterrupted.score(v) for v in rest]


def test_a_state_of_format_2_restores_and_scores_as_it_did() -> None:
    restored = Detector.from_bytes(_V2_STATE)
    assert restored.params == _OLD_PARAMS
    _goes_on_as_uninterrupted(restored)
    assert max(_scores(restored.params, _V2_SERIES)[60:]) >= DEFAULT_THRESHOLD


# A state written by format 3 (before the wake's conditions, the calibration and edge
# bands): Params(learn=20, context_weight=0.65, table_bits=8, rest=30, mature=10, wake=1.0)
# after the first 60 points of _V2_SERIES.
_V3_STATE = bytes.fromhex(
    "03140000000a0000001e0000003c000000150000000106040801040a0a0000000a000000000000000000e03f"
    "9a9999999999a93f613255302aa9333f0000000000000000cdcccccccccce43f9a9999999999b93f00000000"
    "0000f03f70dab347ea9c22402b3778f72b2024401895a6911260024054a403284521a2bf3c84ce85cc981040"
    "c1169d480100224086655008bb74314022212b079f02e93fc67544d143d6913f4e3d42f3ae531940203c5fb6"
    "f601224086655008bb743140000000000000f03f4cac1c91feffef3f47f3e6fa4ae8e23f1f9da383be53e33f"
    "b8aee1a4c351e33fb2cc311f29e2e23f26527d97ab02e23ffc42a91a06afe03f56df38309ac4dd3fde5a28f8"
    "0733d93f000000000001400000080000400000000010000000000004100000000000000020001000"
)


def test_a_state_of_format_3_restores_and_scores_as_it_did() -> None:
    restored = Detector.from_bytes(_V3_STATE)
    assert restored.params == replace(_OLD_PARAMS, mature=10, wake=1.0)
    _goes_on_as_uninterrupted(restored)
    # Its flags as format 3's code gave them: 20, 21, 50 before the state, 75 and 110 after.
    scores = _scores(restored.params, _V2_SERIES)
    assert [i for i, s in enumerate(scores) if s >= DEFAULT_THRESHOLD] == [20, 21, 50, 75, 110]


def test_a_smooth_wave_growing_past_the_grid_is_not_flagged() -> None:
    """A wave whose amplitude grows a fifth each period after 1,000 points: each growth past
    the grid redraws it and clears the sequence memory, so every band sequence is new again;
    the novelty's share starts again from nothing (no flag), where a memory taken as mature
    at once flags each redraw."""
    values = [50 + 5 * (1 + max(0, i - 1000) / 785) * math.sin(i / 25) for i in range(3000)]
    for learn in (20, 288):
        assert max(_scores(Params(learn=learn), values)) < DEFAULT_THRESHOLD, learn
        unripe = _scores(Params(learn=learn, mature=0), values)
        assert max(unripe[1000:]) >= DEFAULT_THRESHOLD, learn


# A state written by format 4 (before the block context): Params(learn=20,
# context_weight=0.65, table_bits=8, rest=30, mature=10) with format 4's other defaults
# (wake 0.8 after 5 points of a breakout, calibrate 0.3) after the first 60 points of
# _V2_SERIES.
_V4_STATE = bytes.fromhex(
    "04140000000a0000001e0000003c000000150000000106040801040a0a0000000a0000000500000001e00700"
    "0000000000000000e03f9a9999999999a93f613255302aa9333f0000000000000000cdcccccccccce43f9a99"
    "99999999b93f9a9999999999e93f70dab347ea9c22402b3778f72b2024401895a6911260024054a403284521"
    "a2bf3c84ce85cc981040c1169d480100224086655008bb74314022212b079f02e93fc67544d143d6913f4e3d"
    "42f3ae531940203c5fb6f601224086655008bb743140333333333333d33fa786fc31419fff3f000000000000"
    "f03f4cac1c91feffef3f47f3e6fa4ae8e23f1f9da383be53e33fb8aee1a4c351e33fb2cc311f29e2e23f2652"
    "7d97ab02e23ffc42a91a06afe03f56df38309ac4dd3fde5a28f80733d93f0000000000000000000140000008"
    "0000400000000010000000000004100000000000000020001000"
)


def test_a_state_of_format_4_restores_and_scores_as_it_did() -> None:
    restored = Detector.from_bytes(_V4_STATE)
    assert restored.params == Params(
        learn=20, context_weight=0.65, table_bits=8, rest=30, mature=10, block=0
    )
    _goes_on_as_uninterrupted(restored)
    # Its flags as format 4's code gave them: 20 and 50 before the state, 75 and 110 after.
    scores = _scores(restored.params, _V2_SERIES)
    assert [i for i, s in enumerate(scores) if s >= DEFAULT_THRESHOLD] == [20, 50, 75, 110]


def _working_day(i: int, peak: float) -> float:
    """Point i of a day of 288 five-minute buckets: 20 at night, ``peak`` more through
    working hours (ramps of two hours), and a little deterministic noise."""
    t = i % 288
    level = min(1.0, max(0.0, (t - 96) / 24)) * min(1.0, max(0.0, (216 - t) / 24))
    return 20.0 + peak * level + (i * 7919 % 101) / 50.0


def test_a_day_whose_shape_changed_inside_the_range_is_flagged() -> None:
    """Nine days alike, then a day whose working hours reach only 35 above the night, not
    60 (every value inside the range seen, every few points' sequence of bands seen before),
    then normal days again: the block context (sequences of hourly means) flags that day and
    nothing else; without it (``block`` 0, round 4's defaults) nothing is flagged."""
    values = [_working_day(i, 35.0 if i // 288 == 9 else 60.0) for i in range(288 * 12)]
    flags = [i for i, s in enumerate(_scores(Params(), values)) if s >= DEFAULT_THRESHOLD]
    assert len(flags) == 1 and flags[0] // 288 == 9, flags
    assert max(_scores(Params(block=0), values)) < DEFAULT_THRESHOLD
