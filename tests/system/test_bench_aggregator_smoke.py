"""The aggregator benchmark runs, counts what it feeds, and its correctness check can fail.

Timings are never asserted: this only keeps ``bench/aggregator.py`` from rotting.
"""

from __future__ import annotations

import json
import math
from types import ModuleType

import pytest

from support.bench_run import run_bench

HEADLINE = (
    "scalar_1w", "scalar_3w", "all_3w", "aggregator_all_3w", "aggregator_messages_100B",
    "aggregator_messages_10KiB", "river_time_rolling", "pandas_per_event", "ratio_vs_river",
    "p9999_event_us", "max_event_us",
    "platform", "nproc", "python", "date",
)  # fmt: skip


@pytest.fixture(scope="module")
def smoke() -> dict:
    # The smoke takes ~11 s of CPU; on two cores shared with the rest of the suite, over 30 s.
    proc = run_bench("aggregator", "--smoke", "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return json.loads(proc.stdout)


def test_prints_every_headline_figure(smoke: dict) -> None:
    missing = [key for key in HEADLINE if key not in smoke]
    assert not missing
    rates = ("scalar_1w", "scalar_3w", "all_3w", "aggregator_all_3w", "pandas_per_event",
             "aggregator_messages_100B", "aggregator_messages_10KiB")  # fmt: skip
    for key in rates:
        assert isinstance(smoke[key], int) and smoke[key] > 0, key
    assert smoke["p9999_event_us"] <= smoke["max_event_us"]


def test_every_output_matches_the_oracle(smoke: dict) -> None:
    check = smoke["check"]
    assert check["passed"], check["failures"]
    assert check["late_events"] > 0  # late inserts were exercised
    checked = " ".join(check["checked"])
    for name in ("scalar_1w", "scalar_3w", "all_3w", "aggregator"):
        assert name in checked
    assert "pandas" in check["oracle"] and "exact" in check["oracle"]


def test_timed_runs_count_every_event_fed(smoke: dict) -> None:
    details = smoke["details"]
    repeats = smoke["stream"]["repeats"]
    runs = [key for key in details if key.startswith(("scalar_", "all_3w_", "aggregator_"))]
    assert runs
    timed = {details[key]["events_timed"] for key in runs}
    assert len(timed) == 1 and timed.pop() % repeats == 0
    # The widest window is full: timing is steady state, not a filling window.
    held = details["all_3w_each"]["held_in_widest_window"]
    assert held >= 300 * smoke["stream"]["event_rate_per_s"]


def test_river_is_reported_or_said_missing(smoke: dict) -> None:
    if smoke["river"] is None:
        assert smoke["river_time_rolling"] is None and smoke["ratio_vs_river"] is None
        assert "River" in smoke["river_error"]
    else:
        assert smoke["river_time_rolling"] > 0
        assert smoke["river_check"]["matches"], smoke["river_check"]


@pytest.fixture
def bench() -> ModuleType:
    from bench import aggregator

    return aggregator


def test_check_catches_a_window_one_microsecond_too_wide(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    class ClosedLeft(bench.WindowSpec):  # [T - w, T] instead of (T - w, T]
        __slots__ = ()

        def __init__(self, widths_us: list[int], labels: list[str], *args: object) -> None:
            super().__init__([w + 1 for w in widths_us], labels, *args)

    monkeypatch.setattr(bench, "WindowSpec", ClosedLeft)
    # 300 ms apart, so events sit exactly on window boundaries once the 5m window is full.
    stream = bench.make_stream(1100, stride_us=300_000, seed=7)
    result = bench.check(stream, 10)
    assert not result["passed"]
    assert any("count: got" in failure for failure in result["failures"])


def test_the_oracle_flags_a_statistic_one_ulp_off(bench: ModuleType) -> None:
    s = bench.S
    rows = [(bench.BASE_US, 0.1), (bench.BASE_US + 2 * s, 0.7), (bench.BASE_US + s, 0.2)]
    windows = bench.WindowSpec([10 * s], ["10s"], bench.STAT_KEYS).new()
    for ts, value in rows:
        windows.insert(ts, value)
    got = windows.summary()["10s"]
    (order,) = [{k: c[0] for k, c in bench.rolling([sorted(rows)], [10 * s])[10 * s].items()}]
    exact = bench.Exact.of([v for _, v in rows])
    assert bench.mismatches(got, order, exact, bench.STAT_KEYS) == []
    for stat in ("sum", "mean", "var", "stddev", "min", "p90"):
        wrong = {**got, stat: math.nextafter(got[stat], math.inf)}
        (message,) = bench.mismatches(wrong, order, exact, bench.STAT_KEYS)
        assert message.startswith(f"{stat}: got")
