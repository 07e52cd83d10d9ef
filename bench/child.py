"""The load generator as a child process that reports JSON lines on stdout, and one scenario
of a benchmark: a deployment started, load generators run against it, everything stopped
(shared by bench/fanout.py and bench/e2e.py)."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

import orjson

from bench.loadgen import cclient
from bench.servers import REPO, ServerUnderTest


class JsonLinesChild:
    """A program run from the repository root (`command`: its argv); records read off its
    stdout."""

    def __init__(self, command: Sequence[str], *, name: str) -> None:
        self.name = name
        paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        # Lives as long as the child; close() closes it.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(command),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._records: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._records.put(orjson.loads(line))
        self._records.put(None)

    def record(self, timeout: float, phase: str | None = None) -> dict[str, Any]:
        """The next record (of `phase`, when given); RuntimeError if none comes in time."""
        try:
            record = self._records.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name} silent for {timeout:.0f} s") from None
        if record is None:
            raise RuntimeError(f"{self.name} exited: {self.stderr_tail()}")
        if phase is not None and record.get("phase") != phase:
            raise RuntimeError(f"expected {phase!r}, got {record!r:.300}")
        return record

    def tell(self, line: bytes) -> None:
        """Write one line to the child's stdin (its go / published signals)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(line + b"\n")
            self.proc.stdin.flush()

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-1500:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._stderr.close()


def loadgen(
    mode: str, streams: Sequence[str], subscribers: int, events: int,
    timeouts: dict[str, float], *more: str,
) -> JsonLinesChild:  # fmt: skip
    """`python -m bench.loadgen --mode <mode>` on `streams`; `timeouts` by name (connect, publish,
    drain, idle); `more` arguments as they are."""
    argv = [
        "--mode", mode, *[arg for url in streams for arg in ("--stream", url)],
        "--subscribers", str(subscribers), "--events", str(events),
        *[arg for name, s in timeouts.items() for arg in (f"--{name}-timeout", str(s))], *more,
    ]  # fmt: skip
    return JsonLinesChild(
        [sys.executable, "-m", "bench.loadgen", *argv], name=f"load generator ({mode})"
    )


def c_subscribers(
    stream: str, subscribers: int, events: int, timeouts: dict[str, float], *more: str
) -> JsonLinesChild:
    """The C subscribers (bench/loadgen/sse_clients.c, compiled on first use) on `stream`:
    `loadgen("deliveries", ...)`'s records and stdin lines, for pushsvc, without publishing.
    Raises `cclient.CompilerMissing` without a C compiler."""
    argv = [
        str(cclient.binary()), "--stream", stream, "--subscribers", str(subscribers),
        "--events", str(events),
        *[arg for name, s in timeouts.items() for arg in (f"--{name}-timeout", str(s))], *more,
    ]  # fmt: skip
    return JsonLinesChild(argv, name="load generator (C)")


Steps = Callable[[Callable[..., JsonLinesChild]], dict[str, Any]]


def run_scenario(row: dict[str, Any], deployment: ServerUnderTest, steps: Steps) -> dict[str, Any]:
    """Start `deployment`, run `steps(loadgen)` (it starts its load generators with the
    `loadgen` it is given) and return `row` completed with what the steps return; on a failure,
    `row` as an error with the load generators' stderr. Stops every child and the deployment."""
    children: list[JsonLinesChild] = []

    def start(*args: Any) -> JsonLinesChild:
        children.append(loadgen(*args))
        return children[-1]

    try:
        deployment.start()
        return {**row, "status": "ok", **steps(start)}
    except (RuntimeError, OSError, KeyError) as exc:
        tail = " ".join(child.stderr_tail() for child in children)
        return {**row, "status": "error", "reason": f"{exc} {tail}".strip()[-2000:]}
    finally:
        for child in children:
            child.close()
        deployment.stop()
