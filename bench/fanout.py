"""The fan-out benchmark: pushsvc (embedded; Redis with W web workers) against Flask-SSE 1.0,
nginx + nchan and sse-starlette.

For each (server, N subscribers, rate R, client C) it starts the server (and a redis-server
of its own on a free port where needed), runs the load generator (bench/loadgen, its own
process) to connect N subscribers on one topic, measures the idle server, publishes M
events at R/s (or `max`), and reports one row: subscribers connected, deliveries
expected/received, missing, duplicates, out-of-order, deliveries/s, publish-to-receive
latency p50/p90/p99/max, server CPU per delivery (user + system CPU of the server's
processes from /proc, from the first publish to the end of the drain, ÷ deliveries; Redis's
own CPU beside it, and the load generator's: what the same client spends per delivery),
for one pushsvc process its socket writes to streams (`pushsvc_delivery_seconds`' count over
the same span) as deliveries per write and CPU per write, server RSS per connection, Redis
connections.

The client C: `count` (loadgen `--mode deliveries`: every message parsed, its value tallied),
`json` (the same, each update's data parsed as a browser's `JSON.parse` would: the whole
document into objects with the stdlib parser), or `c` (the C subscribers of
loadgen/sse_clients.c, counting as `count` does for less CPU; pushsvc only).

    python -m bench.fanout --servers pushsvc-memory,pushsvc-redis-1,\
pushsvc-redis-2,flask-sse --subscribers 100,1000 --rate 100,max --events 200 --json
    # server CPU per delivery at 50 events/s and at max, both clients, three rounds with the
    # servers taking turns; --pushsvc-src runs another tree's pushsvc (a before/after)
    python -m bench.fanout --servers pushsvc-memory,flask-sse --subscribers 500,1000 \
        --rate 50,max --client count,json --rounds 3 [--pushsvc-src /path/to/other/src]

`--messages` relays an application message instead, the same 100 bytes on every server:
pushsvc's `/topics/T/messages` (POSTed as a message's data, delivered as `event: message`),
nchan's and sse-starlette's streams (POSTed as they are, delivered as unnamed messages);
Flask-SSE, which re-encodes what it relays, is skipped. Every client reads it:

    python -m bench.fanout --messages --servers pushsvc-memory,nchan,sse-starlette \
        --subscribers 500,5000 --rate 50 --client c --rounds 3

`pushsvc-mercure` is pushsvc's Mercure hub (`serve --mercure anonymous`) on the same embedded
core, relaying the same message (`--messages` only): POSTed to /.well-known/mercure as an
update's `data` with a publisher's token, read by subscribers that match its topic IRI, each
delivery an unnamed message with the update's `id:`. Beside `pushsvc-memory` it measures what
the protocol adapter costs per delivery:

    python -m bench.fanout --messages --servers pushsvc-memory,pushsvc-mercure \
        --subscribers 500,5000 --rate 50 --client c --rounds 3

`--smoke` runs tiny counts (N=20, M=20) and exits 1 unless every delivery arrived exactly
once and in order; it never judges timings. Every scenario has deadlines, so every run
ends by itself. Flask-SSE and sse-starlette are installed from PyPI into .bench-venvs/NAME
on first use; when that fails their rows are "skipped", not failed. `nchan` (`nchan-W`: W
nginx workers) is the system's nginx with nchan (Debian: nginx, libnginx-mod-nchan;
bench/peers/nchan.conf); without them its rows are "skipped" too. Its CPU per delivery
counts the master and every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.procfs import cpu_seconds, rss_kb

from bench.child import JsonLinesChild, PublishedCSubscribers, c_subscribers, run_scenario
from bench.common import Report
from bench.common import parser as common_parser
from bench.loadgen.process import raise_fd_limit
from bench.servers import (
    Nchan,
    ServerUnderTest,
    ensure_venv,
    make_deployment,
    nginx_version,
    use_pushsvc_src,
    venv_versions,
)
from pushsvc.core.lists import comma_list

ALL_SERVERS = ("pushsvc-memory", "pushsvc-redis-1", "pushsvc-redis-2", "flask-sse", "nchan")
COUNT_KEYS = ("missing", "duplicates", "out_of_order", "unexpected")
CLIENT_MODES = {"count": "deliveries", "json": "json", "c": "deliveries", "gzip": "deliveries"}
"""--client → the load generator's --mode (loadgen/modes.py); `c`: the C subscribers
(loadgen/sse_clients.c; pushsvc's updates, or every server's with --messages), the same
counts as `count` for less of the client's CPU, with a Python load generator without streams
publishing. `gzip`: `count` offering gzip as a browser does (`Accept-Encoding: gzip, deflate,
br`), decoding what comes gzipped: B/dlv is then the compressed bytes on the wire (a peer that
does not compress sends them plain)."""


def _cpu(pids: list[int]) -> dict[int, float]:
    return {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}


def _cpu_spent(before: dict[int, float], pids: list[int]) -> float:
    """CPU seconds `pids` spent since `before` (a process that came or went counts what
    /proc still shows of it)."""
    after = _cpu(pids)
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


class RedisWatch:
    """The largest number of Redis connections seen while it runs (sampled every 100 ms)."""

    def __init__(self, deployment: ServerUnderTest) -> None:
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


def _wait_subscribed(deployment: ServerUnderTest, wanted: int, timeout: float) -> int | None:
    """Poll what the server reports until `wanted` subscribers are in, or `timeout`."""
    deadline = time.monotonic() + timeout
    seen = deployment.subscribed()
    while seen is not None and seen < wanted and time.monotonic() < deadline:
        time.sleep(0.05)  # the count lives in another process: there is no event to await
        seen = deployment.subscribed()
    return seen


def scenario(
    server: str, subscribers: int, rate: str, client: str, events: int, args: argparse.Namespace
) -> dict[str, Any]:
    row: dict[str, Any] = {"server": server, "subscribers": subscribers, "rate": rate,
                           "client": client, "events": events,
                           "payload": "message" if args.messages else "update"}  # fmt: skip
    connect_timeout = args.connect_timeout or 20 + subscribers / 250
    publish_timeout = (
        events / float(rate) + 30 if rate != "max" else 60 + events * subscribers / 20_000
    )
    try:
        deployment = make_deployment(server, subscribers=subscribers)
    except ValueError as exc:
        return {**row, "status": "error", "reason": str(exc)}
    if args.messages and deployment.kind == "flask-sse":
        return {**row, "status": "skipped", "reason": "Flask-SSE re-encodes what it relays"}
    if not args.messages and deployment.kind == "pushsvc-mercure":
        return {**row, "status": "skipped", "reason": "the Mercure hub relays messages only"}
    if deployment.venv is not None:
        try:
            ensure_venv(deployment.venv)
        except RuntimeError as exc:
            return {**row, "status": "skipped", "reason": f"no {deployment.venv.name} venv: {exc}"}
        row["versions"] = venv_versions(deployment.venv)
    if isinstance(deployment, Nchan):
        if (why := Nchan.missing()) is not None:
            return {**row, "status": "skipped", "reason": why}
        row["versions"] = nginx_version()
    row["processes"] = deployment.workers

    if client == "c" and ((deployment.kind != "pushsvc" and not args.messages) or args.http10):
        why = "the C client reads HTTP/1.1, and a peer's stream with --messages only"
        return {**row, "status": "skipped", "reason": why}
    kind, payload = deployment.kind, args.peer_payload
    if args.messages:
        kind = "pushsvc-messages" if kind == "pushsvc" else kind
        payload = "message"

    def steps(loadgen: Callable[..., JsonLinesChild]) -> dict[str, Any]:
        urls = deployment.message_urls() if args.messages else deployment.stream_urls()
        streams = [f"{url}{args.query}" for url in urls]
        rss_before = rss_kb(deployment.pids())
        timeouts = {"connect": connect_timeout, "publish": publish_timeout,
                    "drain": args.drain_timeout, "idle": args.idle_timeout}  # fmt: skip
        child: JsonLinesChild | PublishedCSubscribers = loadgen(
            CLIENT_MODES[client], streams, 0 if client == "c" else subscribers, events, timeouts,
            "--wait-go", "--hold", "--kind", kind, "--publish", deployment.publish_url(),
            "--rate", rate, *(["--http10"] if args.http10 else []),
            *[arg for line in deployment.publish_headers() for arg in ("--publish-header", line)],
            *(["--gzip"] if client == "gzip" else []),
            *(["--payload", payload] if kind != "pushsvc" else []),
            *([] if args.no_quickack else ["--quickack"]),
        )  # fmt: skip
        if client == "c":
            readers = c_subscribers(
                streams, subscribers, events, timeouts, "--wait-go", "--hold",
                *(["--messages"] if args.messages else []),
            )  # fmt: skip
            child = closing[0] = PublishedCSubscribers(child, readers)
        opened = child.record(timeout=connect_timeout + 30)
        server_count = _wait_subscribed(deployment, subscribers, connect_timeout)
        idle_connections = opened["ready"] if server_count is None else server_count
        time.sleep(args.settle)  # let the connected, idle server settle before measuring it
        rss_after = rss_kb(deployment.pids())  # gunicorn may have replaced a worker
        redis_idle = deployment.redis_clients()
        watch = RedisWatch(deployment)
        server_pids = deployment.pids()
        redis_pids = [deployment.redis.pid] if deployment.redis and deployment.redis.pid else []
        client_pids = child.pids
        writes_before = deployment.writes()
        cpu_before, redis_before = _cpu(server_pids), _cpu(redis_pids)
        client_before = _cpu(client_pids)
        child.tell(b"go")
        result = child.record(phase="drained", timeout=publish_timeout + args.drain_timeout + 60)
        server_cpu = _cpu_spent(cpu_before, server_pids)
        writes_after = deployment.writes()
        writes = (
            None if writes_before is None or writes_after is None else writes_after - writes_before
        )
        redis_cpu = _cpu_spent(redis_before, redis_pids)
        client_cpu = _cpu_spent(client_before, client_pids)
        redis_peak = watch.stop()
        # Only now may the subscribers leave: a server ends a stream as soon as its client
        # goes, and N streams ending is not part of delivering to them.
        child.tell(b"measured")
        result |= child.record(phase="result", timeout=60)
        per_connection = (rss_after - rss_before) / idle_connections if idle_connections else None
        delivered = result.get("distinct") or 0
        return {
            "server_cpu_s": round(server_cpu, 3),
            "cpu_us_per_delivery": round(1e6 * server_cpu / delivered, 2) if delivered else None,
            "redis_cpu_us_per_delivery": (
                round(1e6 * redis_cpu / delivered, 2) if delivered and redis_pids else None
            ),
            # The load generator's own CPU (publisher and subscribers): a server whose updates
            # cost the client more to parse waits longer in the client's queue.
            "client_cpu_us_per_delivery": (
                round(1e6 * client_cpu / delivered, 2) if delivered else None
            ),
            "bytes_per_delivery": round(result["bytes"] / delivered) if delivered else None,
            # How many deliveries a socket write carried: a server that falls behind writes
            # several per send, for less CPU per delivery (compare servers at equal figures).
            "deliveries_per_write": round(delivered / writes, 2) if delivered and writes else None,
            "cpu_us_per_write": round(1e6 * server_cpu / writes, 2) if writes else None,
            "idle_connections": idle_connections,
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "rss_per_connection_kb": None if per_connection is None else round(per_connection, 2),
            "redis_clients_idle": redis_idle,
            "redis_clients_peak": redis_peak,
            **{
                k: v
                for k, v in result.items()
                if k not in ("phase", "subscribers", "events", "rate")
            },
        }

    closing: list[PublishedCSubscribers | None] = [None]  # the C subscribers, when started
    try:
        return run_scenario(row, deployment, steps)
    finally:
        if closing[0] is not None:
            closing[0].subscribers.close()


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


COLUMNS = (
    ("server", 16, "server"), ("N", 6, "subscribers"), ("R", 4, "rate"), ("C", 6, "client"),
    ("conn", 6, "connected"), ("expected", 9, "expected"), ("received", 9, "received"),
    ("miss", 7, "missing"), ("dup", 5, "duplicates"), ("ooo", 5, "out_of_order"),
    ("deliv/s", 9, "deliveries_per_s"), ("pub/s", 7, "publish_per_s"),
    ("p50ms", 8, lambda r: r["latency_ms"]["p50"]), ("p90ms", 8, lambda r: r["latency_ms"]["p90"]),
    ("p99ms", 8, lambda r: r["latency_ms"]["p99"]), ("maxms", 8, lambda r: r["latency_ms"]["max"]),
    ("µs/dlv", 7, "cpu_us_per_delivery"), ("redis µs", 9, "redis_cpu_us_per_delivery"),
    ("cli µs", 7, "client_cpu_us_per_delivery"),
    ("B/dlv", 6, "bytes_per_delivery"), ("dlv/wr", 7, "deliveries_per_write"),
    ("µs/wr", 7, "cpu_us_per_write"), ("KB/conn", 8, "rss_per_connection_kb"),
    ("redis", 11, lambda r: f"{r['redis_clients_idle']}/{r['redis_clients_peak']}"
     if r["redis_clients_idle"] is not None else None),
)  # fmt: skip


def notes(row: dict[str, Any]) -> list[str]:
    problems = {key: row[key] for key in ("connect_errors", "publish_errors", "stream_errors")
                if row[key]}  # fmt: skip
    return [str(problems)] if problems else []


def _parser() -> argparse.ArgumentParser:
    parser = common_parser(__doc__, smoke="N=20, M=20, R=100,max")
    add = parser.add_argument
    add("--servers", type=comma_list, default=None,
        help=f"comma-separated; default {','.join(ALL_SERVERS)}; also sse-starlette, "
        "pushsvc-mercure (with --messages), and "
        "pushsvc-redis-W, pushsvc-workers-W, flask-sse-W and nchan-W for W workers")  # fmt: skip
    add("--subscribers", "-n", type=comma_list, default=None, help="e.g. 100,1000")
    add("--rate", "-r", type=comma_list, default=None, help="events/s or max: 100,max")
    add("--events", "-m", type=int, default=None, help="events per scenario")
    add(
        "--client",
        "-c",
        type=comma_list,
        default=None,
        help="count (default), json (a subscriber that JSON-parses every update), c (the C "
        "subscribers, pushsvc only), gzip (count, offering gzip as a browser does); "
        "comma-separated for several",
    )
    add("--query", default="", metavar="?K=V",
        help="appended to every stream URL, e.g. '?precision=4' (pushsvc)")  # fmt: skip
    add(
        "--pushsvc-src",
        default=None,
        metavar="DIR",
        help="run pushsvc from this src/ directory (compare two trees in one session)",
    )
    add("--peer-payload", choices=("plain", "stats"), default="plain",
        help="what peers (Flask-SSE, nchan) are sent: the event (default), or the event "
        "with three windows of statistics, as large as a pushsvc update, so that the "
        "same client does as much per delivery for every server")  # fmt: skip
    add("--messages", action="store_true",
        help="relay a 100-byte application message (pushsvc's /messages, its Mercure hub, "
        "nchan, sse-starlette) instead of updates")  # fmt: skip
    add("--http10", action="store_true", help="HTTP/1.0 streams (no chunking)")
    add("--no-quickack", action="store_true",
        help="publish like a plain client: no TCP_QUICKACK (see README: Nagle)")  # fmt: skip
    add("--settle", type=float, default=None,
        help="seconds idle before RSS is read (default 2, smoke 0.2)")  # fmt: skip
    add("--rounds", type=int, default=1,
        help="repeat every scenario K times, the servers taking turns within each "
        "(compare within a round: a shared machine drifts); JSON rows have `round`")  # fmt: skip
    add("--connect-timeout", type=float, default=None)
    add("--drain-timeout", type=float, default=30.0)
    add("--idle-timeout", type=float, default=5.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    servers = args.servers or list(ALL_SERVERS)
    sizes = [int(n) for n in args.subscribers or (["20"] if args.smoke else ["100", "1000"])]
    rates = args.rate or ["100", "max"]
    clients = args.client or ["count"]
    for client in clients:
        if client not in CLIENT_MODES:
            raise SystemExit(f"bad client {client!r}: {' or '.join(CLIENT_MODES)}")
    if args.pushsvc_src:
        use_pushsvc_src(args.pushsvc_src)
    events = args.events or (20 if args.smoke else 200)
    if args.settle is None:
        args.settle = 0.2 if args.smoke else 2.0
    if args.smoke:
        args.drain_timeout = min(args.drain_timeout, 10.0)
    for rate in rates:
        if rate != "max" and not float(rate) > 0:
            raise SystemExit(f"bad rate {rate!r}")
    if args.rounds < 1:
        raise SystemExit(f"bad --rounds {args.rounds}: at least 1")
    raise_fd_limit()
    report = Report(COLUMNS, json=args.json, ident=3, notes=notes)
    report.header()
    failed = False
    # One round is every server through every scenario; with --rounds the servers take turns
    # scenario by scenario, so that each comparison is between runs minutes apart.
    plan = (
        [(server, n, rate) for server in servers for n in sizes for rate in rates]
        if args.rounds == 1
        else [(server, n, rate) for n in sizes for rate in rates for server in servers]
    )
    for round_ in range(1, args.rounds + 1):
        for server, n, rate in plan:
            for client in clients:
                row = scenario(server, n, rate, client, events, args)
                if args.rounds > 1:
                    row["round"] = round_
                report.row(row)
                if row["status"] == "error" or (
                    (args.smoke or args.check) and row["status"] == "ok" and not exact(row)
                ):
                    failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
