"""Helpers shared by the benchmarks: CPU/wall timing, latency percentiles, machine description.

Rates are reported per core from ``time.process_time()`` (CPU time of this process, so another
process stealing the core does not make us look slower) next to the wall-clock rate.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

__all__ = ["Timing", "machine", "median", "nearest_rank_us", "timed"]


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


def median(xs: Sequence[float]) -> float:
    ordered = sorted(xs)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def nearest_rank_us(sorted_ns: Sequence[int], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of sorted nanosecond durations, in µs.

    Nearest rank, not interpolation: the reported value is one an event really took, and at
    least a fraction ``q`` of the events took no longer.
    """
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000


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


def machine(*dists: str) -> dict[str, object]:
    """Where and when a benchmark ran, with the versions of ``dists``; the load average matters
    on a shared machine, so it is recorded too."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "nproc": usable,
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "versions": {d: _version(d) for d in dists},
    }
