"""A reconnect storm: N EventSource-like clients of a web process that restarts while events
flow, each back after its `retry:` with its `Last-Event-ID`.

For each server tree (`--pushsvc-src`, repeatable; this tree's by default): a redis-server
of its own, `pushsvc aggregate`, the web process the clients read and another that a
producer posts to (one event per topic per round, `--pause` between rounds). N raw-socket
clients (`harness/storm_clients.py`) over `--topics` topics, spread over `--sources`
source addresses 127.0.0.1.. so that ephemeral ports do not run out, all subscribed, events
flowing; then the web process is stopped (SIGTERM), each topic gets `--missed` events while it
is down, and it is started again on the same port. Reported:

* `back s`: from the new process listening until every client has a stream again;
* `current s`: until every client also holds every update acknowledged by then (its replay);
* `peak MB`: the new web process's peak RSS over the storm (VmHWM), `MB after` its RSS then;
* `cpu s`: the new web process's CPU (user + system) from its start until then; `our cpu s`:
  this benchmark's own (the clients' thread, the producer's, the polling) over the same time,
  which on a 2-core machine takes cores from the server;
* `reads/rc`: reads of a partition's history per reconnect, from the new process's start
  until every client is current: XREVRANGE calls (INFO commandstats), which only a replay
  makes here (one per partition read, batched or not; no history or alert is read), less
  the few the producer and the aggregator make (their rate over `--quiet` seconds before the
  restart). A read is one MULTI of five commands (GET, GET, XREVRANGE, XRANGE, and HKEYS for
  a stream with nothing of the partition) between MULTI and EXEC. All of Redis's commands
  cannot be told apart so: the producer's and the aggregator's rate is not the same while
  the storm takes the CPU;
* `refused`: connections refused while the process was down; `again`: streams that broke
  once more after the restart (a priming error, a slow client evicted), each back after its
  `retry:`;
* `lost`, `dup`: updates a client never got or got twice (must be 0), `gaps`: snapshots that
  said `"gap": true` (must be 0); `retry`: the range of `retry:` values the clients were sent.

    python -m bench.storm --clients 10000
    python -m bench.storm --clients 2000 --pushsvc-src /tmp/before/src --pushsvc-src src
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from harness.live import PushsvcProcess, wait_until
from harness.procfs import cpu_seconds, peak_rss_kb, rss_kb
from harness.raw_streams import raise_fd_limit
from harness.redis_server import RedisServer
from harness.storm_clients import StormClients, StormProducer

from bench.common import Column, Report, metric, parser
from bench.common import machine as describe_machine

REPO = Path(__file__).resolve().parents[1]

COLUMNS: list[Column] = [
    ("src", 24, lambda row: row["src"][-24:]),
    ("clients", 7, "clients"),
    ("open s", 6, "open_s"),
    ("down s", 6, "down_s"),
    ("back s", 6, "back_s"),
    ("current s", 9, "current_s"),
    ("peak MB", 7, "peak_mb"),
    ("MB after", 8, "rss_mb"),
    ("cpu s", 5, "cpu_s"),
    ("our cpu s", 9, "our_cpu_s"),
    ("reads/rc", 8, "reads_per_reconnect"),
    ("refused", 7, "refused"),
    ("again", 5, "broken_again"),
    ("lost", 5, "lost"),
    ("dup", 5, "duplicated"),
    ("gaps", 4, "gaps"),
    ("retry ms", 11, "retry_ms"),
]


def _commands(client: redis.Redis) -> tuple[float, float, float]:
    """XREVRANGE calls, XRANGE calls and all calls so far."""
    stats: dict[str, Any] = client.info("commandstats")
    xrevrange = int(stats.get("cmdstat_xrevrange", {}).get("calls", 0))
    xrange = int(stats.get("cmdstat_xrange", {}).get("calls", 0))
    return xrevrange, xrange, sum(int(s.get("calls", 0)) for s in stats.values())


def _minus(a: tuple[float, ...], b: tuple[float, ...], scale: float = 1.0) -> tuple[float, ...]:
    return tuple(x - y * scale for x, y in zip(a, b, strict=True))


def _await(done: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `done`, polled every 50 ms (each poll reads every client)."""
    started = time.monotonic()
    wait_until(done, timeout, 0.05, what=what)
    return time.monotonic() - started


def _judge(clients: StormClients, acked: dict[str, int]) -> dict[str, int]:
    lost = duplicated = 0
    for client in clients.clients:
        got = client.values
        lost += len(set(range(acked[client.topic])) - set(got))
        duplicated += len(got) - len(set(got))
    return {"lost": lost, "duplicated": duplicated}


def run(src: str, args: Any) -> dict[str, object]:
    row: dict[str, object] = {"src": src, "clients": args.clients}
    topics = [f"storm.{n}" for n in range(args.topics)]
    sources = [f"127.0.0.{n + 1}" for n in range(args.sources)]
    server = RedisServer().start()
    env = {
        "PYTHONPATH": str(Path(src).resolve()),
        "PUSHSVC_REDIS_URL": server.url,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_RETRY": args.retry,
        "PUSHSVC_MAX_STREAMS_PER_IP": str(args.clients + 100),
        "PUSHSVC_MAX_STREAMS": str(args.clients + 100),
        "PUSHSVC_LOG_FORMAT": "text",
    }
    procs = [
        PushsvcProcess("aggregate", env=env, http=False).start(),
        PushsvcProcess("web", env=env).start(),
        PushsvcProcess("web", env=env).start(),
    ]
    procs[0].wait_for_log("took the lease")
    port = procs[1].port
    clients = StormClients(port, topics, args.clients, sources=sources)
    producer = StormProducer(procs[2].port, topics, pause_s=args.pause)
    commands = redis.Redis.from_url(server.url)
    try:
        started = time.monotonic()
        clients.start(spread_s=args.clients / 5000)
        wait_until(lambda: clients.count("live") == args.clients, 300, 0.05, what="all open")
        row["open_s"] = round(time.monotonic() - started, 1)
        producer.start()
        wait_until(lambda: clients.behind(dict.fromkeys(topics, 2)) == 0, 120, 0.05,
                   what="updates reach every client")  # fmt: skip

        # What the producer and the aggregator cost Redis per second, without a storm.
        quiet0, quiet_at = _commands(commands), time.monotonic()
        time.sleep(args.quiet)
        quiet_rate = _minus(_commands(commands), quiet0)
        quiet_rate = tuple(x / (time.monotonic() - quiet_at) for x in quiet_rate)

        stopped = time.monotonic()
        procs[1].stop(60)
        missed = producer.posted() + args.missed
        wait_until(lambda: producer.posted() >= missed, 120, 0.02, what="events while down")
        before = _commands(commands)
        storm_at, our_cpu = time.monotonic(), time.process_time()
        profile = ("-m", "cProfile", "-o", args.profile) if args.profile else ()
        procs[1] = web = PushsvcProcess(
            "web", "--port", str(port), env=env, python_args=profile
        ).start(60)
        row["down_s"] = round(time.monotonic() - stopped, 2)
        acked = dict(producer.acked)
        peak = 0

        def sampled(done: Callable[[], bool]) -> Callable[[], bool]:
            def check() -> bool:
                nonlocal peak
                peak = max(peak, rss_kb([web.pid]))
                return done()

            return check

        back = _await(sampled(lambda: clients.fewer("connects", 2) == 0), 300, "all back")
        current = back + _await(sampled(lambda: clients.behind(acked) == 0), 300, "all current")
        cpu, our_cpu = cpu_seconds(web.pid), time.process_time() - our_cpu
        made = _minus(_minus(_commands(commands), before), quiet_rate, time.monotonic() - storm_at)
        row.update(
            back_s=round(back, 2),
            current_s=round(current, 2),
            peak_mb=round(max(peak, peak_rss_kb(web.pid)) / 1024, 1),
            rss_mb=round(rss_kb([web.pid]) / 1024, 1),
            cpu_s=None if cpu is None else round(cpu, 2),
            our_cpu_s=round(our_cpu, 2),
            reads_per_reconnect=round(made[0] / args.clients, 3),
            xrange_per_reconnect=round(made[1] / args.clients, 3),
            subscribers=metric(port, "pushsvc_subscribers"),
        )
        after = producer.posted() + 2
        wait_until(lambda: producer.posted() >= after, 120, 0.02, what="events after")
        producer.stop()
        final = dict(producer.acked)
        wait_until(lambda: clients.behind(final) == 0, 120, 0.05, what="the last updates")
        row.update(_judge(clients, final))
        retries = [ms for c in clients.clients for ms in c.retries[1:]]
        row.update(
            refused=clients.count("refused"),
            # Streams that broke again after the restart (an error, a slow client evicted).
            broken_again=clients.count("connects") - 2 * args.clients,
            web_log=[line.strip() for line in web.output if "WARNING" in line or "ERROR" in line][
                :5
            ],
            gaps=sum(c.gaps for c in clients.clients),
            retry_ms=f"{min(retries)}-{max(retries)}",
            retry_distinct=len(set(retries)),
            producer_refused=len(producer.refused),
            client_errors=clients.errors[:3],
        )
    except Exception as exc:  # say what the web process said
        raise RuntimeError(f"{exc}; the web process's log ends: {procs[1].log_tail(5)}") from exc
    finally:
        producer.stop()
        clients.stop()
        commands.close()
        for proc in procs:
            proc.stop(60)
        server.stop()
    return row


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__ or "")
    cli.add_argument("--clients", "-n", type=int, default=10_000)
    cli.add_argument("--topics", type=int, default=100)
    cli.add_argument("--sources", type=int, default=4, help="source addresses 127.0.0.1..")
    cli.add_argument("--retry", default="1s", help="the web process's --retry")
    cli.add_argument("--pause", type=float, default=1.0, help="seconds between rounds")
    cli.add_argument("--missed", type=int, default=3, help="rounds posted while it is down")
    cli.add_argument("--quiet", type=float, default=3.0, help="seconds of the baseline rates")
    cli.add_argument("--profile", help="cProfile the restarted web process into this file")
    cli.add_argument(
        "--pushsvc-src", action="append", default=[],
        help="a tree's src/ to run pushsvc from (repeat: they take turns)",
    )  # fmt: skip
    args = cli.parse_args(argv)
    srcs = args.pushsvc_src or [str(REPO / "src")]
    # Ours and, inherited, the web process's: a socket each per client, and room to spare.
    raise_fd_limit(args.clients + 4096)
    report = Report(COLUMNS, json=args.json, ident=2)
    report.say(f"# {describe_machine('gevent', 'redis')}")
    report.header()
    failed = False
    for src in srcs:
        try:
            row = run(src, args)
        except Exception as exc:  # a row that failed says why; the others still run
            row = {"src": src, "clients": args.clients, "status": "failed", "reason": str(exc)}
        failed |= row.get("status", "ok") != "ok" or bool(row.get("lost") or row.get("duplicated"))
        report.row(row)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
