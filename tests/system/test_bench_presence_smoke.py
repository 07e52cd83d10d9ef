"""The presence benchmark runs at a tiny size, on a real Redis, and its figures come with the
counts it checked (the tally empty after every leave; a read over two processes' entries on
Redis equal to both tallies). Timings are never asserted: this only keeps
``bench/presence.py`` from rotting."""

from __future__ import annotations

import pytest

from support.bench_run import json_rows, run_bench

pytestmark = pytest.mark.redis


def test_the_presence_bench_gives_every_row() -> None:
    proc = run_bench(
        "presence", "--streams", "2000", "--topics", "50", "--churn", "100", "--json",
        timeout=300, redis=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    rows = json_rows(proc)
    assert {"platform", "nproc", "date"} <= rows[0]["machine"].keys()
    kinds = [row.get("row") for row in rows[1:]]
    assert kinds == ["join_leave", "join_leave", "held", "held", "redis"], rows
    assert all(row["streams"] == 2000 for row in rows[1:])
