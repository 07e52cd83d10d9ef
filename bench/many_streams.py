"""Many streams on one machine: `pushsvc serve --workers W` holding N open streams (100,000 on a
2-core machine), idle, then broadcast to.

One process may hold 20,000 open files here (the hard limit), so N streams take several
processes on both sides:

* the server: `pushsvc serve --workers W` (W `pushsvc web` processes sharing one port with
  SO_REUSEPORT, one `pushsvc aggregate` and a private redis-server). Each web process refuses
  streams past what its open-file limit holds (`PUSHSVC_MAX_STREAMS`, lowered to fit), so W
  must leave room: ≥ N / 15,000.
* the clients: P load generators (bench/loadgen, `--subscribers N/P` each, at most 18,000 so that
  each stays within its own open-file limit), each connecting from its own source address
  127.0.0.(2+i): the kernel gives each (source address, destination) pair its own ~28,000
  ephemeral ports (net.ipv4.ip_local_port_range), which one address would run out of.

The run, once every stream is live and the server counts them all (`pushsvc_subscribers`):

* idle: the server's CPU (web workers, aggregator and Redis, from /proc) over `--idle`
  seconds in which nothing is published: only heartbeats are written (every `--heartbeat`,
  the server's default 15 s; with `--heartbeat 600s` none falls due, which leaves what
  idle streams cost besides their heartbeats). Its RSS per stream: the web workers' RSS
  over theirs before the first connect.
* broadcast: `--events` updates of the one topic every stream watches, at `--rate` per
  second, published by the first load generator. Every stream must get every update once and
  in order; the publish-to-receive latency's p99 is reported per load generator, and the
  largest of those (the p99 over all streams is at most that).

* storm (`--storm`, C clients only): the broadcast as above, and `--storm-at` seconds into it
  every web worker is stopped at once (SIGTERM; the supervisor starts each again). Each
  client comes back as EventSource does, after the `retry:` the server sent it (jittered:
  `--retry`) and with its `Last-Event-ID`, while the publisher posts each event until one of
  the workers accepts it (under an `Idempotency-Key`). Every stream must still get every
  update once and in order. Reported: `back s`, from the stop until every client has a
  stream again (its newest response head); `current s`, until every client also holds every
  update published before that moment; the peak RSS of everything the server runs (the new
  workers included), and the server's CPU over the broadcast, the stopped workers' included.

The clients (`--client`): `python` (bench/loadgen, `--mode deliveries`; the first one also
publishes) or `c` (bench/loadgen/sse_clients.c, compiled with the system's `cc` on first use:
the same counts and latencies for a fraction of the CPU per delivery, which on a machine the
server shares with its clients is CPU the server gets back; a Python load generator without
streams publishes). With `c` each stream's update ids must also rise (`id_regressions`).

    python -m bench.many_streams --streams 100000 --workers 8 --idle 300 --events 60 --rate 1
    python -m bench.many_streams --streams 100000 --workers 8 --idle 60 --events 60 --rate 1 \
        --client c
    python -m bench.many_streams --streams 100000 --workers 8 --idle 10 --events 60 --rate 1 \
        --client c --storm
    python -m bench.many_streams --smoke [--client c] [--storm]  # 300 streams, 2 workers

The driver lifts its own soft open-file limit to the hard one; the server and the load
generators inherit it.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.procfs import cpu_seconds, descendants, rss_kb, tree_cpu_seconds

from bench.child import JsonLinesChild, c_subscribers, loadgen
from bench.common import Report, metric, parser, percentiles
from bench.common import machine as describe_machine
from bench.loadgen.process import raise_fd_limit
from bench.servers import PushsvcServe, use_pushsvc_src

PER_LOADGEN = 18_000
"""Streams per load generator: within its 20,000 open files."""

STOP_TIMEOUT_S = 120.0

COLUMNS = [
    ("streams", 7, "streams"),
    ("W", 2, "workers"),
    ("P", 2, "loadgens"),
    ("client", 6, "client"),
    ("open s", 6, "open_s"),
    ("kB/stream", 9, "rss_kb_per_stream"),
    ("idle s", 6, "idle_s"),
    ("idle cpu s", 10, "idle_cpu_s"),
    ("events", 6, "events"),
    ("expected", 9, "expected"),
    ("received", 9, "received"),
    ("miss", 6, "missing"),
    ("dup", 4, "duplicates"),
    ("ooo", 4, "out_of_order"),
    ("p50 ms", 7, "p50_ms"),
    ("p99 ms", 7, "p99_ms"),
    ("max ms", 7, "max_ms"),
    ("peak MB", 7, "peak_rss_mb"),
    ("back s", 6, lambda row: row.get("back_s", "-")),  # a storm's (--storm)
    ("current s", 9, lambda row: row.get("current_s", "-")),
]
COUNT_KEYS = ("expected", "received", "missing", "duplicates", "out_of_order", "unexpected")
CLIENTS = ("python", "c")


def _web_workers(server: PushsvcServe) -> list[int]:
    """The `pushsvc web` children of the supervisor."""
    found = []
    for pid in descendants(server.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if b"web" in argv:
            found.append(pid)
    return found


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


class _PeakRss:
    """The largest RSS (kB) of `pids()` sampled every 0.5 s until `stop()` (asked anew each
    time: a worker that is started again has a new pid)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.peak = rss_kb(pids())
        self._done = threading.Event()
        self._pids = pids
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.5):
            self.peak = max(self.peak, rss_kb(self._pids()))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, rss_kb(self._pids()))


def _wait_counted(port: int, streams: int, timeout: float) -> int:
    """Wait until the server counts `streams` subscribers (its workers share their metrics);
    the count it reached."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = int(metric(port, "pushsvc_subscribers") or 0)
        if count >= streams:
            break
        time.sleep(0.2)
    return count


def _stop_web_workers(server: PushsvcServe) -> float:
    """SIGTERM every web worker at once (the supervisor starts each again); when (epoch s)."""
    workers = _web_workers(server)
    stopped_at = time.time()
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    return stopped_at


def _storm_figures(drained: list[dict[str, Any]], stopped_at: float) -> dict[str, Any]:
    """What the C clients' drained records say of the storm: when the last client had a
    stream again, and when every client held every update published before that."""
    subscribers = [record for record in drained if "values" in record]
    back_at = max((r["last_back_at"] or 0.0 for r in subscribers), default=0.0)
    last: dict[int, float] = {}
    sent: dict[int, float] = {}
    for record in subscribers:
        for value, (published, received) in enumerate(record["values"]):
            if published:
                sent[value] = published
                last[value] = max(last.get(value, 0.0), received)
    before = [last[value] for value, published in sent.items() if published <= back_at]
    retries = [r["retry_ms"] for r in subscribers if r["retry_ms"][1]]
    return {
        "back_s": round(back_at - stopped_at, 2) if back_at else None,
        "current_s": round(max(before) - stopped_at, 2) if before and back_at else None,
        "reconnects": sum(r["reconnects"] for r in subscribers),
        "refused": sum(r["refused"] for r in subscribers),
        "still_down": sum(r["down"] for r in subscribers),
        "gaps": sum(r["gaps"] for r in subscribers),
        "retry_ms": [min(r[0] for r in retries), max(r[1] for r in retries)] if retries else None,
    }


def run(args: Any) -> dict[str, Any]:
    loadgens = max(args.loadgens or math.ceil(args.streams / PER_LOADGEN), 1)
    row: dict[str, Any] = {"streams": args.streams, "workers": args.workers,
                           "loadgens": loadgens, "heartbeat": args.heartbeat,
                           "client": args.client}  # fmt: skip
    if args.client == "c":
        row["batch_us"] = args.batch_us
    shares = [args.streams // loadgens + (i < args.streams % loadgens) for i in range(loadgens)]
    server_args = ("--heartbeat", args.heartbeat, *(("--retry", args.retry) if args.retry else ()))
    server = PushsvcServe(args.workers, extra_args=server_args)
    children: list[JsonLinesChild] = []
    connect_timeout = args.connect_timeout or 60 + args.streams / 1000
    publish_timeout = args.events / args.rate + 30
    timeouts = {"connect": connect_timeout, "publish": publish_timeout,
                "drain": publish_timeout + (300 if args.storm else 30),
                "idle": 60.0 if args.storm else 10.0}  # fmt: skip
    # A storm: the C clients reconnect as EventSource does, the publisher retries each event.
    reconnect, persist = (("--reconnect",), ("--persist",)) if args.storm else ((), ())
    try:
        server.start()
        webs = _web_workers(server)
        rss_before = rss_kb(webs)
        started = time.monotonic()
        stream = server.stream_urls()[0]
        publish = ["--publish", server.publish_url(), "--rate", str(args.rate)]
        if args.client == "c":
            # The first child publishes (and holds no stream); the C subscribers read.
            children.append(loadgen(
                "deliveries", [stream], 0, args.events, timeouts, "--wait-go", "--hold", *publish,
                *persist,
            ))  # fmt: skip
        for i, share in enumerate(shares):
            source = f"127.0.0.{2 + i}"
            if args.client == "c":
                children.append(c_subscribers(
                    stream, share, args.events, timeouts, "--wait-go", "--hold", "--source", source,
                    "--batch-us", str(args.batch_us), *reconnect,
                ))  # fmt: skip
                continue
            children.append(loadgen(
                "deliveries", [stream], share, args.events, timeouts,
                "--wait-go", "--hold", "--source", source, *(publish if i == 0 else []),
                *(["--gzip"] if args.gzip else []),
            ))  # fmt: skip
        opened = [child.record(timeout=connect_timeout + 30, phase="opened") for child in children]
        row["ready"] = sum(record["ready"] for record in opened)
        row["connect_errors"] = {
            key: n for record in opened for key, n in record["connect_errors"].items()
        }
        row["counted"] = _wait_counted(server.proc.port, args.streams, 30)
        row["open_s"] = round(time.monotonic() - started, 1)
        time.sleep(args.settle)  # the connected server settles before it is measured
        webs = _web_workers(server)  # a worker that died was restarted
        row["rss_kb_per_stream"] = round((rss_kb(webs) - rss_before) / max(row["counted"], 1), 2)

        pids = server.pids()
        before = _cpu(pids)
        time.sleep(args.idle)
        row["idle_s"] = args.idle
        row["idle_cpu_s"] = round(_cpu(pids) - before, 2)
        row["idle_cpu_us_per_stream_s"] = round(
            1e6 * row["idle_cpu_s"] / max(row["counted"], 1) / max(args.idle, 1e-9), 3
        )

        peak = _PeakRss(server.pids)
        client_pids = [child.proc.pid for child in children]
        server_before, clients_before = tree_cpu_seconds(server.proc.pid), _cpu(client_pids)
        publisher_before = _cpu(client_pids[:1])
        broadcast_started = time.monotonic()
        for child in children:
            child.tell(b"go")
        for child in children[1:]:
            child.tell(b"published")  # they drain until complete: the first one publishes
        if args.storm:
            time.sleep(args.storm_at if args.storm_at is not None else args.events / args.rate / 3)
            stopped_at = _stop_web_workers(server)
        drained = [
            child.record(timeout=publish_timeout + timeouts["drain"] + 60, phase="drained")
            for child in children
        ]
        row["peak_rss_mb"] = round(peak.stop() / 1024)
        # Where the machine's cores went while broadcasting: the server's and the clients'.
        row["broadcast_s"] = round(time.monotonic() - broadcast_started, 1)
        spent = {"server": tree_cpu_seconds(server.proc.pid) - server_before,
                 "client": _cpu(client_pids) - clients_before}  # fmt: skip
        row["broadcast_server_cpu_s"] = round(spent["server"], 1)
        row["broadcast_client_cpu_s"] = round(spent["client"], 1)
        if args.client == "c":  # the publisher on its own; the Python client's first one reads too
            publisher = _cpu(client_pids[:1]) - publisher_before
            row["broadcast_publisher_cpu_s"] = round(publisher, 2)
        for child in children:
            child.tell(b"measured")
        results = [child.record(timeout=120, phase="result") for child in children]
        row["events"] = args.events
        row["published"] = results[0].get("published")
        for key in COUNT_KEYS:
            row[key] = sum(int(result[key]) for result in results)
        if args.client == "c":
            row["id_regressions"] = sum(int(r.get("id_regressions", 0)) for r in results)
        # CPU per delivery, each side: the clients' is what the C client exists to cut.
        delivered = max(row["received"], 1)
        for side, cpu in spent.items():
            row[f"{side}_cpu_us_per_delivery"] = round(1e6 * cpu / delivered, 2)
        row["stream_errors"] = {
            key: n for record in drained for key, n in record["stream_errors"].items()
        }
        latencies = [result["latency_ms"] for result in results]
        # The p99 of the union of the load generators' samples is at most their largest p99.
        row["p50_ms"] = percentiles([lat["p50"] for lat in latencies if lat["p50"]], [0.5])[0]
        row["p99_ms"] = max((lat["p99"] for lat in latencies if lat["p99"]), default=None)
        row["max_ms"] = max((lat["max"] for lat in latencies if lat["max"]), default=None)
        if args.storm:
            row |= _storm_figures(drained, stopped_at)
        row["status"] = "ok"
    except (RuntimeError, OSError, KeyError) as exc:
        tail = " ".join(child.stderr_tail() for child in children)
        row |= {"status": "error", "reason": f"{exc} {tail}".strip()[-2000:]}
    finally:
        for child in children:
            child.close()
        started_proc = getattr(server, "proc", None)  # none when `serve` did not start
        if started_proc is not None and started_proc.proc is not None:
            # 100,000 streams take the workers longer to end than a test's stop allows.
            started_proc.stop(timeout=STOP_TIMEOUT_S)
    return row


def exact(row: dict[str, Any]) -> bool:
    """Every stream opened, was counted, and got every update exactly once and in order."""
    return (
        row.get("status") == "ok"
        and row["ready"] == row["streams"]
        and row["counted"] >= row["streams"]
        and row["published"] == row["events"]
        and row["received"] == row["expected"] == row["streams"] * row["events"]
        and all(row[key] == 0 for key in ("missing", "duplicates", "out_of_order", "unexpected"))
        and row.get("id_regressions", 0) == 0
        and not row["stream_errors"]
        # a storm: every client came back, and none was told its history had a gap
        and row.get("still_down", 0) == row.get("gaps", 0) == 0
    )


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__ or "", smoke="300 streams, 2 workers, 2 load generators, 5 events")
    cli.add_argument("--streams", type=int, default=100_000)
    cli.add_argument("--workers", type=int, default=8, help="web workers (`serve --workers`)")
    cli.add_argument(
        "--loadgens", type=int, default=None,
        help=f"load generators (default: one per {PER_LOADGEN:,} streams)",
    )  # fmt: skip
    cli.add_argument("--idle", type=float, default=300.0, help="seconds measured idle")
    cli.add_argument("--events", type=int, default=60, help="updates broadcast to every stream")
    cli.add_argument("--rate", type=float, default=1.0, help="updates per second")
    cli.add_argument(
        "--heartbeat", default="15s",
        help="the server's --heartbeat (its default, 15s); e.g. 600s: idle CPU with none due",
    )  # fmt: skip
    cli.add_argument("--settle", type=float, default=2.0)
    cli.add_argument(
        "--batch-us", type=int, default=1000,
        help="c: pause this long after a short batch of reads (fewer wake-ups on both sides; "
        "default 1 ms, 0: block in epoll_wait at once)",
    )  # fmt: skip
    cli.add_argument(
        "--connect-timeout", type=float, default=None,
        help="seconds for every stream to open (default 60 + 1 ms per stream; the server's "
        "pace, slower on a loaded machine)",
    )  # fmt: skip
    cli.add_argument(
        "--client", choices=CLIENTS, default="python",
        help="the subscribers: bench/loadgen (python) or bench/loadgen/sse_clients.c (c)",
    )  # fmt: skip
    cli.add_argument(
        "--gzip", action="store_true",
        help="python: the subscribers offer gzip, as browsers do (the streams are gzipped)",
    )  # fmt: skip
    cli.add_argument(
        "--storm", action="store_true",
        help="c: stop every web worker during the broadcast; the clients come back with "
        "Last-Event-ID after their retry:",
    )  # fmt: skip
    cli.add_argument(
        "--storm-at", type=float, default=None,
        help="seconds into the broadcast the workers are stopped (default: a third of it)",
    )  # fmt: skip
    cli.add_argument("--retry", default=None, help="the server's --retry (default: its own)")
    cli.add_argument("--pushsvc-src", help="run pushsvc from this tree's src/ (a before/after)")
    args = cli.parse_args(argv)
    if args.gzip and args.client != "python":
        raise SystemExit("--gzip takes --client python (the C subscribers read plain streams)")
    if args.storm and args.client != "c":
        cli.error("--storm needs --client c (the C clients reconnect as EventSource does)")
    if args.smoke:
        args.streams, args.workers, args.loadgens = 300, 2, 2
        args.idle, args.events, args.rate, args.settle = 0.5, 5, 10.0, 0.0
        if args.storm:  # long enough for the workers to stop and start again mid-broadcast
            args.events, args.rate, args.storm_at = 20, 4.0, 1.5
    if args.pushsvc_src:
        use_pushsvc_src(args.pushsvc_src)
    limit = raise_fd_limit()
    report = Report(COLUMNS, json=args.json)
    report.say(f"# {describe_machine()} open files: {limit}")
    report.header()
    row = run(args)
    report.row(row)
    if row.get("status") == "ok":
        report.say(
            f"# idle: {row['idle_cpu_us_per_stream_s']} µs of CPU per stream per second; "
            f"connect errors {row['connect_errors'] or 0}, "
            f"stream errors {row['stream_errors'] or 0}"
        )
        report.say(
            f"# broadcast: {row['broadcast_s']} s, CPU of the server "
            f"{row['broadcast_server_cpu_s']} s and of the load generators "
            f"{row['broadcast_client_cpu_s']} s; per delivery "
            f"{row['server_cpu_us_per_delivery']} and {row['client_cpu_us_per_delivery']} µs"
        )
        if args.storm:
            report.say(
                f"# storm: {row['reconnects']} reconnects ({row['refused']} refused, "
                f"{row['still_down']} still down at the end), {row['gaps']} gap snapshots, "
                f"retry: {row['retry_ms']} ms"
            )
    return 0 if exact(row) or not (args.smoke or args.check) else 1


if __name__ == "__main__":
    sys.exit(main())
