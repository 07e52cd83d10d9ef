"""`bench/outbox.py` runs at its smallest size: every row and every POST arrives, once and in
order, on both paths it compares. Timings are never asserted: this only keeps the benchmark
from rotting."""

from __future__ import annotations

import pytest
from harness.postgres_server import unavailable

from support.bench_run import json_rows, run_bench

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_smoke_run_reports_both_paths_with_every_row_once_in_order() -> None:
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    proc = run_bench("outbox", "--smoke", "--json", timeout=240, redis=True)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    header, *rows = json_rows(proc)
    assert {"platform", "nproc", "python", "date"} <= header["machine"].keys()
    assert [(r["test"], r["path"]) for r in rows] == [
        ("throughput", "outbox"), ("throughput", "post"), ("throughput", "post"),
        ("latency", "outbox"), ("latency", "post"),
    ]  # fmt: skip
    assert all(r["status"] == "ok" for r in rows), rows
    assert all(r["rows"] == 200 for r in rows[:3])
    assert all(r["rows"] == 100 and r["p99_ms"] > 0 for r in rows[3:])
