"""The end-to-end benchmark counts correctly — never a timing threshold.

`bench/e2e.py --smoke` runs against real servers and must report every update delivered
exactly once, in order, to every subscriber. (The id counter it relies on is checked with
byte tables in test_bench_loadgen.py.)
"""

from __future__ import annotations

import pytest

from support.bench_run import json_rows, run_bench

# -- the benchmark itself ------------------------------------------------------------------


@pytest.mark.redis
def test_e2e_smoke_delivers_every_update_exactly_once() -> None:
    # Default settings: a client queue counts batches, not updates, so a fast reader of
    # 1000-event batches is never conflated (it was, when the queue counted updates).
    done = run_bench("e2e", "--smoke", "--json", timeout=60, redis=True)
    rows = json_rows(done)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["projection"] for r in rows] == ["full", "stats=count&windows=10s"]
    for row in rows:
        assert row["status"] == "ok", row
        assert (row["events"], row["subscribers"], row["batch"]) == (5000, 10, 1000)
        assert row["server_args"] == []
        assert row["accepted"] == 5000 and row["publish_errors"] == {}
        assert row["connected"] == row["complete"] == 10
        assert (row["expected"], row["received"]) == (50_000, 50_000)
        counts = [row[k] for k in ("missing", "duplicates", "out_of_order", "unexpected")]
        assert counts == [0, 0, 0, 0]
        assert row["id_sets_differ"] == 0
        reference = row["reference"]
        assert (reference["subscribers"], reference["received"], reference["distinct"]) == (
            1, 5000, 5000,
        )  # fmt: skip
        assert reference["missing"] == reference["duplicates"] == reference["unexpected"] == 0
        assert row["stream_errors"] == {} and row["connect_errors"] == {}
        assert row["e2e_per_s"] is not None and row["accepted_per_s"] is not None
        assert set(row["cpu_s"]) == {
            "redis", "aggregator", "web-0", "subscribers", "publisher",
        }  # fmt: skip
        assert all(isinstance(s, float) and s >= 0 for s in row["cpu_s"].values())
    full, projected = rows
    # The projection is what a subscriber asked for: one window, one statistic.
    assert projected["bytes_per_update"] < full["bytes_per_update"]


@pytest.mark.redis
def test_e2e_smoke_messages_each_once_on_the_messages_stream() -> None:
    """`--messages`: events that are messages without a value, read on /messages, reach every
    subscriber once and in order, the reference reading each message's published value; a
    message's delivery carries its data, not the statistics an update carries."""
    done = run_bench(
        "e2e", "--smoke", "--json", "--projection", "full", "--messages", "100,10240",
        timeout=90, redis=True,
    )  # fmt: skip
    rows = json_rows(done)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(r["projection"], r["message_bytes"]) for r in rows] == [
        ("full", 0), ("messages", 100), ("messages", 10240),
    ]  # fmt: skip
    for row in rows:
        assert row["status"] == "ok", row
        assert (row["expected"], row["received"]) == (50_000, 50_000)
        counts = [row[k] for k in ("missing", "duplicates", "out_of_order", "unexpected")]
        assert counts == [0, 0, 0, 0] and row["id_sets_differ"] == 0
        reference = row["reference"]
        assert (reference["received"], reference["distinct"], reference["missing"]) == (
            5000, 5000, 0,
        )  # fmt: skip
    full, small, large = (row["bytes_per_update"] for row in rows)
    assert small < full  # 100 bytes of data and its frame, no windows of statistics
    assert 10240 < large < 10240 + 200
