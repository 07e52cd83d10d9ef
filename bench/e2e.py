"""The end-to-end benchmark (issue 3): batch POSTs into Redis mode with N subscribers.

For each (W web processes, projection) it starts a redis-server of its own, one
`pushsvc aggregate` and W `pushsvc web` (bench/servers.py), opens N subscribers on one
topic spread over the web processes (bench/loadgen/counting.py, its own process),
POSTs M events in batches of B as fast as they are accepted (P publishers, each on a
keep-alive connection, round-robin over the web processes), and reports one row:

* accepted/s   — M / (first POST sent .. last 202 received);
* e2e/s        — M / (first POST sent .. every subscriber received every update);
* deliveries expected (N x M) and received, missing, duplicates, out-of-order (by id),
  unexpected, and whether every stream carried the same set of ids; subscriber 0 also
  checks that the event values 0..M-1 each arrived once;
* CPU seconds of every process over the run (/proc/<pid>/stat), and of the rest of the
  machine, so that we know where the time goes.

    /work/.venv/bin/python bench/e2e.py --events 100000 --batch 1000 --subscribers 100 \\
        --web 1,2 --projection full --projection 'stats=count&windows=10s'

`--smoke` runs M=5000, N=10 and exits 1 unless every count is exact; it never judges a
timing. Every phase has a deadline, so every run ends by itself.
"""

from __future__ import annotations

import argparse
import http.client
import os
import pstats
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from child import JsonLinesChild
from common import machine
from pushsvc.lists import comma_list
from pushsvc.testing.procfs import cpu_seconds
from servers import REPO, TOPIC, PushsvcRedis

DEFAULT_PROJECTIONS = ("full", "stats=count&windows=10s")
COUNT_KEYS = ("missing", "duplicates", "out_of_order", "unexpected", "id_sets_differ")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting ------------------------------------------------------------------------


def machine_seconds() -> tuple[float, float]:
    """(CPU seconds all cores spent not idle, of which in interrupts), since boot.

    Interrupt time (loopback TCP runs in softirq) is in no process's utime/stime.
    """
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is already counted in user.
    busy = sum(values[:8]) - values[3] - values[4]
    return busy / _CLK_TCK, (values[5] + values[6]) / _CLK_TCK


class CpuMeter:
    """CPU seconds per named process between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float | None] = {}
        self._busy = self._irq = self._wall = 0.0

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._busy, self._irq = machine_seconds()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        after = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        busy, irq = machine_seconds()
        busy, irq = busy - self._busy, irq - self._irq
        wall = time.monotonic() - self._wall
        used = {}
        for name, before in self._before.items():
            end = after[name]
            used[name] = None if before is None or end is None else round(end - before, 2)
        ours = sum(v for v in used.values() if v is not None)
        return {
            "wall_s": round(wall, 2),
            "cpu_s": used,
            "irq_s": round(irq, 2),
            # Everything else on the machine (other jobs on a shared box), from /proc/stat.
            "other_s": round(max(0.0, busy - ours - irq), 2),
            "machine_capacity_s": round(wall * _cores(), 2),
        }


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- the counting subscribers, a child process ---------------------------------------------


# -- the publishers --------------------------------------------------------------------------


@dataclass
class Published:
    accepted: int = 0
    """Events in batches answered 202 with the batch's length."""
    errors: dict[str, int] = field(default_factory=dict)
    """Events in batches that failed, by reason."""
    first_sent: float = 0.0
    last_accepted: float = 0.0


def batch_body(start: int, stop: int) -> bytes:
    """A JSON array of events with values start..stop-1 (no ts: the server stamps them)."""
    return b"[" + b",".join(b'{"value":%d}' % v for v in range(start, stop)) + b"]"


def publish(
    bases: list[str], path: str, bodies: list[tuple[int, bytes]], publishers: int, timeout: float
) -> Published:
    """POST every body once, from `publishers` threads (publisher i to bases[i % len(bases)]),
    each taking the next body as soon as its previous one is answered. One publisher keeps
    value order equal to publication order."""
    result = Published()
    todo: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()
    for item in bodies:
        todo.put(item)
    lock = threading.Lock()
    deadline = time.monotonic() + timeout
    started = threading.Barrier(publishers)

    def fail(reason: str, count: int) -> None:
        with lock:
            result.errors[reason] = result.errors.get(reason, 0) + count

    def run(base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": "application/json"}
        started.wait()
        with lock:
            result.first_sent = result.first_sent or time.time()
        try:
            while time.monotonic() < deadline:
                try:
                    count, body = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    connection.request("POST", path, body, headers)
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()  # reconnects on the next request
                    fail(type(exc).__name__, count)
                    continue
                if response.status != 202 or orjson.loads(answer).get("accepted") != count:
                    fail(f"status {response.status}", count)
                    continue
                now = time.time()
                with lock:
                    result.accepted += count
                    result.last_accepted = max(result.last_accepted, now)
            while not todo.empty():  # the deadline passed
                fail("deadline", todo.get_nowait()[0])
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(bases[i % len(bases)],), daemon=True)
        for i in range(publishers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 60)
    return result


def warm_up(bases: list[str]) -> None:
    """One small batch per web process on another topic: first-request costs (imports,
    connections to Redis, the Lua script load) stay out of the measurement."""
    for base in bases:
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("POST", f"/topics/{TOPIC}-warmup/events", batch_body(0, 100),
                               {"Content-Type": "application/json"})  # fmt: skip
            response = connection.getresponse()
            response.read()
            if response.status != 202:
                raise RuntimeError(f"warm-up POST to {base}: status {response.status}")
        finally:
            connection.close()


# -- one scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    events: int
    batch: int
    subscribers: int
    web: int
    publishers: int
    projection: str  # "full", or a query string such as "stats=count&windows=10s"
    server_args: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        return {
            "server": f"pushsvc-redis-{self.web}",
            "projection": self.projection,
            "events": self.events,
            "batch": self.batch,
            "subscribers": self.subscribers,
            "web": self.web,
            "publishers": self.publishers,
            "server_args": list(self.server_args),
        }


def run_scenario(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    row = scenario.row()
    m, n = scenario.events, scenario.subscribers
    publish_timeout = 60 + m / 1000
    drain_timeout = args.drain_timeout or 30 + m * n / 200_000
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    deployment = PushsvcRedis(
        scenario.web, extra_args=scenario.server_args, profile_dir=profile_dir
    )
    subscribers: JsonLinesChild | None = None
    try:
        deployment.start()
        assert deployment.redis is not None and deployment.aggregator is not None
        bases = [web.base for web in deployment.webs]
        query = "" if scenario.projection == "full" else f"?{scenario.projection}"
        streams = [f"{base}/topics/{TOPIC}/stream{query}" for base in bases]
        subscribers = JsonLinesChild("loadgen.counting", name="subscribers", argv=[
            *[arg for url in streams for arg in ("--stream", url)],
            "--subscribers", str(n), "--events", str(m),
            "--connect-timeout", str(20 + n / 100),
            "--publish-timeout", str(publish_timeout + 30),
            "--drain-timeout", str(drain_timeout), "--idle-timeout", str(args.idle_timeout),
        ])  # fmt: skip
        opened = subscribers.record(phase="opened", timeout=60 + n / 50)
        if opened["ready"] != n:
            raise RuntimeError(f"only {opened['ready']} of {n} subscribers are live: {opened}")
        warm_up(bases)
        starts = range(0, m, scenario.batch)
        bodies = [(min(m, i + scenario.batch) - i, batch_body(i, min(m, i + scenario.batch)))
                  for i in starts]  # fmt: skip
        pids = {"redis": deployment.redis.pid, "aggregator": deployment.aggregator.pid}
        pids |= {f"web-{i}": web.pid for i, web in enumerate(deployment.webs)}
        pids |= {"subscribers": subscribers.proc.pid, "publisher": os.getpid()}
        meter = CpuMeter(pids)
        meter.start()
        path = f"/topics/{TOPIC}/events"
        published = publish(bases, path, bodies, scenario.publishers, publish_timeout)
        subscribers.tell(b"published")
        drained = subscribers.record(phase="drained", timeout=publish_timeout + drain_timeout + 60)
        cpu = meter.stop()
        result = subscribers.record(phase="result", timeout=120 + m * n / 500_000)
    except (RuntimeError, OSError) as exc:
        tail = subscribers.stderr_tail() if subscribers is not None else ""
        return {**row, "status": "error", "reason": f"{exc} {tail}".strip()[-2000:]}
    finally:
        if subscribers is not None:
            subscribers.close()
        deployment.stop()
    start = published.first_sent
    all_complete = drained["all_complete_at"]
    received = result["received"]
    row.update(
        status="ok",
        accepted=published.accepted,
        publish_errors=published.errors,
        accepted_per_s=_rate(published.accepted, published.last_accepted - start),
        e2e_per_s=_rate(m, all_complete - start) if all_complete else None,
        deliveries_per_s=_rate(received, (drained["last_delivery_at"] or start) - start),
        publish_s=round(published.last_accepted - start, 3),
        e2e_s=round(all_complete - start, 3) if all_complete else None,
        connected=drained["connected"],
        complete=drained["complete"],
        expected=result["expected"],
        received=received,
        **{key: result[key] for key in COUNT_KEYS},
        reference=result["reference"],
        stream_errors=drained["stream_errors"],
        connect_errors=opened["connect_errors"],
        bytes_per_update=round(drained["bytes"] / received, 1) if received else None,
        **cpu,
    )
    if profile_dir is not None:
        row["profile"] = {
            name: top_functions(profile_dir / f"{name}.prof", args.profile_top)
            for name in ["aggregator", *(f"web-{i}" for i in range(scenario.web))]
        }
    return row


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


# -- output ---------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 100 else f"{value:.2f}"
    return str(value)


_COLUMNS = (
    ("server", 16, "server"), ("projection", 24, "projection"), ("M", 7, "events"),
    ("B", 5, "batch"), ("N", 4, "subscribers"), ("P", 2, "publishers"),
    ("accepted/s", 10, "accepted_per_s"), ("e2e/s", 8, "e2e_per_s"),
    ("deliv/s", 9, "deliveries_per_s"), ("expected", 9, "expected"),
    ("received", 9, "received"), ("miss", 7, "missing"), ("dup", 4, "duplicates"),
    ("ooo", 4, "out_of_order"), ("B/upd", 6, "bytes_per_update"),
)  # fmt: skip


def table_header() -> str:
    return " ".join(f"{name:>{width}}" for name, width, _ in _COLUMNS)


def table_row(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row['server']:>16} {row['projection']:>24} ERROR: {row.get('reason', '')[:400]}"
    line = " ".join(f"{_fmt(row[key]):>{width}}" for _, width, key in _COLUMNS)
    cpu = ", ".join(f"{name} {_fmt(s)}" for name, s in row["cpu_s"].items())
    rest = f"interrupts {row['irq_s']}; rest of machine {row['other_s']}"
    capacity = f"capacity {row['machine_capacity_s']}"
    notes = [f"{'':>16} cpu s over {row['wall_s']} s wall: {cpu}; {rest} ({capacity})"]
    problems = {k: row[k] for k in ("publish_errors", "stream_errors", "connect_errors") if row[k]}
    if problems or row["unexpected"] or row["id_sets_differ"]:
        problems |= {k: row[k] for k in ("unexpected", "id_sets_differ", "reference")}
        notes.append(f"{'':>16} {problems}")
    for name, top in row.get("profile", {}).items():
        notes.append(f"{'':>16} profile {name}:")
        for item in top if isinstance(top, list) else [{"function": top}]:
            notes.append(f"{'':>20} {item.get('own_pct', '')!s:>5}% {item.get('own_s', '')!s:>7}s "
                         f"{item.get('calls', '')!s:>9} {item['function']}")  # fmt: skip
    return "\n".join([line, *notes])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", "-m", type=int, default=None, help="M (default 100000)")
    parser.add_argument("--batch", "-b", type=int, default=1000, help="events per POST")
    parser.add_argument("--subscribers", "-n", type=int, default=None, help="N (default 100)")
    parser.add_argument(
        "--web",
        "-w",
        type=comma_list,
        default=["1"],
        help="web processes, a comma-separated list of counts: 1,2",
    )
    parser.add_argument(
        "--projection",
        action="append",
        default=None,
        help="'full' or a stream query such as 'stats=count&windows=10s'; "
        f"repeatable; default {' and '.join(DEFAULT_PROJECTIONS)}",
    )
    parser.add_argument(
        "--publishers",
        "-p",
        type=int,
        default=1,
        help="concurrent publishers (keep-alive connections)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to every pushsvc process, e.g. --server-arg=--queue-size --server-arg=10000",
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON lines on stdout (the table then goes to stderr)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="M=5000, N=10; exit 1 unless every count is exact"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every count is exact (implied by --smoke)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run the pushsvc processes under cProfile, files in DIR, and "
        "report their top functions (slows them down)",
    )
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds after the last 202 (default 30 + N*M/200k)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        help="the drain ends after this long with no delivery",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    events = args.events or (5000 if args.smoke else 100_000)
    subscribers = args.subscribers or (10 if args.smoke else 100)
    if events < 1 or subscribers < 1 or args.batch < 1 or args.publishers < 1:
        raise SystemExit("events, subscribers, batch and publishers must be at least 1")
    scenarios = [
        Scenario(
            events,
            args.batch,
            subscribers,
            int(web),
            args.publishers,
            projection,
            tuple(args.server_arg),
        )
        for web in args.web
        for projection in args.projection or DEFAULT_PROJECTIONS
    ]
    table = sys.stderr if args.json else sys.stdout
    about = machine("orjson", "gevent", "redis", "uvloop", "numpy")
    print(f"# {about['cpu']}, {about['nproc']} cores, load {about['loadavg']}", file=table)
    print(table_header(), file=table, flush=True)
    failed = False
    for scenario in scenarios:
        row = run_scenario(scenario, args)
        row["machine"] = {**about, "loadavg": [round(x, 2) for x in os.getloadavg()]}
        print(table_row(row), file=table, flush=True)
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
            sys.stdout.flush()
        if row["status"] != "ok" or ((args.smoke or args.check) and not exact(row)):
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
