"""Streams never starve producers: a serving process raises its soft open-file limit to the
hard one, caps its streams below it with a headroom, answers streams past the cap with a 503,
and, out of descriptors all the same, takes them back from the connections that waited
longest on their client, with one log line instead of a traceback at every retry. The
servers here run under a low RLIMIT_NOFILE of their own."""

from __future__ import annotations

import json
import re
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from harness.live import PushsvcProcess, request, run_tool, wait_until
from harness.redis_server import RedisServer
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.ops.open_files import HEADROOM_MIN, headroom, stream_cap

LIMIT = 300
CAP = LIMIT - HEADROOM_MIN  # what --max-streams 20000 (the default) is lowered to

# ------------------------------------------------------------------ the rule


@given(st.integers(1, 1 << 31), st.integers(1, 10_000_000))
def test_the_stream_cap_keeps_the_headroom_free_below_the_open_file_limit(
    limit: int, max_streams: int
) -> None:
    cap = stream_cap(limit, max_streams)
    assert 0 <= cap <= max_streams
    assert headroom(limit) >= max(HEADROOM_MIN, limit // 10)
    assert cap == 0 or cap + headroom(limit) <= limit
    if max_streams + headroom(limit) <= limit:
        assert cap == max_streams  # room for all: --max-streams as given


def test_the_default_cap_on_a_machine_whose_hard_limit_is_the_default_max_streams() -> None:
    assert stream_cap(20_000, 20_000) == 18_000
    assert stream_cap(1_048_576, 20_000) == 20_000
    assert stream_cap(1024, 20_000) == 896


# ------------------------------------------------------------------ real servers


def _open_files(soft: int, hard: int) -> Callable[[], None]:
    """For a child process: its RLIMIT_NOFILE (its own children inherit it)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


@dataclass
class Deployment:
    server: PushsvcProcess
    workers: int
    others: list[PushsvcProcess | RedisServer] = field(default_factory=list)

    def stop(self) -> None:
        assert self.server.stop() == 0
        for other in self.others:
            other.stop()


@pytest.fixture(
    params=[
        "serve",
        pytest.param("web", marks=pytest.mark.redis),
        # the supervisor sizes the cap once and hands it to its web workers
        pytest.param("serve --workers 2", marks=[pytest.mark.redis, pytest.mark.slow]),
    ]
)
def low_limit(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    env = {"PUSHSVC_MAX_STREAMS_PER_IP": "10000", "PUSHSVC_HEARTBEAT": "1m"}
    limit = _open_files(LIMIT, LIMIT)
    if request.param == "web":
        redis = RedisServer().start()
        env["PUSHSVC_REDIS_URL"] = redis.url
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
        server = PushsvcProcess("web", env=env, preexec_fn=limit).start()
        deployment = Deployment(server, 1, [aggregator, redis])
    elif request.param == "serve --workers 2":
        server = PushsvcProcess("serve", "--workers", "2", env=env, preexec_fn=limit).start()
        wait_until(lambda: sum("web listening on" in line for line in server.output) == 2, 30)
        deployment = Deployment(server, 2)
    else:
        deployment = Deployment(PushsvcProcess("serve", env=env, preexec_fn=limit).start(), 1)
    yield deployment
    deployment.stop()


_STREAM_OPEN = b"\ndata:"  # the snapshot's first line: the stream is subscribed


def _try_stream(port: int, path: str) -> tuple[socket.socket | None, bytes]:
    """A stream request on a raw keep-alive socket, read until the stream's first message
    (the socket is returned, open) or until the server closes it after a refusal (None and
    the response: the server gives the descriptor back at once)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    try:
        while True:
            data = sock.recv(65536)
            received += data
            head, _, body = received.partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 200") and _STREAM_OPEN in body:
                return sock, received
            if not data:
                sock.close()
                return None, received
    except BaseException:
        sock.close()
        raise


def test_streams_past_the_cap_get_503_while_producers_and_health_checks_answer(
    low_limit: Deployment, topic: str
) -> None:
    port = low_limit.server.port
    cap = CAP * low_limit.workers
    streams: list[socket.socket] = []
    refusals: list[bytes] = []
    try:
        # With --workers 2 the kernel spreads connections over the workers: try until both
        # are full.
        for _ in range(4 * cap):
            sock, response = _try_stream(port, f"/topics/{topic}/stream")
            if sock is not None:
                streams.append(sock)
            else:
                refusals.append(response)
            if len(streams) == cap and len(refusals) >= 20:
                break
        assert len(streams) == cap
        for refusal in refusals:
            head, _, body = refusal.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), refusal
            assert re.search(rb"\r\nRetry-After: \d+\r\n", head), refusal
            assert b"\r\nConnection: close\r\n" in head, refusal
            assert json.loads(body)["error"]["code"] == "server_busy"
        # Every stream is still open, and producers and health checks are answered at once.
        started = time.monotonic()
        status, _, body = request(port, "POST", f"/topics/{topic}/events", {"value": 1.5})
        assert (status, json.loads(body)) == (202, {"accepted": 1})
        assert request(port, "GET", "/healthz")[0] == 200
        assert request(port, "GET", "/metrics")[0] == 200
        assert time.monotonic() - started < 5
    finally:
        for sock in streams:
            sock.close()
    log = "".join(low_limit.server.output)
    assert "Traceback" not in log and "Too many open files" not in log, log
    lowered = [line for line in low_limit.server.output if "lowered to" in line]
    assert len(lowered) == 1, log  # one line, from the supervisor with --workers
    assert f"--max-streams 20000 lowered to {CAP}: the open-file limit is {LIMIT}" in lowered[0]


def _soft_open_files(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    return int(line.split()[3])


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    server = PushsvcProcess("serve", preexec_fn=_open_files(256, 1000)).start()
    try:
        assert _soft_open_files(server.pid) == 1000
        server.wait_for_log(r"--max-streams 20000 lowered to 872: the open-file limit is 1000")
    finally:
        server.stop()


def test_a_max_streams_that_fits_is_kept_without_a_word() -> None:
    server = PushsvcProcess("serve", "--max-streams", "50", preexec_fn=_open_files(LIMIT, LIMIT))
    server.start()
    try:
        assert request(server.port, "GET", "/healthz")[0] == 200
    finally:
        server.stop()
    assert not any("lowered" in line for line in server.output), server.log_tail()


def test_an_open_file_limit_with_no_room_for_streams_stops_the_server_with_one_line() -> None:
    done = run_tool("serve", "--port", "0", timeout=30, preexec_fn=_open_files(100, 100))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushsvc: the open-file limit is 100"), lines


def test_connections_that_send_nothing_past_the_limit_are_shed_oldest_first() -> None:
    """Connections that send nothing hold a descriptor each until the header timeout; past
    what the limit keeps for the waiting (`pushsvc.http.waiting_clients`), the oldest of them
    are closed, so a health check (from an address of its own) is answered while they keep
    coming."""
    server = PushsvcProcess(
        "serve", "--body-timeout", "6m", preexec_fn=_open_files(LIMIT, LIMIT)
    ).start()
    idle: list[socket.socket] = []
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMIT)]
        # Only a connection that has waited a second is shed (a burst of reconnecting
        # clients is not shed for being many): a duration of the server's, nothing to await.
        time.sleep(1.1)
        idle += [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
        assert request(server.port, "GET", "/healthz", timeout=10, source="127.0.0.2")[0] == 200
        assert _metric(server.port, "pushsvc_connections_shed_total") >= 50
        # The oldest went first: the first connection is closed, the newest still open.
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b""
        idle[-1].setblocking(False)
        with pytest.raises(BlockingIOError):
            idle[-1].recv(1)
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    log = "".join(server.output)
    assert "Traceback" not in log, log


def test_out_of_descriptors_the_longest_waiting_are_shed_with_one_line() -> None:
    """Streams at their cap and connections that send nothing take every descriptor: accept
    fails, and the connections that waited longest on their client are closed to make room
    (one warning line per episode, no traceback), never a stream."""
    server = PushsvcProcess(
        "serve", "--body-timeout", "6m", preexec_fn=_open_files(LIMIT, LIMIT)
    ).start()
    streams: list[socket.socket] = []
    idle: list[socket.socket] = []
    try:
        for _ in range(CAP):
            sock, received = _try_stream(server.port, "/topics/fd/stream")
            assert sock is not None, received
            streams.append(sock)
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMIT)]
        server.wait_for_log(r"out of descriptors: closing the connections that waited longest")
        assert request(server.port, "GET", "/healthz", timeout=10)[0] == 200
        assert _metric(server.port, "pushsvc_subscribers") == CAP  # no stream was shed
    finally:
        for sock in idle + streams:
            sock.close()
        server.stop()
    log = "".join(server.output)
    assert "Traceback" not in log, log
    assert sum("out of descriptors" in line for line in server.output) == 1, log


def _metric(port: int, name: str) -> float:
    body = request(port, "GET", "/metrics")[2].decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    return float(found[1]) if found else 0.0


class _Request:
    """A GET in a thread of its own, sent now, answered whenever."""

    def __init__(self, port: int, path: str) -> None:
        self._status: int | None = None
        self._thread = threading.Thread(target=self._run, args=(port, path), daemon=True)
        self._thread.start()

    def _run(self, port: int, path: str) -> None:
        self._status = request(port, "GET", path, timeout=60)[0]

    def status(self, timeout: float) -> int | None:
        self._thread.join(timeout)
        return self._status


def test_a_max_streams_asked_for_is_lowered_with_a_warning_the_default_with_an_info_line() -> None:
    """The operator who asked for more streams than fit is warned; the default not fitting (a
    hard limit of 20,000 is common) is said at INFO, so that a normal start warns of nothing."""
    limits = _open_files(1000, 1000)
    asked = PushsvcProcess("serve", "--max-streams", "5000", preexec_fn=limits).start()
    default = PushsvcProcess("serve", preexec_fn=limits).start()
    asked.stop()
    default.stop()
    (warned,) = [line for line in asked.output if "lowered to" in line]
    assert "WARNING" in warned and "--max-streams 5000 lowered to 872" in warned
    (said,) = [line for line in default.output if "lowered to" in line]
    assert "INFO" in said and "--max-streams 20000 lowered to 872" in said
