"""The hostile-client benchmarks run against both servers and count correctly — never a timing
threshold (the figures are `docs/performance.md`'s, at full scale).

Each runs at a small scale against `pushsvc serve` and against a `pushsvc web` beside a
`pushsvc aggregate` on Redis: every never-reading stream is ended as slow while the legitimate
subscriber misses nothing, the listings' callers and the bodies' attacker get their requests
in while the producer's POSTs all succeed.
"""

from __future__ import annotations

import pytest

from support.bench_run import json_rows, run_bench

SERVERS = pytest.mark.parametrize("redis", [False, True], ids=["serve", "redis"])


def _on(redis: bool) -> list[str]:
    return ["--redis"] if redis else []


@SERVERS
def test_hostile_streams_smoke(redis: bool) -> None:
    # A replay and a batch must outgrow the kernel's socket buffers to test anything: 2,000
    # updates of 1.4 kB, batches of 10,000 events.
    done = run_bench(
        "hostile_streams", "--attack", "replays", "--attack", "live", "--replays", "2",
        "--history", "2000", "--batches", "2", "--slow-client-timeout", "1s", "--json",
        *_on(redis), timeout=300, redis=redis,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json_rows(done)
    assert [row["attack"] for row in rows] == ["replays", "live"]
    for row in rows:
        assert row["server"] == ("web on Redis" if redis else "serve")
        assert row["slow"] == row["attackers"], row
        assert row["legit_missed"] == 0 and row["legit_in_order"] is True, row
        assert row["posts"] > 0


@SERVERS
def test_hostile_listings_smoke(redis: bool) -> None:
    done = run_bench(
        "hostile_listings", "--topics", "300", "--callers", "2", "--page", "100",
        "--seconds", "1", "--json", *_on(redis), timeout=180, redis=redis,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json_rows(done)
    assert row["server"] == ("web on Redis" if redis else "serve")
    assert row["listing_calls"] > 2  # each caller crawled past its first page
    assert row["baseline"]["posts"] > 0 and row["attacked"]["posts"] > 0


@SERVERS
def test_hostile_bodies_smoke(redis: bool) -> None:
    done = run_bench(
        "hostile_bodies", "--connections", "200", "--addresses", "2", "--seconds", "2",
        "--json", *_on(redis), timeout=180, redis=redis,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json_rows(done)
    assert row["server"] == ("web on Redis" if redis else "serve")
    assert row["attacked"]["posts"] > 0 and row["attacked"]["failed"] == 0, row
    assert row["attacker_opened"] >= 200
