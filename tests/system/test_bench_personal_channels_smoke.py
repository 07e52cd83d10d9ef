"""The personal-channels benchmark counts correctly — never a timing threshold.

`bench/personal_channels.py --smoke` starts real servers (pushsvc, and nginx + nchan where
installed), 200 channels each with its own C subscriber, and publishes 400 messages by single
POSTs and by cross-topic batches: every row must show every message delivered once, in order,
to its own channel's subscriber. At a tiny `--scale`, streams on the first topics only, one
message to every topic by cross-topic batches, embedded and on Redis: every stream gets its
own message once.
"""

from __future__ import annotations

import pytest
from bench.loadgen.cclient import compiler

from support.bench_run import json_rows, run_bench


@pytest.mark.skipif(compiler() is None, reason="no C compiler for the C subscribers")
def test_personal_channels_smoke_delivers_each_message_to_its_own_channel_once() -> None:
    done = run_bench("personal_channels", "--smoke", "--modes", "single,batch", "--json",
                     timeout=240)  # fmt: skip
    rows = json_rows(done)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = [(r["server"], r["mode"]) for r in rows if r["status"] == "ok"]
    assert ("pushsvc", "single") in ran and ("pushsvc", "batch") in ran
    for row in rows:
        if row["server"] == "nchan" and row["status"] == "skipped":
            continue  # no nginx + nchan here, or a batch, which nchan has not
        assert row["status"] == "ok", row
        assert (row["channels"], row["messages"], row["ready"]) == (200, 400, 200)
        assert row["accepted"] == row["expected"] == row["received"] == 400
        counts = [row[k] for k in ("missing", "duplicates", "out_of_order", "unexpected")]
        assert counts == [0, 0, 0, 0]
        assert row["stream_errors"] == {} and row["publish_errors"] == {}
        assert row["latency_ms"]["p50"] is not None
        assert isinstance(row["cpu_us_per_message"], float)  # reported, no threshold


@pytest.mark.redis
@pytest.mark.skipif(compiler() is None, reason="the C subscribers need a C compiler")
def test_personal_channels_at_scale_embedded_and_on_redis() -> None:
    done = run_bench(
        "personal_channels", "--scale", "--channels", "300", "--streams", "200", "--batch", "70",
        "--servers", "pushsvc-memory,pushsvc-redis-2", "--settle", "0.3", "--json", timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json_rows(done)
    assert [(row["server"], row["status"]) for row in rows] == [
        ("pushsvc-memory", "ok"), ("pushsvc-redis-2", "ok"),
    ], rows  # fmt: skip
    for row in rows:
        assert (row["delivered"], row["missing"], row["duplicates"], row["out_of_order"]) == (
            200, 0, 0, 0,
        ), row  # fmt: skip
        assert isinstance(row["kb_per_topic"], float)
    assert rows[0]["redis_bytes_per_channel"] is None
    assert isinstance(rows[1]["redis_bytes_per_channel"], int)
