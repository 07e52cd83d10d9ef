"""Where the suite's CPU goes, per test file: a pytest plugin and its summary.

Seconds of wall time say little on a shared 2-core machine (a loaded one doubles them); CPU
seconds say what a file costs wherever it runs. Per file, the plugin adds up, over its tests
(setup, call and teardown): the wall time, this process's CPU (every thread of it:
`time.process_time`) and the CPU of the child processes reaped meanwhile (the `pushsvc`,
`redis-server` and browser processes a test or a module's fixture started and stopped:
`RUSAGE_CHILDREN`; those forked by harness.forked_starts are counted as they end), how many
pushsvc processes it started (`PushsvcProcess`) and how many of those were forks.
Processes of session-scoped fixtures are reaped at the end and counted nowhere. Each xdist
worker writes its own JSON file:

    CPU_PER_FILE_DIR=/tmp/cpu .venv-test/bin/pytest -p support.cpu_per_file
    .venv-test/bin/python -m support.cpu_per_file /tmp/cpu     # PYTHONPATH=tests

The summary: the totals, by folder, and the files that cost most.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path

import pytest
from harness.forked_starts import Forker
from harness.live import PushsvcProcess

Costs = dict[str, list[float]]
"""File -> [wall s, own CPU s, children's CPU s, tests, pushsvc processes started]."""

_COLUMNS = 6
_costs: Costs = defaultdict(lambda: [0.0] * _COLUMNS)
_spans: list[tuple[str, float, float]] = []
"""(file, start, end) of each test on this worker, wall clock: where the workers idled."""


def _children_cpu() -> float:
    """Of the children reaped so far, this process's own and those forked for it by its
    helpers (harness.forked_starts), whose parent is the helper."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime + Forker.children_cpu


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    wall, own, children = time.monotonic(), time.process_time(), _children_cpu()
    started, forked = len(PushsvcProcess.started), Forker.forked
    began = time.time()
    yield
    _spans.append((item.location[0], began, time.time()))
    cost = _costs[item.location[0]]
    cost[0] += time.monotonic() - wall
    cost[1] += time.process_time() - own
    cost[2] += _children_cpu() - children
    cost[3] += 1
    cost[4] += len(PushsvcProcess.started) - started
    cost[5] += Forker.forked - forked


def pytest_sessionfinish() -> None:
    out = Path(os.environ.get("CPU_PER_FILE_DIR", "cpu-per-file"))
    out.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (out / f"{worker}.json").write_text(json.dumps(dict(_costs)))
    (out / f"{worker}.spans").write_text(json.dumps(_spans))


def timeline(directory: Path, top: int = 8) -> str:
    """Each worker's busy seconds and when it ran out of work, from the run's first test:
    the gap between the first worker out and the last is the run's tail, and the files
    that ran last on the last worker are what made it."""
    workers = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.spans"))}
    workers = {name: spans for name, spans in workers.items() if spans}
    if not workers:
        return ""
    first = min(start for spans in workers.values() for _, start, _ in spans)
    lines = ["worker   busy s   out at s"]
    for name, spans in workers.items():
        busy = sum(end - start for _, start, end in spans)
        lines.append(f"{name:8} {busy:6.0f} {max(e for _, _, e in spans) - first:10.0f}")
    last = max(workers.values(), key=lambda spans: max(e for _, _, e in spans))
    runs: list[tuple[str, float, float]] = []  # consecutive tests of one file, merged
    for name, start, end in last:
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1], end)
        else:
            runs.append((name, start, end))
    lines.append("the last worker's last files (start s, seconds):")
    for name, start, end in runs[-top:]:
        lines.append(f"  {start - first:6.0f} {end - start:6.0f}  {name}")
    return "\n".join(lines)


def summary(directory: Path, top: int = 40) -> str:
    costs: Costs = defaultdict(lambda: [0.0] * _COLUMNS)
    for path in directory.glob("*.json"):
        for name, cost in json.loads(path.read_text()).items():
            cost += [0.0] * (_COLUMNS - len(cost))  # written before the starts were counted
            costs[name] = [a + b for a, b in zip(costs[name], cost, strict=True)]
    folders: Costs = defaultdict(lambda: [0.0] * _COLUMNS)
    for name, cost in costs.items():
        folder = os.path.dirname(name)
        folders[folder] = [a + b for a, b in zip(folders[folder], cost, strict=True)]

    def rows(table: Costs, limit: int) -> list[str]:
        ranked = sorted(table.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))[:limit]
        return [
            f"{name:64} {w:7.0f} {own:7.1f} {kids:7.1f} {n:5.0f} {starts:6.0f} {forks:6.0f}"
            for name, (w, own, kids, n, starts, forks) in ranked
        ]

    head = f"{'':64} {'wall s':>7} {'own s':>7} {'child s':>7} {'tests':>5} {'starts':>6}"
    head += f" {'forked':>6}"
    totals = [sum(cost[i] for cost in costs.values()) for i in range(_COLUMNS)]
    return "\n".join(
        [
            f"CPU {totals[1] + totals[2]:.0f} s (own {totals[1]:.0f} s, children "
            f"{totals[2]:.0f} s) in {totals[3]:.0f} tests, {totals[0]:.0f} test-seconds, "
            f"{totals[4]:.0f} pushsvc processes started ({totals[5]:.0f} of them forked)",
            head,
            *rows(folders, len(folders)),
            "",
            head,
            *rows(costs, top),
        ]
    )


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "cpu-per-file")
    print(summary(folder))
    print(timeline(folder))
