"""The bytes-per-delivery benchmark runs and counts correctly — never a timing threshold.

`bench/stream_bytes.py --smoke` starts `pushsvc serve` and the demo for a few seconds, with a
plain reader, a gzip reader, pushsvc's `Client` and (where Chromium is installed) a bare
`EventSource` on the dashboard's stream, each through a counting proxy: every client decodes
the same number of updates, and the gzip ones are sent fewer bytes than the plain one.
"""

from __future__ import annotations

from support.bench_run import json_rows, run_bench


def test_stream_bytes_smoke() -> None:
    done = run_bench("stream_bytes", "--smoke", "--json", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json_rows(done)
    clients = [row["client"] for row in rows]
    assert clients[:3] == ["plain", "gzip", "Client"]
    counts = {row["deliveries"] for row in rows}
    assert len(counts) == 1 and counts.pop() > 0
    plain = rows[0]["bytes_per_delivery"]
    for row in rows[1:]:
        assert row["bytes_per_delivery"] < plain, row
