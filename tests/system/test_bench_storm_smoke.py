"""The reconnect-storm benchmark runs and counts correctly: every client back, every update
once, the `retry:` values spread — never a timing (those are the benchmark's to print)."""

from __future__ import annotations

import pytest

from support.bench_run import json_rows, run_bench

pytestmark = pytest.mark.redis


def test_storm_smoke() -> None:
    args = ("--json", "--clients", "300", "--topics", "10", "--sources", "2", "--quiet", "0.5")
    done = run_bench("storm", *args, timeout=180, redis=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json_rows(done)
    assert row.get("status", "ok") == "ok", row
    assert (row["lost"], row["duplicated"], row["gaps"]) == (0, 0, 0)
    assert row["subscribers"] == 300 and row["client_errors"] == []
    assert row["producer_refused"] == 0
    low, high = (int(ms) for ms in row["retry_ms"].split("-"))
    assert 1000 <= low < high < 2000 and row["retry_distinct"] > 1
    assert row["reads_per_reconnect"] > 0
    assert "back s" in done.stderr and "reads/rc" in done.stderr
