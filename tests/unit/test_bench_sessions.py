"""The sessions benchmark runs and checks its own counts (small sizes; no timing checked)."""

from __future__ import annotations

from bench.sessions import us_per_ended, us_per_event


def test_bench_sessions_smoke() -> None:
    assert us_per_ended(1_000, n_ended=200) > 0
    assert us_per_event(2_000) > 0
