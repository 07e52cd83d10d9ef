"""`bench/delta_bytes.py --smoke` runs and reconstructs exactly — never a size threshold: a
real server, the real demo, two real streams per workload, the delta one made whole again by
pushsvc's client code and compared with the plain one message for message."""

from __future__ import annotations

from support.bench_run import json_rows, run_bench


def test_delta_bytes_smoke() -> None:
    done = run_bench("delta_bytes", "--smoke", "--json", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json_rows(done)
    assert [row["workload"] for row in rows] == ["demo", "tour"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["exact"] is True
        assert row["updates"] >= 60
        assert 0 < row["patched"] < row["updates"]  # each topic's first update is whole
