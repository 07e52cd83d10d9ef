"""The Redis Cluster scale benchmark runs on real clusters of one and two primaries, every
update it asked for is published once, and its per-primary figures add up.

Timings are never asserted: this only keeps ``bench/cluster.py`` from rotting. The bench
starts its clusters itself (no replicas), so the `redis_cluster` fixture is not used.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.bench_run import json_rows, run_bench

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def _smoke(*args: str) -> list[dict[str, Any]]:
    # About 8 s alone (two clusters start and stop), longer on two shared cores.
    proc = run_bench("cluster", "--smoke", "--json", *args, timeout=240, redis=True)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return json_rows(proc)


@pytest.fixture(scope="module")
def smoke() -> list[dict[str, Any]]:
    return _smoke()


def _kind(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [row for row in rows if row["kind"] == kind]


def test_the_header_says_where_and_what_it_ran(smoke: list[dict[str, Any]]) -> None:
    (header,) = _kind(smoke, "header")
    assert {"platform", "nproc", "python", "date"} <= header["machine"].keys()
    assert header["partitions"] == 16 and header["topics"] == 16


def test_every_update_is_published_once_on_each_cluster(smoke: list[dict[str, Any]]) -> None:
    runs = _kind(smoke, "run")
    assert [row["primaries"] for row in runs] == ["1", "2"]
    for row in runs:
        assert row["status"] == "ok", row
        assert row["updates"] == row["expected_updates"] > 0, row
        # One update per event: the aggregator publishes a draft per event.
        assert row["updates"] == row["entries_applied"] * row["batch"], row
        assert row["redis_cpu_s"] > 0 and row["updates_per_redis_core_s"] > 0, row


def test_the_figures_of_the_primaries_add_up(smoke: list[dict[str, Any]]) -> None:
    for row in _kind(smoke, "run"):
        primaries = row["per_primary"]
        assert len(primaries) == int(row["primaries"])
        assert sum(p["partitions"] for p in primaries) == row["partitions"]
        assert sum(p["updates"] for p in primaries) == row["updates"]
        assert sum(p["keys"] for p in primaries) == row["keys"]
        assert sum(p["redis_cpu_s"] for p in primaries) == pytest.approx(
            row["redis_cpu_s"], abs=0.002
        )
        assert max(abs(p["keys_vs_mean_pct"]) for p in primaries) == row["keys_spread_pct"]


def test_the_partitions_split_evenly_over_two_primaries(smoke: list[dict[str, Any]]) -> None:
    # A count, by construction (pushsvc.broker.redis.slots): 16 partitions, 8 on each.
    (two,) = [row for row in _kind(smoke, "run") if row["primaries"] == "2"]
    assert [p["partitions"] for p in two["per_primary"]] == [8, 8]
    assert two["keys_spread_pct"] == 0


def test_updates_go_by_sharded_pubsub_from_the_publish_script(
    smoke: list[dict[str, Any]],
) -> None:
    for row in _kind(smoke, "run"):
        for primary in row["per_primary"]:
            commands = primary["commandstats"]
            assert commands["evalsha"]["calls"] > 0, commands
            assert commands["spublish"]["calls"] > 0, commands
            assert "publish" not in commands, commands


def test_the_summary_compares_with_one_primary(smoke: list[dict[str, Any]]) -> None:
    summaries = {row["primaries"]: row for row in _kind(smoke, "summary")}
    assert summaries.keys() == {"1", "2"}
    assert summaries["1"]["vs_one_primary"] == 1.0
    assert summaries["2"]["vs_one_primary"] > 0
    for summary in summaries.values():
        assert isinstance(summary["linear"], bool) and isinstance(summary["even"], bool)


def test_phased_gives_the_append_and_publish_figures() -> None:
    for row in _kind(_smoke("--phased"), "run"):
        assert row["status"] == "ok" and row["phased"], row
        assert row["updates"] == row["expected_updates"], row
        assert row["append_cpu_us_per_update"] > 0 and row["publish_cpu_us_per_update"] > 0
