"""The many-streams benchmark runs and counts correctly — never a timing threshold.

`bench/many_streams.py --smoke` starts `pushsvc serve --workers 2` (its private redis-server)
and two load generators, each connecting from its own 127.0.0.x: every stream must be counted
by the server and get every broadcast update exactly once, in order — with the Python
subscribers and with the C ones (`--client c`).
"""

from __future__ import annotations

import pytest
from bench.loadgen.cclient import compiler

from support.bench_run import json_rows, run_bench

pytestmark = [pytest.mark.redis, pytest.mark.process]


@pytest.mark.parametrize("client", ["python", "c"])
def test_many_streams_smoke(client: str) -> None:
    """Against a real deployment, with either client (the C one compiled on first use): every
    stream counted, every update once and in order on every stream."""
    if client == "c" and compiler() is None:
        pytest.skip("no C compiler (cc or gcc): the C client cannot be built")
    argv = ("many_streams", "--smoke", "--client", client, "--json")
    done = run_bench(*argv, timeout=180, redis=True)
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = json_rows(done)
    assert row["status"] == "ok", row
    assert (row["streams"], row["workers"], row["loadgens"]) == (300, 2, 2)
    assert row["ready"] == 300 and row["counted"] == 300
    assert row["published"] == row["events"] == 5
    assert row["received"] == row["expected"] == 300 * 5
    assert (row["missing"], row["duplicates"], row["out_of_order"], row["unexpected"]) == (
        0, 0, 0, 0,
    )  # fmt: skip
    assert row["connect_errors"] == {} and row["stream_errors"] == {}
    assert row["rss_kb_per_stream"] > 0 and row["p99_ms"] is not None  # reported, not judged
    if client == "c":
        assert row["client"] == "c" and row["id_regressions"] == 0


def test_many_streams_storm_smoke() -> None:
    """`--storm`: every web worker is stopped mid-broadcast and started again by the
    supervisor; each C client comes back after its jittered `retry:` with Last-Event-ID, and
    still gets every update exactly once and in order, with no gap snapshot."""
    if compiler() is None:
        pytest.skip("no C compiler (cc or gcc): the C client cannot be built")
    done = run_bench("many_streams", "--smoke", "--client", "c", "--storm", "--json",
                     timeout=180, redis=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = json_rows(done)
    assert row["status"] == "ok", row
    assert row["published"] == row["events"] == 20
    assert row["received"] == row["expected"] == 300 * 20
    assert (row["missing"], row["duplicates"], row["out_of_order"], row["unexpected"]) == (
        0, 0, 0, 0,
    )  # fmt: skip
    assert row["id_regressions"] == 0 and row["stream_errors"] == {}
    # Every client lost its stream and came back; none is down, none was told of a gap.
    assert row["reconnects"] >= 300 and row["still_down"] == 0 and row["gaps"] == 0
    low, high = row["retry_ms"]
    assert 3000 <= low < high < 6000  # the server's default 3 s, jittered up to twice that
    assert 0 < row["back_s"] <= row["current_s"]
