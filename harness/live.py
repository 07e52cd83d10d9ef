"""Real processes and real sockets for tests and benchmarks: pushsvc, HTTP, an SSE reader."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.forked_starts import ForkedProcess, Forker
from harness.sse_parser import EventStreamParser, SSEMessage

# The src/ directory this package was imported from, for child processes' PYTHONPATH.
SRC = str(Path(__file__).resolve().parents[1] / "src")
PARTITION_DETAILS = "info,pushsvc.partitions=debug"
"""The `--log-level` the processes started here run with unless a test says otherwise: each
partition's lease taken, given up or lost is a line of its own (DEBUG, `pushsvc.partitions`),
where `holds_lease` and the fault tests see the moment a lease changes hands. A test of what
is logged by default gives `PUSHSVC_LOG_LEVEL=info`."""
_LISTENING = re.compile(r"listening on https?://([^:]+):(\d+)")


class PushsvcProcess:
    """`python -m pushsvc <command> ...` in a child process; port 0 unless given."""

    started: ClassVar[list[PushsvcProcess]] = []
    """Every process started in this interpreter, so a test session can read all their logs."""
    forker: ClassVar[Forker | None] = None
    """Set (by the test suite, not the benchmarks): serving commands are forked from a
    process that imported pushsvc once (harness.forked_starts), where that runs them as
    `exec` would."""

    def __init__(
        self,
        command: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        http: bool = True,
        python_args: Sequence[str] = (),
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        # python_args: e.g. ("-m", "cProfile", "-o", path) to profile the process.
        # preexec_fn: run in the child before it starts, e.g. to set its resource limits.
        self.preexec_fn = preexec_fn
        self.argv = [sys.executable, *python_args, "-m", "pushsvc", command, *args]
        if http and not any(a.startswith("--port") for a in args):
            self.argv += ["--port", "0"]
        # Only the settings the test names: a PUSHSVC_* variable of the caller's shell (or of
        # CI) would change what is under test, and an unknown one stops the server.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
        self.env = {
            **inherited,
            "PYTHONPATH": SRC,
            "PYTHONUNBUFFERED": "1",
            "PUSHSVC_LOG_LEVEL": PARTITION_DETAILS,
            **(env or {}),
        }
        self.http = http
        self.port = 0
        self.proc: subprocess.Popen[str] | ForkedProcess | None = None
        self.output: list[str] = []
        self._ready = threading.Event()
        # Notified on every line and at exit: wait_for_log sleeps until there is one to read.
        self._logged = threading.Condition()
        self._exited = False

    def start(self, timeout: float = 20) -> PushsvcProcess:
        PushsvcProcess.started.append(self)
        self.proc = self._forked() or subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=self.preexec_fn,
        )
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.argv} did not start:\n{''.join(self.output)}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.argv} exited:\n{''.join(self.output)}")
        return self

    def _forked(self) -> ForkedProcess | None:
        forker = PushsvcProcess.forker
        if forker is None or self.preexec_fn is not None:
            return None
        if not forker.can_start(self.argv, self.env):
            return None
        return forker.start(self.argv, self.env)

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._logged:
                self.output.append(line)
                self._logged.notify_all()
            match = _LISTENING.search(line)
            if match:
                self.port = int(match[2])
                self._ready.set()
            elif not self.http and ("pushsvc aggregator" in line):
                self._ready.set()
        with self._logged:
            self._exited = True
            self._logged.notify_all()
        self._ready.set()  # exited: wake start()

    def wait_for_log(self, pattern: str, timeout: float = 20) -> None:
        """Until a line of the process's log matches `pattern` (one logged before counts).
        Each line is searched once, as it comes: a chatty process waited on for long cost a
        rescan of its whole log every poll."""
        matches = re.compile(pattern).search
        deadline = time.monotonic() + timeout
        searched = 0
        with self._logged:
            while True:
                if any(matches(line) for line in self.output[searched:]):
                    return
                searched = len(self.output)
                left = deadline - time.monotonic()
                if left <= 0 or self._exited:
                    break
                self._logged.wait(left)
        raise AssertionError(f"no log line matching {pattern!r}:\n{''.join(self.output)}")

    def holds_lease(self, key: str | None = None) -> bool:
        """Whether this aggregator said last that it took a lease (`key`, else any) and still
        runs. Every aggregator process takes its share of the partitions' leases, the
        bridge's, and with `[[derive]]` rules the deriver's; one it hands over to another it
        says it gave up. A partition's lease is said at DEBUG (`PARTITION_DETAILS`, on by
        default here): the log, not /metrics, since the fault tests ask every few ms, of
        processes frozen or without HTTP, at the moment a lease changes hands."""
        for line in reversed(self.output):
            if key is not None and not line.rstrip().endswith(f" the lease {key}"):
                continue
            if "took the lease" in line:
                return self.proc is not None and self.proc.poll() is None
            if "lost the lease" in line or "gave up the lease" in line:
                return False
        return False

    def log_tail(self, lines: int = 20) -> str:
        return "".join(self.output[-lines:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        self._release()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._release()

    def _release(self) -> None:
        assert self.proc is not None
        self._pumper.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | Any = None,
    *,
    content_type: str | None = "application/json",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
    source: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a fresh connection (from `source`, an address of 127.0.0.0/8, if
    given); JSON-encodes non-bytes bodies."""
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    all_headers = dict(headers or {})
    if content_type is not None and body is not None:
        all_headers.setdefault("Content-Type", content_type)
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=None if source is None else (source, 0)
    )
    try:
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def metric(port: int, name: str) -> float:
    """One unlabelled sample of the server's /metrics (0 where it is absent)."""
    text = request(port, "GET", "/metrics")[2].decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def metric_sample(port: int, name: str, labels: str = "") -> float:
    """One sample of the server's /metrics, `labels` as /metrics writes them
    (`{reason="gone"}`); fails when the server has none (where `metric` would say 0)."""
    text = request(port, "GET", "/metrics")[2].decode()
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert found, f"no {name}{labels} in /metrics"
    return float(found[1])


def subscribers(port: int) -> float:
    """The streams the server holds (`pushsvc_subscribers`)."""
    return metric_sample(port, "pushsvc_subscribers")


@contextlib.contextmanager
def aggregator_and_two_webs(env: Mapping[str, str]) -> Iterator[list[PushsvcProcess]]:
    """A deployment on Redis (`env` names it): `pushsvc aggregate`, once it holds the lease,
    and two `pushsvc web`; stopped on the way out."""
    procs = [
        PushsvcProcess("aggregate", env=env, http=False).start(),
        PushsvcProcess("web", env=env).start(),
        PushsvcProcess("web", env=env).start(),
    ]
    try:
        procs[0].wait_for_log("took the lease")
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def post(port: int, topic: str, events: Any, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = request(port, "POST", f"/topics/{topic}/events", events, **kwargs)
    return status, json.loads(body) if body else None


@contextmanager
def serving_on(backend: str, *args: str) -> Iterator[PushsvcProcess]:
    """`pushsvc serve` with `args`: embedded (`memory`), or on a redis-server of its own
    (`redis`) under a prefix of its own."""
    from harness.redis_server import RedisServer

    redis_server = None
    if backend == "redis":
        redis_server = RedisServer().start()
        args += ("--redis-url", redis_server.url, "--prefix", f"t{uuid.uuid4().hex[:8]}:")
    proc = PushsvcProcess("serve", *args).start()
    try:
        yield proc
    finally:
        proc.stop()
        if redis_server is not None:
            redis_server.stop()


def wait_published(port: int, topic: str, last: dict[str, Any], timeout: float = 60) -> None:
    """Wait until `topic`'s latest update is that of `last`, the last event posted to it: a
    202 means the batch is logged, and its updates follow as the aggregator gets to them
    (in slices, between other requests), so a read right after a POST may not see them yet."""

    def published() -> bool:
        status, _, body = request(port, "GET", f"/topics/{topic}/stats")
        if status != 200:
            return False
        event = json.loads(body).get("event") or {}
        if event.get("value") != last["value"]:
            return False
        return "ts" not in last or abs(float(event.get("ts", 0)) - float(last["ts"])) < 1e-3

    wait_until(published, timeout, what=f"{topic}'s update of its last event")


def wait_caught_up(port: int, timeout: float = 60) -> None:
    """Wait until every entry logged has been applied and published (`/readyz` shows no
    partition's lag): a 202 means logged, and a read right after a big batch (a backfill)
    may find its updates, series points or alerts still on their way."""

    def caught_up() -> bool:
        status, _, body = request(port, "GET", "/readyz")
        shards = json.loads(body).get("shards", {}) if body else {}
        return status == 200 and not any(s["lag_entries"] for s in shards.values())

    wait_until(caught_up, timeout, what="every entry logged published (no lag)")


@dataclass
class SSEClient:
    """A real EventSource-like reader over HTTP/1.1 (chunked), parsed by a WHATWG parser."""

    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    raw: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        self._conn.request("GET", self.path, headers=self.headers)
        self._sock = self._conn.sock  # getresponse may hand the socket over to the response
        self._resp = self._conn.getresponse()
        self.status = self._resp.status
        self.response_headers = {k.lower(): v for k, v in self._resp.getheaders()}
        self._parser = EventStreamParser()
        self._pending: list[SSEMessage] = []

    def next(self, timeout: float | None = None) -> SSEMessage:
        """The next dispatched message; raises TimeoutError when none arrives in time (the
        stream is unusable after that: a timed-out response cannot be read again)."""
        self._read_until(lambda: bool(self._pending), timeout, "SSE message")
        return self._pending.pop(0)

    def take_parsed(self) -> list[SSEMessage]:
        """The messages parsed already and not yet taken: with the taken ones, what an
        EventSource had dispatched when it sends `last_event_id` (a test that drops the
        stream counts them as received)."""
        parsed, self._pending = self._pending, []
        return parsed

    @property
    def last_event_id(self) -> str:
        """What an EventSource sends as `Last-Event-ID` when it reconnects now: the last `id:`
        of the blocks parsed so far, an `id:` block without data included."""
        return self._parser.last_event_id

    def wait_last_event_id(self, done: Callable[[str], bool], timeout: float | None = None) -> str:
        """Read on until the last event id satisfies `done` (an `id:` block dispatches nothing,
        so `next` would not read it alone); that id."""
        self._read_until(lambda: done(self.last_event_id), timeout, "id")
        return self.last_event_id

    def wait_comments(self, count: int, timeout: float | None = None) -> None:
        """Read on until `count` comment lines (heartbeats) have arrived in all."""
        self._read_until(lambda: len(self.comments) >= count, timeout, f"{count} comments")

    def _read_until(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} on {self.path} in time")
            self._sock.settimeout(remaining)
            try:
                chunk = self._resp.read1(65536)
            except TimeoutError:
                raise TimeoutError(f"no {what} on {self.path} in time") from None
            if not chunk:
                raise EOFError(f"stream {self.path} ended")
            chunk = self._decoded(chunk)
            self.raw += chunk
            self._pending.extend(self._parser.feed(chunk))

    def _decoded(self, chunk: bytes) -> bytes:
        """What a piece of the body says (a reader of an encoded stream decodes it here)."""
        return chunk

    @property
    def comments(self) -> list[str]:
        """Comment lines received so far (heartbeats are empty comments)."""
        return self._parser.comments

    def next_data(self, event: str = "stats", timeout: float | None = None) -> tuple[str, Any]:
        """(id, parsed data) of the next message of type `event`, skipping others."""
        while True:
            message = self.next(timeout)
            if message.event == event:
                return message.id, json.loads(message.data)

    def take(
        self, n: int, event: str = "stats", timeout: float | None = None
    ) -> list[tuple[str, Any]]:
        return [self.next_data(event, timeout) for _ in range(n)]

    def wait_closed(self, timeout: float | None = None) -> None:
        """Read on until the server ends the stream; TimeoutError if it does not in time."""
        try:
            while True:
                self.next(timeout)
        except EOFError:
            return

    def close(self) -> None:
        self._resp.close()
        self._conn.close()
        self._sock.close()

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tool_env(env: Mapping[str, str] | None) -> dict[str, str]:
    # Only what a tool needs, so that nothing of the caller's shell (PUSHSVC_URL, a proxy)
    # changes what it does.
    return {"PYTHONPATH": SRC, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}


def run_tool(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`pushsvc ARGS` (publish, token, replay...) run to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pushsvc", *args],
        input=stdin,
        env=_tool_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def start_tool(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """`pushsvc ARGS` (subscribe...) started, its standard output a pipe to read lines from
    (close it when done); its errors go where the test's go, so a failing test shows them."""
    return subprocess.Popen(
        [sys.executable, "-m", "pushsvc", *args],
        env=_tool_env(env),
        stdout=subprocess.PIPE,
        text=True,
    )


def stalled_reader(port: int, path: str) -> socket.socket:
    """A client that asks for a stream and never reads it, with a tiny receive buffer, so
    the server's writes to it soon block (a slow or frozen subscriber). Close it when done."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 10,
    interval: float | None = None,
    *,
    what: str = "the condition was met",
) -> None:
    """Poll `predicate` until it is true; for conditions that have no event to wait on (the
    suite's one poller: tests and benchmarks use it).

    `interval`: a fixed pause between polls, for a caller that must see a moment as it comes.
    Unset, the pause starts at 10 ms and grows to 100 ms: most conditions hold at once or
    soon, and a predicate is often a request to a server, whose every poll costs the same
    cores as what is awaited.
    """
    deadline = time.monotonic() + timeout
    pause = interval if interval is not None else _FIRST_PAUSE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(pause)
        if interval is None:
            pause = min(pause * 1.5, _LONGEST_PAUSE)


_FIRST_PAUSE = 0.01
_LONGEST_PAUSE = 0.1
