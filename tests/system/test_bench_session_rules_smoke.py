"""`bench/session_rules.py` runs at its smallest size: every source event is answered 202 and
the session topic holds every visit once, through the whole funnel, on the server with the
session rule. Timings are never asserted: this only keeps the benchmark from rotting."""

from __future__ import annotations

import json

from support.bench_run import run_bench


def test_smoke_run_ends_every_visit_once_and_reports_cpu_per_event() -> None:
    proc = run_bench("session_rules", "--smoke", "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *rows, summary = [json.loads(line) for line in proc.stdout.splitlines()]
    assert summary["counts_exact"] is True
    assert summary["without_cpu_us_per_event"] > 0 and summary["with_cpu_us_per_event"] > 0
    (with_sessions,) = [r for r in rows if r["sessions"]]
    assert with_sessions["visits"] == with_sessions["visits_expected"] == 400
    assert with_sessions["visit_stats"]["reached"] == [400] * 4
