"""`bench/derive.py` runs at its smallest size, every source event is answered 202 and every
boundary is derived, on both servers it compares. Timings are never asserted: this only keeps
the benchmark from rotting."""

from __future__ import annotations

import json

from support.bench_run import run_bench


def test_smoke_run_derives_every_boundary_and_reports_cpu_per_event() -> None:
    proc = run_bench("derive", "--smoke", "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *rows, summary = [json.loads(line) for line in proc.stdout.splitlines()]
    assert summary["counts_exact"] is True
    assert summary["without_cpu_us_per_event"] > 0 and summary["with_cpu_us_per_event"] > 0
    with_derive = [r for r in rows if r["derive"]]
    assert with_derive and all(r["derived"] == [r["derived_expected"]] * 3 for r in with_derive)
