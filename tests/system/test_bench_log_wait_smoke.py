"""The log-wait benchmark runs on a real Redis Cluster, every strategy gives its row, and every
entry appended was seen exactly once.

Timings are never asserted: this only keeps ``bench/log_wait.py`` from rotting. The bench
starts a cluster of its own (three primaries, no replicas), so the `redis_cluster` fixture is
not used.
"""

from __future__ import annotations

import pytest

from support.bench_run import json_rows, run_bench

STRATEGIES = {"block", "poll-10ms", "poll-50ms", "wake"}

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


@pytest.fixture(scope="module")
def smoke() -> list[dict]:
    # About 12 s alone, longer on two cores shared with the rest of the suite.
    proc = run_bench("log_wait", "--smoke", "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return json_rows(proc)


def test_the_header_says_where_it_ran(smoke: list[dict]) -> None:
    header = smoke[0]
    assert header["primaries"] == 3
    assert {"platform", "nproc", "python", "date"} <= header["machine"].keys()


def test_every_strategy_has_its_row(smoke: list[dict]) -> None:
    rows = smoke[1:]
    assert {row["strategy"] for row in rows} == STRATEGIES
    assert all(row["status"] == "ok" for row in rows), rows


def test_every_entry_was_seen_exactly_once(smoke: list[dict]) -> None:
    for row in smoke[1:]:
        assert row["sent"] > 0, row
        assert row["seen"] == row["sent"], row
        assert row["missing"] == row["duplicates"] == 0, row
        assert row["exact"] and not row["errors"], row


def test_the_connections_are_counted_per_strategy(smoke: list[dict]) -> None:
    # Counts, not timings: by construction one per partition for `block`, one per primary for
    # polling, two per primary for `wake` (a subscription and one for the reads).
    held = {row["strategy"]: row["connections"] for row in smoke[1:]}
    partitions = smoke[1]["partitions"]
    assert held == {"block": partitions, "poll-10ms": 3, "poll-50ms": 3, "wake": 6}
