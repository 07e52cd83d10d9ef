"""`bench/rules.py` runs its segments and reports what the docs quote (River's needs the bench
extra); timings are never asserted (this only keeps the benchmark from rotting)."""

from __future__ import annotations

import json

from support.bench_run import run_bench


def test_every_segment_runs_and_reports() -> None:
    # River is the bench extra's, not the test suite's: its segment is left out here.
    only = "plain,grouped,long,tags,tag_parts,pandas_grouped"
    proc = run_bench("rules", "--scale", "0.01", "--json", "--only", only, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["segment"]: row for row in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == {"plain", "grouped", "long", "tags", "tag_parts", "pandas_grouped"}
    assert all(row["events_per_s"] > 0 for row in rows.values())
    # The long window's checkpoint holds its sub-buckets, and a cold aggregator restores it.
    assert rows["long"]["checkpoint_bytes"] > 0 and rows["long"]["restore_ms"] >= 0
    # Distinct counts and top values against the same rule without them.
    assert rows["tags"]["without_events_per_s"] > 0 and rows["tags"]["checkpoint_bytes"] > 0
    parts = rows["tag_parts"]
    assert parts["distinct_events_per_s"] > 0 and parts["top_events_per_s"] > 0
