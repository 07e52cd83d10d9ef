"""The idle-streams benchmark runs on both stream endpoints — never a timing threshold.

`bench/idle_streams.py --endpoints stream,messages` opens a few idle streams of a topic's
`/stream` and of its `/messages` in turn on real servers, reports what they hold, and sees
every one released once its client leaves.
"""

from __future__ import annotations

from support.bench_run import json_rows, run_bench


def test_idle_streams_smoke_on_stream_and_messages() -> None:
    done = run_bench(
        "idle_streams", "--streams", "30", "--idle", "0.2", "--endpoints", "stream,messages",
        "--json", timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json_rows(done)
    assert [(row["endpoint"], row["round"], row["streams"]) for row in rows] == [
        ("stream", 1, 30), ("messages", 1, 30),
    ]  # fmt: skip
    for row in rows:
        assert "status" not in row, row  # a failed row says why
        assert isinstance(row["rss_kb_per_stream"], float)
        assert isinstance(row["cpu_us_per_stream_s"], float)
        assert row["left"] == 0 and row["release_s"] is not None
