"""`bench/alerts.py` runs at its smallest size and prints its figures, and the run with alerts
really changed alert states (so their publishing is part of what it times). Timings are never
asserted: this only keeps the benchmark from rotting."""

from __future__ import annotations

import json
import subprocess

from support.bench_run import run_bench


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return run_bench("alerts", "--quick", *args, timeout=120)


def test_quick_run_reports_both_rates_the_ratio_and_alert_changes() -> None:
    proc = _bench("--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["alerts"] == 10 and result["instances_per_topic"] == 90
    for side in ("without", "with"):
        assert result[side]["median"] > 0 and len(result[side]["rounds"]) == result["rounds"]
    assert result["ratio"] > 0 and isinstance(result["goal_holds"], bool)
    assert result["alert_changes"] > 0, result["alert_changes_by_state"]


def test_the_text_report_names_every_figure() -> None:
    proc = _bench()
    assert proc.returncode == 0, proc.stderr[-3000:]
    for words in ("without alerts", "with alerts", "with/without", "goal:", "alert changes"):
        assert words in proc.stdout, proc.stdout
