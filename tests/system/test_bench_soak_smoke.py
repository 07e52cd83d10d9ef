"""The soak runs, prints its lines and a verdict, and counts correctly — never a timing or a
flatness threshold (that is the soak's own verdict, on a long run).

`bench/soak.py --smoke` starts a real server (on a redis-server of its own, or the embedded
broker), churns streams, publishes and keeps long-lived subscribers for a few seconds; each
long-lived subscriber must have received every accepted event of its topics exactly once.
(Its per-topic checker is tested with byte tables in test_bench_loadgen.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from support.bench_run import json_rows, run_bench


def _smoke(broker: str) -> tuple[list[dict[str, Any]], str]:
    args = ("--smoke", "--json", "--broker", broker, "--seconds", "5", "--interval", "1")
    done = run_bench("soak", *args, timeout=120, redis=broker == "redis")
    assert done.returncode == 0, done.stderr[-3000:]
    return json_rows(done), done.stderr


@pytest.mark.parametrize("broker", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_soak_smoke(broker: str) -> None:
    rows, table = _smoke(broker)
    samples = [r for r in rows if r["phase"] == "sample"]
    assert len(samples) >= 3, rows
    for row in samples:
        assert row["rss_kb"] > 0 and row["fds"] > 0
        assert row["greenlets"] >= 1 and row["subscribers"] >= 3  # the long-lived ones, at least
        assert (row["redis_used_memory"] is not None) is (broker == "redis")
    assert "verdict" in table and "RSS MB" in table
    verdict = rows[-1]
    assert verdict["phase"] == "verdict"
    assert set(verdict["flat"]) == {"rss_kb", "fds", "greenlets", "subscribers"}
    assert verdict["accepted"] > 0 and verdict["churn"]["started"] > 0
    assert verdict["churn"]["errors"] == {} and verdict["publish_errors"] == {}
    assert verdict["exact"] is True
    subscribers = verdict["subscribers"]
    assert len(subscribers) == 3
    for subscriber in subscribers:
        assert subscriber["received"] == subscriber["distinct"] > 0
        wrong = ("missing", "duplicates", "out_of_order", "unexpected", "gaps", "id_regressions")
        assert {key: subscriber[key] for key in wrong} == dict.fromkeys(wrong, 0)
    # Every topic: the `*` subscriber received each accepted event once.
    assert subscribers[0]["selectors"] == ["*"]
    assert subscribers[0]["received"] == verdict["accepted"]
