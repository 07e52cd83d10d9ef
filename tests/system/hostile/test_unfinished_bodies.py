"""Attacks on a request's body, each against a real `pushsvc serve` beside a legitimate
producer and subscriber whose service the test asserts:

* R.U.D.Y.: hundreds of connections that send a head and a `Content-Length` they never
  fulfil, more than the server's open-file limit holds, from many addresses, and from one,
  while a producer (from another address) posts and a subscriber reads every update;
* one unfinished body, and one trickled a byte at a time, cut off at their deadlines
  (`--body-read-timeout`, `--body-timeout`), with a 408 when the app was reading them;
* bodies past `--max-body` that never end, in each framing: answered 413, then the
  connection closes while the client is still sending; the server reads a bounded amount.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.procfs import open_fds, rss_kb
from harness.raw_streams import raise_fd_limit, read_until_closed

pytestmark = pytest.mark.slow

OPEN_FILE_LIMIT = 512
ATTACKERS = 600  # more than the limit: without shedding they would take every descriptor
LIVENESS_BOUND_S = 2.0  # generous: a liveness property on a loaded 2-core machine
RSS_GROWTH_BOUND_KB = 64 * 1024
PER_ADDRESS = 256  # --max-waiting-per-ip's default


def _open_files(limit: int) -> Callable[[], None]:
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return set_limit


@contextlib.contextmanager
def _server(*args: str, open_file_limit: int | None = None) -> Iterator[PushsvcProcess]:
    preexec = None if open_file_limit is None else _open_files(open_file_limit)
    proc = PushsvcProcess("serve", "--tick", "0", *args, preexec_fn=preexec).start()
    try:
        yield proc
    finally:
        proc.stop()


def _unfinished(
    port: int, path: str = "/topics/rudy/events", source: str = "127.0.0.1"
) -> socket.socket:
    """A connection that sends its head and the first bytes of a body it never finishes,
    from `source` (any address of 127.0.0.0/8 is this machine's)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n".encode()
        + b'{"value": '
    )
    return sock


class Producer:
    """A legitimate producer posting one event at a time on fresh connections, from a thread,
    with each POST's latency and status kept."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        value = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, _ = post(self.port, self.topic, {"value": value}, timeout=10)
            except OSError:
                status = 0
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(status)
            value += 1
            self._stop.wait(0.05)  # the producer's pace, not a condition

    def wait_for(self, posts: int) -> None:
        wait_until(lambda: len(self.statuses) >= posts, timeout=60)


@pytest.mark.parametrize("sources", [8, 1], ids=["many addresses", "one address"])
def test_rudy_connections_past_the_open_file_limit_do_not_starve_producers(
    sources: int, topic: str
) -> None:
    """600 unfinished bodies against a server whose open-file limit is 512, with deadlines
    longer than the test: the connections that waited longest on their client are shed when
    descriptors run short (from 8 addresses, 75 each: under the per-address cap) or when one
    address holds too many, and a producer and a subscriber are served throughout."""
    try:
        raise_fd_limit(2 * ATTACKERS + 256)
    except OSError as exc:
        pytest.skip(str(exc))
    with _server(
        "--body-timeout", "10m", "--body-read-timeout", "10m", open_file_limit=OPEN_FILE_LIMIT
    ) as proc:
        port = proc.port
        rss_before = rss_kb([proc.pid])
        with SSEClient(port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            attackers: list[socket.socket] = []
            try:
                with Producer(port, topic) as producer:
                    producer.wait_for(5)
                    for n in range(ATTACKERS):
                        attackers.append(_unfinished(port, source=f"127.0.1.{2 + n % sources}"))
                    wait_until(lambda: _shed(port) >= ATTACKERS - OPEN_FILE_LIMIT, timeout=60)
                    posted = len(producer.statuses)
                    producer.wait_for(posted + 40)
                    # A second wave while the first's survivors still hold descriptors.
                    for n in range(ATTACKERS // 2):
                        attackers.append(_unfinished(port, source=f"127.0.1.{2 + n % sources}"))
                    producer.wait_for(len(producer.statuses) + 20)
                    if sources == 1:
                        # A second later (20 posts), the next connection from the address
                        # finds all the others old enough to shed: it keeps its share.
                        attackers.append(_unfinished(port, source="127.0.1.2"))
                        wait_until(lambda: open_fds([proc.pid]) <= PER_ADDRESS + 64, timeout=30)
                assert set(producer.statuses) == {202}, producer.statuses
                assert max(producer.latencies) < LIVENESS_BOUND_S, sorted(producer.latencies)[-5:]
                # Every accepted event reached the subscriber, in order.
                got = stream.take(len(producer.statuses))
                assert [u["event"]["value"] for _, u in got] == [
                    float(v) for v in range(len(producer.statuses))
                ]
                # The server never held more than its limit, and grew little.
                assert open_fds([proc.pid]) <= OPEN_FILE_LIMIT
                assert rss_kb([proc.pid]) - rss_before < RSS_GROWTH_BOUND_KB
            finally:
                for sock in attackers:
                    sock.close()
        assert request(port, "GET", "/healthz")[0] == 200
        if sources > 1:
            proc.wait_for_log("out of descriptors: closing the connections that waited longest")


def _shed(port: int) -> float:
    body = request(port, "GET", "/metrics")[2].decode()
    found = re.search(r"^pushsvc_connections_shed_total (\S+)$", body, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_an_unfinished_body_is_cut_off_at_the_read_timeout(topic: str) -> None:
    with _server("--body-read-timeout", "1s", "--body-timeout", "1m") as proc:
        attacker = _unfinished(proc.port, f"/topics/{topic}/events")
        idle_get = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        # A body a GET's handler never reads: pywsgi waits for it after the answer.
        idle_get.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        try:
            assert post(proc.port, topic, {"value": 1.0}) == (202, {"accepted": 1})
            answer = read_until_closed(attacker, within=10)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer
            assert b"connection: close" in head.lower()
            assert json.loads(body)["error"]["code"] == "request_timeout"
            # Read before the app is called (pushsvc.server), it is answered 408 too.
            healthz = read_until_closed(idle_get, within=10)
            assert healthz.startswith(b"HTTP/1.1 408 "), healthz
        finally:
            attacker.close()
            idle_get.close()
        # Nothing of the unfinished body was taken: one event, the producer's.
        status, _, stats = request(proc.port, "GET", f"/topics/{topic}/stats")
        assert status == 200
        assert json.loads(stats)["windows"]["1m"]["count"] == 1


def test_a_trickled_body_is_cut_off_at_the_body_timeout(topic: str) -> None:
    """A byte every 200 ms never waits past `--body-read-timeout`; `--body-timeout` ends it."""
    with _server("--body-read-timeout", "5s", "--body-timeout", "2s") as proc:
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        sock.sendall(
            f"POST /topics/{topic}/events HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        try:
            sock.settimeout(0.2)
            while not answer.endswith(b"}}") and time.monotonic() - started < 20:
                try:
                    part = sock.recv(65536)
                except TimeoutError:
                    sock.sendall(b" ")  # the trickle
                    continue
                if not part:
                    break
                answer += part
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"request_timeout"' in answer
        assert post(proc.port, topic, {"value": 1.0}) == (202, {"accepted": 1})


@pytest.mark.parametrize("framing", ["chunked", "close-delimited", "content-length"])
def test_an_endless_body_past_max_body_is_answered_413_and_cut_off(
    framing: str, topic: str
) -> None:
    """The client sends for ever, as fast as the server takes it: it gets its 413 and the
    connection closes, having sent little more than the limit (the server once read such a
    body to its end: 25 GB in 10 s)."""
    limit = 64 * 1024
    with _server("--max-body", str(limit)) as proc:
        heads = {
            "chunked": "POST /topics/{t}/events HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n",
            "close-delimited": "POST /topics/{t}/events HTTP/1.0\r\n",
            "content-length": "POST /topics/{t}/events HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 100000000000\r\n",
        }
        head = heads[framing].format(t=topic) + "Content-Type: application/json\r\n\r\n"
        piece = b" " * 65536
        if framing == "chunked":
            piece = b"10000\r\n" + piece + b"\r\n"
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        sock.sendall(head.encode())
        sock.setblocking(False)
        sent, answer, closed, sending = 0, b"", False, True
        started = time.monotonic()
        try:
            while not closed and time.monotonic() - started < 20:
                try:
                    if sending:
                        sent += sock.send(piece)
                except BlockingIOError:
                    pass
                except OSError:  # the server closed: read what it answered, as curl does
                    sending = False
                try:
                    part = sock.recv(65536)
                    answer += part
                    closed = not part
                except BlockingIOError:
                    pass
                except OSError:  # reset
                    closed = True
        finally:
            sock.close()
        assert closed, f"still open after 20 s, {sent} bytes sent"
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b'"payload_too_large"' in answer
        # The limit, what lingering drops (1 MiB) and both sides' socket buffers.
        assert sent < 32 * 1024 * 1024, sent
        assert post(proc.port, topic, {"value": 1.0}) == (202, {"accepted": 1})


def test_a_response_never_read_is_cut_off(topic: str) -> None:
    """A client asks for a large answer (a topic's history, megabytes) and never reads it:
    once its socket has taken nothing for `--slow-client-timeout` the connection ends and
    the answer is freed, while a producer posts as before."""
    with _server("--slow-client-timeout", "1s") as proc:
        tags = {f"k{i}": "v" * 200 for i in range(8)}  # ~2 KB per update
        for _ in range(10):
            batch = [{"value": float(i), "tags": tags} for i in range(200)]
            assert post(proc.port, topic, batch)[0] == 202
        wait_until(lambda: _history_size(proc.port, topic) == 2000, timeout=30)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keeps little for us
        sock.connect(("127.0.0.1", proc.port))
        sock.sendall(f"GET /topics/{topic}/history?limit=2000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            proc.wait_for_log(r"took nothing of its answer for 1 s", timeout=30)
            assert post(proc.port, topic, {"value": 1.0}) == (202, {"accepted": 1})
        finally:
            sock.close()


def _history_size(port: int, topic: str) -> int:
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=5000")
    return len(json.loads(body)["updates"]) if status == 200 else 0
