"""The fan-out benchmark: pushsvc (embedded; Redis with W web workers) against Flask-SSE 1.0.

For each (server, N subscribers, rate R) it starts the server (and a redis-server of
its own on a free port where needed), runs the load generator (bench/loadgen, its own
process) to connect N subscribers on one topic, measures the idle server, publishes M
events at R/s (or `max`), and reports one row: subscribers connected, deliveries
expected/received, missing, duplicates, out-of-order, deliveries/s, publish-to-receive
latency p50/p90/p99/max, server RSS per connection, Redis connections.

    /work/.venv/bin/python bench/fanout.py --servers pushsvc-memory,pushsvc-redis-1,\
pushsvc-redis-2,flask-sse --subscribers 100,1000 --rate 100,max --events 200 --json

`--smoke` runs tiny counts (N=20, M=20) and exits 1 unless every delivery arrived exactly
once and in order; it never judges timings. Every scenario has deadlines, so every run
ends by itself. Flask-SSE is installed from PyPI into .bench-venvs/flask-sse on first use;
when that fails its rows are "skipped", not failed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from typing import Any

import orjson

from child import JsonLinesChild
from loadgen.process import raise_fd_limit
from pushsvc.lists import comma_list
from pushsvc.testing.procfs import rss_kb
from servers import Deployment, ensure_flask_sse_venv, flask_sse_versions, make_deployment

ALL_SERVERS = ("pushsvc-memory", "pushsvc-redis-1", "pushsvc-redis-2", "flask-sse")
COUNT_KEYS = ("missing", "duplicates", "out_of_order", "unexpected")


class RedisWatch:
    """The largest number of Redis connections seen while it runs (sampled every 100 ms)."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._stop = threading.Event()
        self.peak = deployment.redis_clients()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self.peak is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak or 0, self._deployment.redis_clients() or 0)

    def stop(self) -> int | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        return self.peak


def _wait_subscribed(deployment: Deployment, wanted: int, timeout: float) -> int | None:
    """Poll what the server reports until `wanted` subscribers are in, or `timeout`."""
    deadline = time.monotonic() + timeout
    seen = deployment.subscribed()
    while seen is not None and seen < wanted and time.monotonic() < deadline:
        time.sleep(0.05)  # the count lives in another process: there is no event to await
        seen = deployment.subscribed()
    return seen


def run_scenario(
    server: str, subscribers: int, rate: str, events: int, args: argparse.Namespace
) -> dict[str, Any]:
    row: dict[str, Any] = {"server": server, "subscribers": subscribers, "rate": rate,
                           "events": events}  # fmt: skip
    connect_timeout = args.connect_timeout or 20 + subscribers / 250
    drain_timeout = args.drain_timeout
    publish_timeout = (
        events / float(rate) + 30 if rate != "max" else 60 + events * subscribers / 20_000
    )
    try:
        deployment = make_deployment(server, subscribers=subscribers)
    except ValueError as exc:
        return {**row, "status": "error", "reason": str(exc)}
    if deployment.kind == "flask-sse":
        try:
            ensure_flask_sse_venv()
        except RuntimeError as exc:
            return {**row, "status": "skipped", "reason": f"no Flask-SSE venv: {exc}"}
        row["versions"] = flask_sse_versions()
    row["processes"] = deployment.workers
    loadgen: JsonLinesChild | None = None
    try:
        deployment.start()
        pids = deployment.pids()
        rss_before = rss_kb(pids)
        loadgen = JsonLinesChild("loadgen", name="load generator", argv=[
            "--wait-go",
            "--kind", deployment.kind,
            *[arg for url in deployment.stream_urls() for arg in ("--stream", url)],
            "--publish", deployment.publish_url(),
            "--subscribers", str(subscribers), "--events", str(events), "--rate", rate,
            "--connect-timeout", str(connect_timeout),
            "--publish-timeout", str(publish_timeout),
            "--drain-timeout", str(drain_timeout), "--idle-timeout", str(args.idle_timeout),
            *(["--http10"] if args.http10 else []),
            *([] if args.no_quickack else ["--quickack"]),
        ])  # fmt: skip
        opened = loadgen.record(timeout=connect_timeout + 30)
        server_count = _wait_subscribed(deployment, subscribers, connect_timeout)
        idle_connections = opened["ready"] if server_count is None else server_count
        time.sleep(args.settle)  # let the connected, idle server settle before measuring it
        pids = deployment.pids()  # gunicorn may have replaced a worker
        rss_after = rss_kb(pids)
        redis_idle = deployment.redis_clients()
        watch = RedisWatch(deployment)
        loadgen.tell(b"go")
        result = loadgen.record(timeout=publish_timeout + drain_timeout + 60)
        redis_peak = watch.stop()
    except (RuntimeError, OSError, KeyError) as exc:
        tail = loadgen.stderr_tail() if loadgen is not None else ""
        return {**row, "status": "error", "reason": f"{exc} {tail}".strip()[-2000:]}
    finally:
        if loadgen is not None:
            loadgen.close()
        deployment.stop()
    result.pop("phase", None)
    row.update(
        status="ok",
        idle_connections=idle_connections,
        rss_before_kb=rss_before,
        rss_after_kb=rss_after,
        rss_per_connection_kb=(
            round((rss_after - rss_before) / idle_connections, 2) if idle_connections else None
        ),
        redis_clients_idle=redis_idle,
        redis_clients_peak=redis_peak,
        **{k: v for k, v in result.items() if k not in ("subscribers", "events", "rate")},
    )
    return row


def exact(row: dict[str, Any]) -> bool:
    """Every subscriber got every event exactly once, in order (a smoke check, no timings)."""
    return (
        row.get("status") == "ok"
        and row["connected"] == row["subscribers"]
        and row["published"] == row["events"]
        and row["received"] == row["expected"]
        and all(row[key] == 0 for key in COUNT_KEYS)
        and not row["stream_errors"]
    )


_COLUMNS = (
    ("server", 16, lambda r: r["server"]),
    ("N", 6, lambda r: r["subscribers"]),
    ("R", 4, lambda r: r["rate"]),
    ("conn", 6, lambda r: r["connected"]),
    ("expected", 9, lambda r: r["expected"]),
    ("received", 9, lambda r: r["received"]),
    ("miss", 7, lambda r: r["missing"]),
    ("dup", 5, lambda r: r["duplicates"]),
    ("ooo", 5, lambda r: r["out_of_order"]),
    ("deliv/s", 9, lambda r: f"{r['deliveries_per_s']:.0f}"),
    ("pub/s", 7, lambda r: f"{r['publish_per_s']:.0f}"),
    ("p50ms", 8, lambda r: r["latency_ms"]["p50"]),
    ("p90ms", 8, lambda r: r["latency_ms"]["p90"]),
    ("p99ms", 8, lambda r: r["latency_ms"]["p99"]),
    ("maxms", 8, lambda r: r["latency_ms"]["max"]),
    ("KB/conn", 8, lambda r: r["rss_per_connection_kb"]),
    ("redis", 11, lambda r: f"{r['redis_clients_idle']}/{r['redis_clients_peak']}"
     if r["redis_clients_idle"] is not None else "-"),
)  # fmt: skip


def table_header() -> str:
    return " ".join(f"{name:>{width}}" for name, width, _ in _COLUMNS)


def table_row(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        head = f"{row['server']:>16} {row['subscribers']:>6} {row['rate']:>4}"
        return f"{head} {row.get('status', '?').upper()}: {row.get('reason', '')[:300]}"
    cells = []
    for _, width, get in _COLUMNS:
        value = get(row)
        if isinstance(value, float):
            value = f"{value:.1f}" if value < 1000 else f"{value:.0f}"
        cells.append(f"{'-' if value is None else value!s:>{width}}")
    line = " ".join(cells)
    problems = {key: row[key] for key in ("connect_errors", "publish_errors", "stream_errors")
                if row[key]}  # fmt: skip
    return f"{line}\n{'':>16} {problems}" if problems else line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        type=comma_list,
        default=None,
        help=f"comma-separated; default {','.join(ALL_SERVERS)}; also "
        "pushsvc-redis-W, pushsvc-workers-W and flask-sse-W for W workers",
    )
    parser.add_argument("--subscribers", "-n", type=comma_list, default=None, help="e.g. 100,1000")
    parser.add_argument(
        "--rate", "-r", type=comma_list, default=None, help="events/s or max: 100,max"
    )
    parser.add_argument("--events", "-m", type=int, default=None, help="events per scenario")
    parser.add_argument(
        "--json", action="store_true", help="JSON lines on stdout (the table then goes to stderr)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="N=20, M=20, R=100,max; exit 1 unless every count is exact",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every count is exact (implied by --smoke)",
    )
    parser.add_argument("--http10", action="store_true", help="HTTP/1.0 streams (no chunking)")
    parser.add_argument(
        "--no-quickack",
        action="store_true",
        help="publish like a plain client: no TCP_QUICKACK (see README: Nagle)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds idle before RSS is read (default 2, smoke 0.2)",
    )
    parser.add_argument("--connect-timeout", type=float, default=None)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    servers = args.servers or list(ALL_SERVERS)
    sizes = [int(n) for n in args.subscribers or (["20"] if args.smoke else ["100", "1000"])]
    rates = args.rate or ["100", "max"]
    events = args.events or (20 if args.smoke else 200)
    if args.settle is None:
        args.settle = 0.2 if args.smoke else 2.0
    if args.smoke:
        args.drain_timeout = min(args.drain_timeout, 10.0)
    for rate in rates:
        if rate != "max" and not float(rate) > 0:
            raise SystemExit(f"bad rate {rate!r}")
    raise_fd_limit()
    table = sys.stderr if args.json else sys.stdout
    print(table_header(), file=table, flush=True)
    failed = False
    for server in servers:
        for n in sizes:
            for rate in rates:
                row = run_scenario(server, n, rate, events, args)
                print(table_row(row), file=table, flush=True)
                if args.json:
                    sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
                    sys.stdout.flush()
                if row["status"] == "error" or (
                    (args.smoke or args.check) and row["status"] == "ok" and not exact(row)
                ):
                    failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
