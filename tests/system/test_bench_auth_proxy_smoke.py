"""The auth-proxy benchmark runs and counts correctly: one ask per cold start, none for a
warm one, and a storm asks once per credential — never a timing (those are the benchmark's
to print)."""

from __future__ import annotations

from support.bench_run import json_rows, run_bench


def test_auth_proxy_bench_smoke() -> None:
    done = run_bench("auth_proxy", "--json", "--smoke", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["row"]: row for row in json_rows(done)}
    assert set(rows) == {"anonymous", "warm", "cold", "storm"}
    assert all(rows[kind]["n"] == 10 for kind in ("anonymous", "warm", "cold"))
    assert rows["cold"]["asks_sent"] == 11  # ten cold starts and the warm grant's one ask
    storm = rows["storm"]
    assert (storm["n"], storm["users"], storm["asks"], storm["errors"]) == (100, 5, 5, [])
    assert "added ms" in done.stderr
