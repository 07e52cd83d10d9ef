"""TopicWindows against oracles, after every operation of generated streams.

* pandas defines the window semantics (docs/design.md): count, min, max and the quantiles of
  window ``w`` after each operation must equal ``series.rolling(w)`` read at the newest row of
  the accepted events sorted by time (stable, so ties keep arrival order).
* An exact reference (rationals on the same doubles) checks sum, mean, var and stddev, on the
  set the contract names: accepted events with ts in ``(T - w, T]``.

Both oracles live in ``harness.oracle`` (``bench/aggregator.py`` checks with them too).

Both statistic selections with different data structures run under the oracles: every
statistic (min/max from sorted lists) and the scalar ones (min/max from the monotonic lists of
``extrema.py``), each driven event by event (``insert`` + ``summary``) or in batches
(``insert_many``), with default and with aggressive buffer maintenance.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from harness.oracle import Exact, mismatches, rolling
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.stats import SCALAR_STATS, STAT_KEYS, WindowSpec
from pushsvc.stats import windows as windows_module

S = 1_000_000  # µs
LATENESS = 5 * S  # the server's default allowed lateness; the caller enforces it
BASE = 1_763_700_000 * S

STANDARD = ((10 * S, 60 * S, 300 * S), ("10s", "1m", "5m"))
# Tiny windows so that eviction happens on most events; 1 µs holds only events at T itself.
TINY = ((1, 1 * S, 2 * S), ("1us", "1s", "2s"))

# Values per stream: a regime (what most values look like) plus spikes and arbitrary values.
REGIMES = {
    "small ints": st.integers(-3, 3).map(float),  # many duplicates
    "near 1": st.floats(-1e-3, 1e-3).map(lambda d: 1.0 + d),
    "1e9 + noise": st.floats(-1.0, 1.0).map(lambda d: 1e9 + d),
    "decimals": st.integers(-(10**6), 10**6).map(lambda i: i / 1000),
    "any": st.floats(-1e6, 1e6, allow_nan=False),  # includes tiny and subnormal values
}
SPIKES = st.sampled_from([1e8, -1e8, 1.1e9, 1e12, 1e-300])


@dataclass(frozen=True)
class Insert:
    ts_us: int
    value: float


@dataclass(frozen=True)
class Tick:
    clock_us: int


# Built once: a strategy made anew on every draw is validated anew, which cost a third of
# this module's generation.
REGIME_NAMES = st.sampled_from(sorted(REGIMES))
VALUES = {name: st.one_of(r, r, r, SPIKES, REGIMES["any"]) for name, r in REGIMES.items()}
KINDS = st.sampled_from(
    ["next", "next", "tie", "late", "late", "graced", "edge", "tick", "edge tick"]
)
AROUND = st.sampled_from([-1, 0, 1])


@functools.cache
def _gaps(small: int, large: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(1, 1000),
        st.integers(1, small // 2),
        st.sampled_from([small - 1, small, small + 1, large - 1, large, large + 1]),
        st.integers(large // 2, 2 * large),  # empties windows
    )


@st.composite
def streams(draw: st.DrawFn, widths: tuple[int, ...]) -> list[Insert | Tick]:
    """Operations as the aggregator issues them: inserts (lateness already checked), ticks."""
    values = VALUES[draw(REGIME_NAMES)]
    gaps = _gaps(min(w for w in widths if w > 1), max(widths))
    ops: list[Insert | Tick] = []
    accepted: list[int] = []
    clock = BASE + draw(st.integers(0, S))
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(KINDS)
        if not accepted:
            kind = "next"
        if kind in ("edge", "edge tick"):
            # Exactly on, or 1 µs around, the edge of some window for a past event:
            # T - w == ts (excluded) and T - w + 1 == ts (included).
            edge = accepted[draw(st.integers(0, len(accepted) - 1))]
            edge += widths[draw(st.integers(0, len(widths) - 1))] + draw(AROUND)
        if kind == "tick":
            clock += draw(gaps)
            ops.append(Tick(clock))
            continue
        if kind == "edge tick":
            clock = max(clock + 1, edge)
            ops.append(Tick(clock))
            continue
        if kind == "next":
            ts = clock + draw(gaps) if accepted else clock
        elif kind == "tie":
            ts = clock
        elif kind == "late":
            ts = clock - draw(st.integers(0, LATENESS))
        elif kind == "graced":
            # Late by up to a grace longer than every window (a rule's `grace`): into some
            # windows and not others, or into none.
            ts = clock - draw(st.integers(0, 2 * max(widths)))
        else:
            ts = edge if edge >= clock - LATENESS else clock
        ops.append(Insert(ts, draw(values)))
        accepted.append(ts)
        clock = max(clock, ts)
    return ops


def run_against_oracles(
    ops: list[Insert | Tick],
    widths: tuple[int, ...],
    labels: tuple[str, ...],
    stats: tuple[str, ...] = STAT_KEYS,
    batches: list[int] | None = None,
    fused: bool = False,
):
    """Apply ``ops`` and check the state after each one against the oracles.

    ``batches``: None drives ``insert`` + ``summary`` per event (``insert_and_summary`` if
    ``fused``); else runs of consecutive inserts go through ``insert_many`` in batches of
    these sizes (cycled), whose returned summaries are checked (clock and size only where a
    batch ends).
    """
    tw = WindowSpec(widths, labels, stats).new()
    accepted: list[tuple[int, float]] = []  # in arrival order
    rows: list[tuple[int, float]] = []  # accepted events and tick rows, in arrival order
    summaries = []
    changed: list[bool | None] = []
    k = 0
    sizes = iter(batches * len(ops)) if batches else None
    while k < len(ops):
        op = ops[k]
        if isinstance(op, Tick):
            changed.append(tw.advance(op.clock_us))
            rows.append((op.clock_us, math.nan))
            summaries.append((tw.clock_us, len(tw), tw.summary(), list(accepted)))
            k += 1
            continue
        if sizes is None:
            batch = [op]
        else:
            batch = []
            size = next(sizes)
            while k + len(batch) < len(ops) and len(batch) < size:
                if not isinstance(ops[k + len(batch)], Insert):
                    break
                batch.append(ops[k + len(batch)])
        if sizes is None and fused:
            results = [tw.insert_and_summary(op.ts_us, op.value)]
        elif sizes is None:
            tw.insert(op.ts_us, op.value)
            results = [tw.summary()]
        else:
            results = tw.insert_many([(e.ts_us, e.value) for e in batch])
        assert len(results) == len(batch)
        for j, (event, summary) in enumerate(zip(batch, results, strict=True)):
            accepted.append((event.ts_us, event.value))
            rows.append((event.ts_us, event.value))
            changed.append(None)
            last = j == len(batch) - 1
            summaries.append(
                (tw.clock_us if last else None, len(tw) if last else None, summary, list(accepted))
            )
        k += len(batch)
    # sorted() is stable: rows with equal ts keep their arrival order, as in docs/design.md.
    states = [sorted(rows[: k + 1], key=lambda row: row[0]) for k in range(len(rows))]
    oracle = rolling(states, widths)

    previous_counts = None
    for k, (op, (clock, held, summary, events)) in enumerate(zip(ops, summaries, strict=True)):
        where = f"after op {k} {op}"
        assert clock is None or clock == max(ts for ts, _ in states[k]), where
        assert list(summary) == list(labels), where
        counts = []
        for width, label in zip(widths, labels, strict=True):
            got = summary[label]
            here = f"{where}, window {label}"
            assert tuple(got) == stats, here
            expected = {name: column[k] for name, column in oracle[width].items()}
            counts.append(got["count"])
            t = max(ts for ts, _ in states[k])
            window = [v for ts, v in events if t - width < ts <= t]
            assert not mismatches(got, expected, Exact.of(window), stats), here
            if got["count"] == 0:
                assert list(got.values()) == [0, 0.0] + [None] * (len(stats) - 2), here
        widest = max(range(len(widths)), key=lambda i: widths[i])
        assert held is None or held == counts[widest], where
        if changed[k] is not None:
            # A tick only removes events, so "content changed" means "some count dropped".
            assert changed[k] == any(c < p for c, p in zip(counts, previous_counts, strict=True)), (
                where
            )
        previous_counts = counts


WINDOW_SETS = pytest.mark.parametrize(("widths", "labels"), [STANDARD, TINY], ids=["std", "tiny"])
# Default buffer maintenance, and one that compacts the buffer on nearly every event and sends
# most values (all but small multiples of 1/256, and all beyond 2**20) through the exact
# general path, so the topic switches in and out of it (rescaling its sums) all the time.
MAINTENANCE = pytest.mark.parametrize(
    "aggressive", [False, True], ids=["default-maintenance", "aggressive-maintenance"]
)
SELECTIONS = pytest.mark.parametrize("stats", [STAT_KEYS, SCALAR_STATS], ids=["all", "scalar"])


@WINDOW_SETS
@MAINTENANCE
@SELECTIONS
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_statistic_matches_oracles_after_every_operation(
    data: st.DataObject,
    widths: tuple[int, ...],
    labels: tuple[str, ...],
    aggressive: bool,
    stats: tuple[str, ...],
) -> None:
    ops = data.draw(streams(widths))
    batches = data.draw(
        st.one_of(st.none(), st.lists(st.integers(1, 8), min_size=1, max_size=4)), label="batches"
    )
    fused = batches is None and data.draw(st.booleans(), label="fused")
    if aggressive:
        with (
            mock.patch.object(windows_module, "_COMPACT_MIN", 1),
            mock.patch.object(windows_module, "MAX_FAST_SHIFT", 8),
            mock.patch.object(windows_module, "HUGE", 2.0**20),
        ):
            run_against_oracles(ops, widths, labels, stats, batches, fused)
    else:
        run_against_oracles(ops, widths, labels, stats, batches, fused)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_insert_many_returns_what_insert_and_summary_return(data: st.DataObject) -> None:
    widths, labels = data.draw(st.sampled_from([STANDARD, TINY]))
    stats = data.draw(st.sampled_from([STAT_KEYS, SCALAR_STATS, ("count", "min"), ("p90",)]))
    ops = data.draw(streams(widths))
    spec = WindowSpec(widths, labels, stats)
    one, many = spec.new(), spec.new()
    k = 0
    while k < len(ops):
        if isinstance(ops[k], Tick):
            assert one.advance(ops[k].clock_us) == many.advance(ops[k].clock_us)
            assert one.summary() == many.summary()
            k += 1
            continue
        size = data.draw(st.integers(1, 10))
        batch: list[Insert] = []
        while k + len(batch) < len(ops) and len(batch) < size:
            op = ops[k + len(batch)]
            if not isinstance(op, Insert):
                break
            batch.append(op)
        expected = []
        for op in batch:
            one.insert(op.ts_us, op.value)
            expected.append(one.summary())
        assert many.insert_many([(op.ts_us, op.value) for op in batch]) == expected
        assert (many.clock_us, len(many)) == (one.clock_us, len(one))
        k += len(batch)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_insert_and_summary_returns_what_insert_then_summary_return(
    data: st.DataObject,
) -> None:
    widths, labels = data.draw(st.sampled_from([STANDARD, TINY]))
    stats = data.draw(st.sampled_from([STAT_KEYS, SCALAR_STATS, ("count", "min"), ("p90",)]))
    ops = data.draw(streams(widths))
    spec = WindowSpec(widths, labels, stats)
    # Compacting on nearly every event: the fused path's compaction branch runs too.
    with mock.patch.object(windows_module, "_COMPACT_MIN", data.draw(st.sampled_from([1, 64]))):
        one, fused = spec.new(), spec.new()
        for op in ops:
            if isinstance(op, Tick):
                assert one.advance(op.clock_us) == fused.advance(op.clock_us)
                continue
            one.insert(op.ts_us, op.value)
            assert fused.insert_and_summary(op.ts_us, op.value) == one.summary()
            assert (fused.clock_us, len(fused)) == (one.clock_us, len(one))


def test_stacked_oracle_layout_matches_one_rolling_call_per_state() -> None:
    # The oracle lays states end to end (oracle.rolling); check that trick against the
    # straightforward way, one pandas call per state, on a stream with late events and ties.
    widths = (2 * S, 5 * S)
    rows = [
        (BASE, 1.0), (BASE + S, 5.0), (BASE + S, 2.0), (BASE + 3 * S, 7.5),
        (BASE + 2 * S, -1.0), (BASE + 5 * S, math.nan), (BASE + 5 * S, 4.0),
        (BASE + 4 * S + 1, 3.0), (BASE + 7 * S, 0.5),
    ]  # fmt: skip
    states = [sorted(rows[: k + 1], key=lambda row: row[0]) for k in range(len(rows))]
    stacked = rolling(states, widths)
    for k, state in enumerate(states):
        series = pd.Series(
            [v for _, v in state], index=pd.to_datetime([ts for ts, _ in state], unit="us")
        )
        for width in widths:
            window = series.rolling(pd.Timedelta(width, unit="us"))
            direct = {
                "count": window.count().iloc[-1],
                "min": window.min().iloc[-1],
                "max": window.max().iloc[-1],
                "p50": window.quantile(0.5, interpolation="linear").iloc[-1],
                "p90": window.quantile(0.9, interpolation="linear").iloc[-1],
                "p99": window.quantile(0.99, interpolation="linear").iloc[-1],
            }
            for name, value in direct.items():
                np.testing.assert_equal(stacked[width][name][k], value)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_the_generated_fast_paths_equal_the_reference(data: st.DataObject) -> None:
    widths, labels = data.draw(st.sampled_from([STANDARD, TINY]))
    stats = data.draw(st.sampled_from([STAT_KEYS, SCALAR_STATS, ("count", "min"), ("p90",)]))
    spec = WindowSpec(widths, labels, stats)
    # Each generated method on an instance of its own: in order and late, every event.
    one, fused, many, reference = spec.new(), spec.new(), spec.new(), spec.reference()
    assert type(one) is not type(reference)  # the generated class, and the plain one
    for op in data.draw(streams(widths)):
        if isinstance(op, Tick):
            changed = reference.advance(op.clock_us)
            for fast in (one, fused, many):
                assert fast.advance(op.clock_us) == changed
            expected = reference.summary()
            got = [fast.summary() for fast in (one, fused, many)]
        else:
            reference.insert(op.ts_us, op.value)
            expected = reference.summary()
            one.insert(op.ts_us, op.value)
            got = [one.summary(), fused.insert_and_summary(op.ts_us, op.value)]
            got += many.insert_many([(op.ts_us, op.value)])
        assert got == [expected] * 3
        for fast in (one, fused, many):
            assert fast.clock_us == reference.clock_us and len(fast) == len(reference)


def test_the_fast_paths_equal_the_reference_as_sorted_lists_split_and_merge() -> None:
    # Windows of up to 3,000 values, then a gap and a trickle: each SortedList grows past one
    # sublist (the generated code's inline insert and removal give way to SortedList's
    # methods), splits, and merges back to one sublist as the windows drain.
    widths, labels = (1 * S, 3 * S), ("1s", "3s")
    spec = WindowSpec(widths, labels, STAT_KEYS)
    fused, one, many, reference = spec.new(), spec.new(), spec.new(), spec.reference()
    rng = np.random.default_rng(11)
    t0 = 1_700_000_000 * S
    times = [t0 + i * 1_000 for i in range(5_000)]  # 1,000 events a second
    times += [times[-1] + 2 * S + i * 40_000 for i in range(200)]  # then 25 a second
    values = [float(v) for v in rng.integers(-500, 500, len(times)) / 4]
    batch: list[tuple[int, float]] = []
    for ts, value in zip(times, values, strict=True):
        reference.insert(ts, value)
        expected = reference.summary()
        one.insert(ts, value)
        assert one.summary() == expected
        assert fused.insert_and_summary(ts, value) == expected
        batch.append((ts, value))
        if len(batch) == 37:
            assert many.insert_many(batch)[-1] == expected
            batch = []
    assert len(fused) == len(reference) == len(one)
    assert all(len(s._lists) == 1 for s in fused._sorted)  # merged back into one sublist
