"""What the stand-alone benchmarks share (`bench.hostile_bodies`, `bench.hostile_listings`,
`bench.hostile_streams`): a process started from any tree's `src/` with the standard library
only, nothing from tests/, and the latency summary they print."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

SRC = Path(__file__).resolve().parents[1] / "src"
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
_REDIS_READY = re.compile(r"ready to accept connections", re.IGNORECASE)
_LEASE = re.compile(r"took the lease")


def pushsvc_env(src: Path) -> dict[str, str]:
    """This environment less its PUSHSVC_ settings, running pushsvc from `src`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env.update(PYTHONPATH=str(src), PYTHONUNBUFFERED="1")
    return env


@contextmanager
def started(
    argv: Sequence[str], env: dict[str, str], ready: re.Pattern[str]
) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """`argv` running until the block ends, once its log matches `ready` (the match is
    yielded with the process). The log goes to a temporary file: a pipe nobody reads would
    fill up and stop it."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while (found := ready.search(_read(log))) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{list(argv[:4])} did not start: {_read(log)[-2000:]}")
                time.sleep(0.05)  # a process's start, polled: nothing to wait on
            yield proc, found
        finally:
            proc.terminate()
            proc.wait(30)


@contextmanager
def serving(
    src: Path,
    *,
    redis: bool = False,
    args: Sequence[str] = (),
    settings: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`pushsvc serve --port 0 --tick 0 *args` from `src`, or with `redis` a `pushsvc web`
    with those arguments beside a `pushsvc aggregate` on a redis-server of its own (on a unix
    socket); yields the serving process and its port. `settings`: `PUSHSVC_` variables for
    every pushsvc process (the aggregator's settings, e.g. `PUSHSVC_HISTORY`)."""
    env = {**pushsvc_env(src), **(settings or {})}
    pushsvc = [sys.executable, "-m", "pushsvc"]
    with ExitStack() as stack:
        role = "serve"
        if redis:
            # The suite's choice of binary when a smoke test runs this (harness.redis_server).
            binary = os.environ.get("PUSHSVC_TEST_REDIS_SERVER") or shutil.which("redis-server")
            if binary is None:
                raise SystemExit("--redis needs redis-server on PATH")
            data = stack.enter_context(tempfile.TemporaryDirectory(prefix="pushsvc-bench-"))
            sock = f"{data}/redis.sock"
            argv = [binary, "--port", "0", "--unixsocket", sock, "--save", "", "--dir", data]
            stack.enter_context(started(argv, env, _REDIS_READY))
            env["PUSHSVC_REDIS_URL"] = f"unix://{sock}"
            aggregate = [*pushsvc, "aggregate", "--port", "0", "--tick", "0"]
            stack.enter_context(started(aggregate, env, _LEASE))
            role = "web"
        argv = [*pushsvc, role, "--port", "0", "--tick", "0", *args]
        proc, found = stack.enter_context(started(argv, env, LISTENING))
        yield proc, int(found.group(1))


def _read(log: IO[str]) -> str:
    log.seek(0)
    return log.read()


def latency_summary(took: list[float], failed: int | None = None) -> dict[str, float]:
    """Request latencies (s) as the figures the benchmarks print: count, p50, p99, max (ms)
    and, where given, failed requests."""
    # One request (a producer stuck in a listen queue for the whole phase) is its own p50 and p99.
    cuts = statistics.quantiles(took * 2 if len(took) == 1 else took, n=100, method="inclusive")
    summary: dict[str, float] = {"posts": len(took)}
    if failed is not None:
        summary["failed"] = failed
    summary["p50_ms"] = round(cuts[49] * 1000, 1)
    summary["p99_ms"] = round(cuts[98] * 1000, 1)
    summary["max_ms"] = round(max(took) * 1000, 1)
    return summary
