"""The channel-scale benchmark runs end to end at a tiny size — never a timing threshold.

`bench/channel_scale.py` opens a stream on each of the first topics `u{i}` with the C
subscribers (their paths numbered: `{i}`), publishes one message to every topic by cross-topic
batches, embedded and on Redis, and every stream gets its own message once.
"""

from __future__ import annotations

import pytest
from bench.loadgen.cclient import compiler

from support.bench_run import json_rows, run_bench

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(compiler() is None, reason="the C subscribers need a C compiler"),
]


def test_channel_scale_smoke_embedded_and_on_redis() -> None:
    done = run_bench(
        "channel_scale", "--channels", "300", "--streams", "200", "--batch", "70",
        "--servers", "pushsvc-memory,pushsvc-redis-2", "--json", timeout=180,
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
