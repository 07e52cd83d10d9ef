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

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

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
    streams: str | Sequence[str], subscribers: int, events: int, timeouts: dict[str, float],
    *more: str,
) -> JsonLinesChild:  # fmt: skip
    """The C subscribers (bench/loadgen/sse_clients.c, compiled on first use) on `streams`
    (round-robin): `loadgen("deliveries", ...)`'s records and stdin lines, for pushsvc, without
    publishing. Raises `cclient.CompilerMissing` without a C compiler."""
    urls = [streams] if isinstance(streams, str) else list(streams)
    argv = [
        str(cclient.binary()), *[arg for url in urls for arg in ("--stream", url)],
        "--subscribers", str(subscribers), "--events", str(events),
        *[arg for name, s in timeouts.items() for arg in (f"--{name}-timeout", str(s))], *more,
    ]  # fmt: skip
    return JsonLinesChild(argv, name="load generator (C)")


class PublishedCSubscribers:
    """C subscribers and the Python load generator (without streams) that publishes to them,
    seen by a driver as one `--publish` load generator: the same records (`opened`, `drained`,
    `result` with the publisher's figures) and stdin lines (go, measured)."""

    def __init__(self, publisher: JsonLinesChild, subscribers: JsonLinesChild) -> None:
        self.publisher, self.subscribers = publisher, subscribers
        self._published: dict[str, Any] = {}  # the publisher's drained record
        self._drained: dict[str, Any] = {}  # the subscribers'

    @property
    def pids(self) -> list[int]:
        return [*self.publisher.pids, *self.subscribers.pids]

    def record(self, timeout: float, phase: str | None = None) -> dict[str, Any]:
        if phase == "drained":
            # The publisher, holding no stream, drains once it has published: only then are
            # the subscribers told so, and drain in turn.
            self._published = self.publisher.record(timeout, phase="drained")
            self.subscribers.tell(b"published")
        record = self.subscribers.record(timeout, phase)
        if record.get("phase") == "drained":
            self._drained = record
        elif record.get("phase") == "opened":
            self.publisher.record(timeout, phase="opened")
        elif record.get("phase") == "result":
            record |= self._publish_figures(record, self.publisher.record(timeout, "result"))
        return record

    def _publish_figures(self, result: dict[str, Any], published: dict[str, Any]) -> dict[str, Any]:
        """The publisher's figures, and those of bench/loadgen/run.py that need both sides."""
        first_sent = self._published["drained_at"] - published["seconds"]
        figures = {key: published[key] for key in
                   ("rate", "published", "publish_errors", "publish_per_s")}  # fmt: skip
        drained_at = self._drained["drained_at"]
        last = self._drained["last_delivery_at"] if result["received"] else drained_at
        figures["deliveries_per_s"] = round(result["distinct"] / max(last - first_sent, 1e-9), 1)
        figures["seconds"] = round(drained_at - first_sent, 3)
        return figures

    def tell(self, line: bytes) -> None:
        self.publisher.tell(line)
        self.subscribers.tell(line)

    def stderr_tail(self) -> str:
        return f"{self.publisher.stderr_tail()} {self.subscribers.stderr_tail()}"

    def close(self) -> None:
        self.publisher.close()
        self.subscribers.close()


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
