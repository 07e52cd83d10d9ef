"""Running a benchmark as its smoke tests do: `python -m bench.<name> ARGS` from the repository
root, in a process of its own, with this tree's `src/` and `tests/` first on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness.redis_server import BINARY_ENV, find_redis_server

REPO = Path(__file__).resolve().parents[2]


def run_bench(
    name: str, *args: str, timeout: float, redis: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `bench.<name>`; `timeout` only guards against a hang. With `redis`, the benchmark's
    servers use the redis-server the rest of the suite uses (the test skips without one)."""
    paths = [str(REPO / "src"), str(REPO / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    if redis:
        binary = find_redis_server()
        if binary is None:
            pytest.skip("no redis-server")
        env[BINARY_ENV] = binary
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_rows(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON objects a benchmark printed, one a line (other lines left out)."""
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
