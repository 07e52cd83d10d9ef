"""What one /metrics for several processes costs (prometheus_client's multiprocess mode, as
`serve --workers N` runs it): a Counter increment, a POST of one event through the app (the
producer path: `pushsvc_events_accepted_total` and its neighbours), and the copy of one
process's scrape-time readings into its files (`FileMirror.flush`, once a second), each without
and with `PROMETHEUS_MULTIPROC_DIR`. prometheus_client picks its mode when imported, so each
mode runs in a child process of its own; the modes take turns, round by round (figures on a
shared machine drift over minutes: compare within a round). Times are this process's CPU
time, not the wall clock's, so that what else runs on the machine counts less.

    python -m bench.metrics_counter --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INCREMENTS = 200_000


def _child(posts: int) -> dict[str, float]:
    from gevent import monkey

    monkey.patch_all()  # as the serving commands do: prometheus_client's lock is gevent's then
    from prometheus_client import Counter

    from pushsvc.app import create_app

    counter = Counter("bench_increments", "increments", registry=None)
    start = time.process_time_ns()
    for _ in range(INCREMENTS):
        counter.inc()
    inc_ns = (time.process_time_ns() - start) / INCREMENTS

    app = create_app({"tick": 0})
    client = app.test_client()
    body = b'{"value": 1.5}'
    headers = {"Content-Type": "application/json"}
    for _ in range(200):  # warm up: imports, the topic's first event
        client.post("/topics/bench/events", data=body, headers=headers)
    start = time.process_time_ns()
    for _ in range(posts):
        reply = client.post("/topics/bench/events", data=body, headers=headers)
        assert reply.status_code == 202, reply.data
    post_us = (time.process_time_ns() - start) / posts / 1000
    runtime = app.extensions["pushsvc"]
    accepted = runtime.metrics.events_accepted._value.get()
    assert accepted == posts + 200, accepted
    flush_us = 0.0
    mirror = runtime.metrics.mirror
    if mirror is not None:
        start = time.process_time_ns()
        for _ in range(200):
            mirror.flush()
        flush_us = (time.process_time_ns() - start) / 200 / 1000
    runtime.close()
    return {"inc_ns": inc_ns, "post_us": post_us, "flush_us": flush_us}


def _run(shared: bool, posts: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as directory:
        if shared:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        out = subprocess.run(
            [sys.executable, "-m", "bench.metrics_counter", "--child", "--posts", str(posts)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.posts)))
        return
    rows: dict[str, list[dict[str, float]]] = {"one process": [], "shared": []}
    print("round  mode         inc ns   POST us  flush us")
    for round_ in range(1, args.rounds + 1):
        for mode, shared in (("one process", False), ("shared", True)):
            row = _run(shared, args.posts)
            rows[mode].append(row)
            print(
                f"{round_:5d}  {mode:11s} {row['inc_ns']:7.0f} {row['post_us']:9.1f}"
                f" {row['flush_us']:9.1f}"
            )
    print("median")
    for mode, runs in rows.items():
        print(
            f"       {mode:11s} {statistics.median(r['inc_ns'] for r in runs):7.0f}"
            f" {statistics.median(r['post_us'] for r in runs):9.1f}"
            f" {statistics.median(r['flush_us'] for r in runs):9.1f}"
        )


if __name__ == "__main__":
    main()
