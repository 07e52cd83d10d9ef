"""Instructions per event of the aggregator, counted by callgrind: a before/after that a busy
machine cannot blur.

Seconds on a shared 2-vCPU VM drift by tens of percent over minutes; the instructions a fixed
workload executes do not (the same total twice, whatever else runs). Each tree's source is
run twice under `valgrind --tool=callgrind`, with the workload and without its events, so the
difference is the events' cost alone (imports and start-up subtracted). It counts
instructions, not cycles: a change in cache behaviour would not show here (check those with
`bench.aggregator`'s seconds).

    python -m bench.instructions --tree before=/tmp/c0ba8b7/src --tree after=src
    python -m bench.instructions --tree after=src --events 5000 --json

A tree is any checkout's `src/` (e.g. `git worktree add /tmp/c0ba8b7 c0ba8b7`). The workload
(`bench/instructions_workload.py`) runs on every layout this project has had.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

WORKLOAD = Path(__file__).with_name("instructions_workload.py")
SEGMENTS = (
    ("scalar", 1, "scalar statistics, 3 windows, event by event"),
    ("scalar", 100, "scalar statistics, 3 windows, batches of 100"),
    ("all", 1, "every statistic, 3 windows, event by event"),
    ("all", 100, "every statistic, 3 windows, batches of 100"),
)
_COLLECTED = re.compile(r"Collected : (\d+)")


def count(src: str, stats: str, events: int, batch: int) -> int:
    """Instructions callgrind counts for the workload on `src`."""
    # Once uncounted first: a tree checked out a moment ago has no bytecode cache yet, and
    # compiling it inside one of the two counted runs (the idle one) skews the difference.
    subprocess.run(
        [sys.executable, str(WORKLOAD), stats, "0", str(batch)],
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
        capture_output=True, check=True,
    )  # fmt: skip
    done = subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, str(WORKLOAD), stats, str(events), str(batch),
        ],
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    trees = [item.split("=", 1) for item in args.tree]
    for stats, batch, what in SEGMENTS:
        row: dict[str, object] = {"segment": what}
        for name, src in trees:
            idle = count(src, stats, 0, batch)
            busy = count(src, stats, args.events, batch)
            row[name] = round((busy - idle) / args.events)
        if args.json:
            print(json.dumps(row))
        else:
            cells = "  ".join(f"{name} {row[name]:>8,}" for name, _ in trees)
            print(f"{what:<48} instructions/event: {cells}")


if __name__ == "__main__":
    main()
