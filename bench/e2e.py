"""The end-to-end benchmark: batch POSTs into Redis mode, or the embedded server, with N
subscribers.

For each (W web processes, projection) it starts a redis-server of its own, one
`pushsvc aggregate` and W `pushsvc web` (bench/servers.py), or with W = 0 one `pushsvc serve`
(`--pushsvc-src` runs another tree's), opens N subscribers on one
topic spread over the web processes (bench/loadgen in `--mode ids`, its own process),
POSTs M events in batches of B as fast as they are accepted (P publishers, each on a
keep-alive connection, round-robin over the web processes), and reports one row:

* accepted/s   — M / (first POST sent .. last 202 received);
* e2e/s        — M / (first POST sent .. every subscriber received every update);
* deliveries expected (N x M) and received, missing, duplicates, out-of-order (by id),
  unexpected, and whether every stream carried the same set of ids; subscriber 0 also
  checks that the event values 0..M-1 each arrived once;
* CPU seconds of every process over the run (/proc/<pid>/stat), and of the rest of the
  machine, so that we know where the time goes.

    python -m bench.e2e --events 100000 --batch 1000 --subscribers 100 \\
        --web 1,2 --projection full --projection 'stats=count&windows=10s'

`--messages 100,10240` adds, per W, rows whose events are messages without a value (their data
`{"value": i, "pad": ...}` of that many bytes), read on `/topics/T/messages` (`projection` is
then `messages`): what a messages-only topic costs beside a statistics one. A batch of big
messages is cut to fit the server's default 1 MiB body (10 KiB: 91 a POST).

`--smoke` runs M=5000, N=10 and exits 1 unless every count is exact; it never judges a
timing. Every phase has a deadline, so every run ends by itself.
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.child import JsonLinesChild, run_scenario
from bench.common import CpuMeter, Report, fmt, machine
from bench.common import parser as common_parser
from bench.posting import batches, publish
from bench.servers import REPO, TOPIC, PushsvcRedis, PushsvcServe, use_pushsvc_src
from pushsvc.core.lists import comma_list

DEFAULT_PROJECTIONS = ("full", "stats=count&windows=10s")
COUNT_KEYS = ("missing", "duplicates", "out_of_order", "unexpected", "id_sets_differ")


def warm_up(bases: list[str]) -> None:
    """One small batch per web process on another topic: first-request costs (imports,
    connections to Redis, the Lua script load) stay out of the measurement."""
    for base in bases:
        done = publish([base], f"/topics/{TOPIC}-warmup/events", batches(100, 100), 1, 30)
        if done.errors:
            raise RuntimeError(f"warm-up POST to {base}: {done.errors}")


@dataclass(frozen=True)
class Scenario:
    events: int
    batch: int
    subscribers: int
    web: int
    publishers: int
    projection: str  # "full", or a query string such as "stats=count&windows=10s"
    server_args: tuple[str, ...] = ()
    message_bytes: int = 0
    """Messages of this many bytes of data and no value, read on /messages; 0: values."""

    def row(self) -> dict[str, Any]:
        server = f"pushsvc-redis-{self.web}" if self.web else "pushsvc-memory"
        return {"server": server, **asdict(self), "server_args": list(self.server_args)}


def scenario_row(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    row = scenario.row()
    m, n = scenario.events, scenario.subscribers
    publish_timeout = 60 + m / 1000
    drain_timeout = args.drain_timeout or 30 + m * n / 200_000
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    deployment: PushsvcRedis | PushsvcServe
    if scenario.web:
        deployment = PushsvcRedis(
            scenario.web, extra_args=scenario.server_args, profile_dir=profile_dir
        )
    else:  # the embedded server: one process, its core in memory
        deployment = PushsvcServe(extra_args=scenario.server_args)

    def steps(loadgen: Callable[..., JsonLinesChild]) -> dict[str, Any]:
        bases = deployment.bases()
        if scenario.message_bytes:
            streams, kind = deployment.message_urls(), "pushsvc-messages"
        else:
            query = "" if scenario.projection == "full" else f"?{scenario.projection}"
            streams, kind = [f"{url}{query}" for url in deployment.stream_urls()], "pushsvc"
        timeouts = {"connect": 20 + n / 100, "publish": publish_timeout + 30,
                    "drain": drain_timeout, "idle": args.idle_timeout}  # fmt: skip
        subscribers = loadgen("ids", streams, n, m, timeouts, "--kind", kind)
        opened = subscribers.record(phase="opened", timeout=60 + n / 50)
        if opened["ready"] != n:
            raise RuntimeError(f"only {opened['ready']} of {n} subscribers are live: {opened}")
        warm_up(bases)
        bodies = batches(m, scenario.batch, scenario.message_bytes)
        pids: dict[str, int]
        if isinstance(deployment, PushsvcRedis):
            assert deployment.redis is not None and deployment.aggregator is not None
            assert deployment.redis.pid is not None
            pids = {"redis": deployment.redis.pid, "aggregator": deployment.aggregator.pid}
            pids |= {f"web-{i}": web.pid for i, web in enumerate(deployment.webs)}
        else:
            pids = {"serve": deployment.proc.pid}
        pids |= {"subscribers": subscribers.proc.pid, "publisher": os.getpid()}
        meter = CpuMeter(pids).start()
        path = f"/topics/{TOPIC}/events"
        published = publish(bases, path, bodies, scenario.publishers, publish_timeout)
        subscribers.tell(b"published")
        drained = subscribers.record(phase="drained", timeout=publish_timeout + drain_timeout + 60)
        cpu = meter.stop()
        result = subscribers.record(phase="result", timeout=120 + m * n / 500_000)
        start = published.first_sent
        all_complete = drained["all_complete_at"]
        received = result["received"]
        out = {
            "accepted": published.accepted,
            "publish_errors": published.errors,
            "accepted_per_s": _rate(published.accepted, published.last_accepted - start),
            "e2e_per_s": _rate(m, all_complete - start) if all_complete else None,
            "deliveries_per_s": _rate(received, (drained["last_delivery_at"] or start) - start),
            "publish_s": round(published.last_accepted - start, 3),
            "e2e_s": round(all_complete - start, 3) if all_complete else None,
            "connected": drained["connected"],
            "complete": drained["complete"],
            "expected": result["expected"],
            "received": received,
            **{key: result[key] for key in COUNT_KEYS},
            "reference": result["reference"],
            "stream_errors": drained["stream_errors"],
            "connect_errors": opened["connect_errors"],
            "bytes_per_update": round(drained["bytes"] / received, 1) if received else None,
            **cpu,
        }
        if profile_dir is not None and scenario.web:
            out["profile"] = {
                name: top_functions(profile_dir / f"{name}.prof", args.profile_top)
                for name in ["aggregator", *(f"web-{i}" for i in range(scenario.web))]
            }
        return out

    return run_scenario(row, deployment, steps)


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def top_functions(path: Path, count: int) -> list[dict[str, Any]] | str:
    """The `count` functions with the most own time in a cProfile file."""
    try:
        stats = pstats.Stats(str(path))
    except (OSError, TypeError, EOFError) as exc:
        return f"no profile: {exc}"
    total = stats.total_tt or 1e-9  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    out = []
    for (filename, line, name), (_, calls, own, cumulative, _) in rows[:count]:
        where = str(filename).replace(str(REPO) + "/", "").replace(sys.prefix + "/", "")
        out.append({
            "function": f"{where}:{line}({name})",
            "calls": calls,
            "own_s": round(own, 3),
            "own_pct": round(100 * own / total, 1),
            "cum_s": round(cumulative, 3),
        })  # fmt: skip
    return out


def exact(row: dict[str, Any]) -> bool:
    """Every subscriber got every event exactly once, in order (a smoke check, no timings)."""
    return (
        row.get("status") == "ok"
        and row["accepted"] == row["events"]
        and not row["publish_errors"]
        and row["connected"] == row["complete"] == row["subscribers"]
        and row["received"] == row["expected"]
        and all(row[key] == 0 for key in COUNT_KEYS)
        and row["reference"]["missing"] == row["reference"]["unexpected"] == 0
        and row["reference"]["duplicates"] == 0
        and not row["stream_errors"]
    )


COLUMNS = (
    ("server", 16, "server"), ("projection", 24, "projection"),
    ("msg B", 6, "message_bytes"), ("M", 7, "events"),
    ("B", 5, "batch"), ("N", 4, "subscribers"), ("P", 2, "publishers"),
    ("accepted/s", 10, "accepted_per_s"), ("e2e/s", 8, "e2e_per_s"),
    ("deliv/s", 9, "deliveries_per_s"), ("expected", 9, "expected"),
    ("received", 9, "received"), ("miss", 7, "missing"), ("dup", 4, "duplicates"),
    ("ooo", 4, "out_of_order"), ("B/upd", 6, "bytes_per_update"),
)  # fmt: skip


def notes(row: dict[str, Any]) -> list[str]:
    """Where the CPU went, problems, and the profiles' top functions."""
    cpu = ", ".join(f"{name} {fmt(s)}" for name, s in row["cpu_s"].items())
    rest = f"interrupts {row['irq_s']}; rest of machine {row['other_s']}"
    out = [f"cpu s over {row['wall_s']} s wall: {cpu}; {rest} "
           f"(capacity {row['machine_capacity_s']})"]  # fmt: skip
    problems = {k: row[k] for k in ("publish_errors", "stream_errors", "connect_errors") if row[k]}
    if problems or row["unexpected"] or row["id_sets_differ"]:
        problems |= {k: row[k] for k in ("unexpected", "id_sets_differ", "reference")}
        out.append(str(problems))
    for name, top in row.get("profile", {}).items():
        out.append(f"profile {name}:")
        for item in top if isinstance(top, list) else [{"function": top}]:
            out.append(f"    {item.get('own_pct', '')!s:>5}% {item.get('own_s', '')!s:>7}s "
                       f"{item.get('calls', '')!s:>9} {item['function']}")  # fmt: skip
    return out


def _parser() -> argparse.ArgumentParser:
    parser = common_parser(__doc__, smoke="M=5000, N=10")
    add = parser.add_argument
    add("--events", "-m", type=int, default=None, help="M (default 100000)")
    add("--batch", "-b", type=int, default=1000, help="events per POST")
    add("--subscribers", "-n", type=int, default=None, help="N (default 100)")
    add("--web", "-w", type=comma_list, default=["1"],
        help="web processes, a comma-separated list of counts: 1,2; 0 is the embedded "
        "server (`pushsvc serve`, no Redis)")  # fmt: skip
    add(
        "--pushsvc-src",
        metavar="DIR",
        help="run pushsvc from another tree's src/ (a before/after in one session)",
    )
    add("--projection", action="append", default=None,
        help="'full' or a stream query such as 'stats=count&windows=10s'; "
        f"repeatable; default {' and '.join(DEFAULT_PROJECTIONS)}")  # fmt: skip
    add("--messages", type=comma_list, default=[], metavar="BYTES",
        help="also rows of messages without a value, of these sizes of data (100,10240), "
        "read on /messages")  # fmt: skip
    add("--publishers", "-p", type=int, default=1,
        help="concurrent publishers (keep-alive connections)")  # fmt: skip
    add("--server-arg", action="append", default=[], metavar="ARG",
        help="passed to every pushsvc process, e.g. --server-arg=--max-stream-buffer "
        "--server-arg=64MiB")  # fmt: skip
    add("--profile", metavar="DIR", help="run the pushsvc processes under cProfile, files in "
        "DIR, and report their top functions (slows them down)")  # fmt: skip
    add("--profile-top", type=int, default=15)
    add("--drain-timeout", type=float, default=None,
        help="seconds after the last 202 (default 30 + N*M/200k)")  # fmt: skip
    add("--idle-timeout", type=float, default=10.0,
        help="the drain ends after this long with no delivery")  # fmt: skip
    return parser


MAX_BODY = 1 << 20
"""The server's default `--max-body`: a batch of big messages is cut to fit in it."""


def _batch(batch: int, message_bytes: int) -> int:
    """`batch`, or fewer events where that many messages of `message_bytes` (and their JSON
    around the data) would not fit in one request body."""
    if not message_bytes:
        return batch
    return max(1, min(batch, int(0.9 * MAX_BODY) // (message_bytes + 64)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.pushsvc_src:
        use_pushsvc_src(args.pushsvc_src)
    events = args.events or (5000 if args.smoke else 100_000)
    subscribers = args.subscribers or (10 if args.smoke else 100)
    if events < 1 or subscribers < 1 or args.batch < 1 or args.publishers < 1:
        raise SystemExit("events, subscribers, batch and publishers must be at least 1")
    scenarios = [
        Scenario(events, _batch(args.batch, int(size)), subscribers, int(w), args.publishers, p,
                 tuple(args.server_arg), int(size))
        for w in args.web
        for p, size in [*((p, "0") for p in args.projection or DEFAULT_PROJECTIONS),
                        *(("messages", size) for size in args.messages)]
    ]  # fmt: skip
    report = Report(COLUMNS, json=args.json, ident=2, notes=notes)
    about = machine("orjson", "gevent", "redis", "uvloop", "numpy")
    report.say(f"# {about['cpu']}, {about['nproc']} cores, load {about['loadavg']}")
    report.header()
    failed = False
    for scenario in scenarios:
        row = scenario_row(scenario, args)
        row["machine"] = {**about, "loadavg": [round(x, 2) for x in os.getloadavg()]}
        report.row(row)
        if row["status"] != "ok" or ((args.smoke or args.check) and not exact(row)):
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
