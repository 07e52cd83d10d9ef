"""Helpers shared by the benchmarks: CPU/wall timing, latency percentiles, machine description,
CPU seconds of other processes and of a redis-server, the command line's common options and
the report (a table and JSON lines).

Rates are reported per core from ``time.process_time()`` (CPU time of this process, so another
process stealing the core does not make us look slower) next to the wall-clock rate.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import orjson
import redis
from harness.live import request
from harness.procfs import cpu_seconds

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Timing:
    """``count`` operations done in ``cpu_s`` seconds of process CPU time (``wall_s`` wall)."""

    count: int
    cpu_s: float
    wall_s: float

    @property
    def per_cpu_s(self) -> float:
        return self.count / self.cpu_s if self.cpu_s > 0 else math.inf

    @property
    def per_wall_s(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else math.inf


def timed(run: Callable[[], int]) -> Timing:
    """Time ``run()``, which returns how many operations it did."""
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    count = run()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return Timing(count, cpu, wall)


def percentiles(samples: Iterable[float], qs: Sequence[float]) -> list[float | None]:
    """Nearest-rank percentiles (q in 0..1]; None for no samples.

    Nearest rank, not interpolation: a reported value is one a sample really took, and at
    least a fraction ``q`` of the samples are no larger.
    """
    ordered = sorted(samples)
    n = len(ordered)
    return [ordered[min(n, max(1, math.ceil(q * n))) - 1] if n else None for q in qs]


def redis_cpu_s(client: redis.Redis) -> float:
    """A redis-server's CPU seconds so far (user + system, from INFO)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def metric(port: int, name: str) -> float | None:
    """An unlabelled sample of a pushsvc process's /metrics; None when it has none."""
    return metrics(port, name)[name]


def metrics(port: int, *names: str) -> dict[str, float | None]:
    """Unlabelled samples of a pushsvc process's /metrics, from one scrape; None for one it
    has not."""
    text = request(port, "GET", "/metrics")[2].decode()
    found = {}
    for name in names:
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        found[name] = float(match[1]) if match else None
    return found


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cores() -> int:
    return len(os.sched_getaffinity(0))


def machine(*dists: str) -> dict[str, object]:
    """Where and when a benchmark ran, with the versions of ``dists``; the load average matters
    on a shared machine, so it is recorded too."""
    return {
        "platform": platform.platform(),
        "nproc": cores(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "versions": {d: _version(d) for d in dists},
    }


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
    """CPU seconds per named process (/proc/<pid>/stat) between `start()` and `stop()`, and of
    the rest of the machine."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float | None] = {}
        self._busy = self._irq = self._wall = 0.0

    def start(self) -> CpuMeter:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._busy, self._irq = machine_seconds()
        self._wall = time.monotonic()
        return self

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
            "machine_capacity_s": round(wall * cores(), 2),
        }


def parser(doc: str, *, smoke: str | None = None) -> argparse.ArgumentParser:
    """A benchmark's command line: its module doc as help, ``--json``, and with ``smoke`` (what
    a smoke run is) ``--smoke`` and ``--check``."""
    out = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    out.add_argument(
        "--json", action="store_true", help="JSON lines on stdout (the table then goes to stderr)"
    )
    if smoke is not None:
        out.add_argument(
            "--smoke", action="store_true", help=f"{smoke}; exit 1 unless every count is exact"
        )
        out.add_argument(
            "--check", action="store_true",
            help="exit 1 unless every count is exact (implied by --smoke)",
        )  # fmt: skip
    return out


def fmt(value: object) -> str:
    """A table cell: '-' for None, floats to a precision their size deserves."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{2 if abs(value) >= 1 else 3}f}"
    return str(value)


Column = tuple[str, int, str | Callable[[dict[str, Any]], object]]
"""(heading, width, the row's key or a function of the row)."""


class Report:
    """A benchmark's rows: a table on stdout (on stderr with ``--json``, whose JSON lines then
    go to stdout), each row followed by its `notes` lines. A row whose status is not "ok" is
    its first `ident` cells and its reason."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        json: bool,
        ident: int = 1,
        notes: Callable[[dict[str, Any]], list[str]] = lambda row: [],
    ) -> None:
        self.columns, self.json, self.ident, self._notes = columns, json, ident, notes
        self.table = sys.stderr if json else sys.stdout

    def say(self, line: str) -> None:
        print(line, file=self.table, flush=True)

    def header(self) -> None:
        self.say(" ".join(f"{name:>{width}}" for name, width, _ in self.columns))

    def _cells(self, row: dict[str, Any], columns: Sequence[Column]) -> str:
        values = [get(row) if callable(get) else row[get] for _, _, get in columns]
        return " ".join(f"{fmt(v):>{w}}" for v, (_, w, _) in zip(values, columns, strict=True))

    def row(self, row: dict[str, Any]) -> None:
        if row.get("status", "ok") != "ok":
            head = self._cells(row, self.columns[: self.ident])
            self.say(f"{head} {row['status'].upper()}: {str(row.get('reason', ''))[:400]}")
        else:
            notes = [f"{'':>16} {note}" for note in self._notes(row)]
            self.say("\n".join([self._cells(row, self.columns), *notes]))
        if self.json:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
            sys.stdout.flush()
