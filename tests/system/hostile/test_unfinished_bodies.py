"""Attacks on a request's body, each against a real `pushsvc serve` beside a legitimate
producer and subscriber whose service the test asserts:

* R.U.D.Y.: hundreds of connections that send a head and a `Content-Length` they never
  fulfil, more than the server's open-file limit holds, from many addresses, and from one,
  while a producer (from another address) posts and a subscriber reads every update; and
  Slowloris the same way: heads that never end;
* one unfinished body, and one trickled a byte at a time, cut off at their deadlines
  (a third of `--body-timeout` between pieces, and the whole of it), with a 408 when the app
  was reading them;
* bodies past `--max-body` that never end, in each framing: answered 413, then the
  connection closes while the client is still sending; the server reads a bounded amount.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import resource
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from harness.live import (
    PushsvcProcess,
    SSEClient,
    metric,
    metric_sample,
    post,
    request,
    wait_until,
)
from harness.procfs import open_fds, rss_kb
from harness.raw_streams import raise_fd_limit, read_until_closed

from pushsvc.config import Settings

pytestmark = pytest.mark.slow

OPEN_FILE_LIMIT = 512
ATTACKERS = 600  # more than the limit: without shedding they would take every descriptor
LIVENESS_BOUND_S = 2.0  # generous: a liveness property on a loaded 2-core machine
RSS_GROWTH_BOUND_KB = 64 * 1024
PER_ADDRESS = Settings.load({}, {}).max_waiting_per_ip  # a sixteenth of --max-waiting


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
    port: int, path: str = "/topics/rudy/events", source: str = "127.0.0.1", *, head: bool = False
) -> socket.socket:
    """A connection that sends its head and the first bytes of a body it never finishes
    (R.U.D.Y.), or with `head` only part of its head (Slowloris), from `source` (any address
    of 127.0.0.0/8 is this machine's).

    While strained, the server resets a connection from an address keeping it waiting as
    soon as it accepts it (`pushsvc_connections_refused_total`): when that reset comes before
    this sends (its thread descheduled between the connect and the send, on a loaded
    machine), the send fails, and the attack goes on with the connection it was refused."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    start = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        if head:
            sock.sendall(start.encode() + b"X-Never-Ends: ")
        else:
            sock.sendall(start.encode() + b'Content-Length: 100000\r\n\r\n{"value": ')
    return sock


class Producer:
    """A legitimate producer posting one event at a time on fresh connections, from a thread,
    with each POST's latency and status kept."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.failures: list[str] = []
        """Each POST that got no answer: its place, the error and how long it took."""
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
            except OSError as exc:
                status = self.failed(exc, started)
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(status)
            value += 1
            self._stop.wait(0.05)  # the producer's pace, not a condition

    def wait_for(self, posts: int) -> None:
        wait_until(lambda: len(self.statuses) >= posts, timeout=60)

    def failed(self, exc: OSError, started: float) -> int:
        """Status 0 for a POST that got no answer, noted with why (`failures`)."""
        took = time.monotonic() - started
        self.failures.append(f"#{len(self.statuses)} {exc!r} after {took:.2f} s")
        return 0

    def outcome(self) -> str:
        """What an assertion on the statuses says when it fails: their counts and the first
        failures, not the head of a long list of 202s."""
        return f"{dict(collections.Counter(self.statuses))} {self.failures[:5]}"


@pytest.mark.parametrize(
    ("sources", "head"),
    [(8, False), (1, False), (8, True)],
    ids=["many addresses", "one address", "slowloris heads, many addresses"],
)
def test_rudy_connections_past_the_open_file_limit_do_not_starve_producers(
    sources: int, head: bool, topic: str
) -> None:
    """600 unfinished bodies (or heads) against a server whose open-file limit is 512, with
    deadlines longer than the test: the connections that waited longest on their client are
    shed when descriptors run short (from 8 addresses, 75 each: under the per-address cap) or
    when one address holds too many, and a producer and a subscriber are served throughout."""
    try:
        raise_fd_limit(2 * ATTACKERS + 256)
    except OSError as exc:
        pytest.skip(str(exc))
    deadlines = ("--body-timeout", "30m")  # the head's, a third of it: 10 minutes
    with _server(*deadlines, open_file_limit=OPEN_FILE_LIMIT) as proc:
        port = proc.port
        rss_before = rss_kb([proc.pid])
        with SSEClient(port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            attackers: list[socket.socket] = []
            try:
                with Producer(port, topic) as producer:
                    producer.wait_for(5)
                    for n in range(ATTACKERS):
                        source = f"127.0.1.{2 + n % sources}"
                        attackers.append(_unfinished(port, source=source, head=head))
                    wait_until(
                        lambda: _turned_away(port) >= ATTACKERS - OPEN_FILE_LIMIT, timeout=60
                    )
                    posted = len(producer.statuses)
                    producer.wait_for(posted + 40)
                    # A second wave while the first's survivors still hold descriptors.
                    for n in range(ATTACKERS // 2):
                        source = f"127.0.1.{2 + n % sources}"
                        attackers.append(_unfinished(port, source=source, head=head))
                    producer.wait_for(len(producer.statuses) + 20)
                    if sources == 1:
                        # A second later (20 posts), the next connection from the address
                        # finds all the others old enough to shed: it keeps its share.
                        attackers.append(_unfinished(port, source="127.0.1.2", head=head))
                        wait_until(lambda: open_fds([proc.pid]) <= PER_ADDRESS + 64, timeout=30)
                assert set(producer.statuses) == {202}, producer.outcome()
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


def test_an_attacker_reopening_every_connection_shed_is_held_to_the_shedding_rate(
    topic: str,
) -> None:
    """Past the cap of waiting connections, an attacker that opens a new one whenever one is
    shed would set the server's pace (each costs it an accept, a greenlet, a head to read):
    sheds are held to a sixteenth of `--max-waiting` a second (each address may keep as many
    waiting), and past it the attacker's addresses are refused at once, while a producer
    posting on a keep-alive connection is served as before and a newcomer (an address of its
    own, a connection per POST) gets in."""
    cap, attackers, seconds = 160, 200, 3.0  # past the cap, and each address past its share
    rate = Settings.load({"max_waiting": str(cap)}, {}).shed_rate  # 10 a second
    with _server("--max-waiting", str(cap), "--body-timeout", "10m") as proc:
        with KeepAliveProducer(proc.port, topic) as producer:
            producer.wait_for(5)
            attack = ReopeningAttack(proc.port, attackers)
            try:
                attack.open_all()
                attack.run(1.5)  # at the cap, and its oldest old enough to shed
                shed_before, started = _shed(proc.port), time.monotonic()
                with Newcomer(proc.port, topic) as newcomer:
                    attack.run(seconds)
                shed = _shed(proc.port) - shed_before
                elapsed = time.monotonic() - started
            finally:
                attack.close()
        # The burst (a second's worth) and the rate; without the pace, the attacker's.
        assert shed <= rate + rate * elapsed + 5, (shed, elapsed)
        assert attack.reopened >= rate * elapsed / 2, "the attack did not run"
        assert set(producer.statuses) == {202}, producer.outcome()
        assert max(producer.latencies) < LIVENESS_BOUND_S, sorted(producer.latencies)[-5:]
        assert newcomer.statuses and set(newcomer.statuses) == {202}, newcomer.outcome()
        assert statistics.median(newcomer.latencies) < LIVENESS_BOUND_S, newcomer.latencies


class Newcomer(Producer):
    """A producer on a connection per POST from an address of its own (127.0.0.3), as a
    client new to the server comes."""

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=10, source_address=("127.0.0.3", 0)
            )
            try:
                conn.request("POST", f"/topics/{self.topic}/events", b'{"value": 1}', {
                    "Content-Type": "application/json"
                })  # fmt: skip
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except OSError as exc:
                status = self.failed(exc, started)
            finally:
                conn.close()
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(status)
            self._stop.wait(0.1)  # the newcomer's pace, not a condition


class KeepAliveProducer(Producer):
    """The producer, on one keep-alive connection, as pushsvc's clients post (an idle one is
    a connection waiting on its client: posting every 50 ms, it never waits long enough to
    be shed)."""

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        value = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                conn.request("POST", f"/topics/{self.topic}/events", json.dumps(
                    {"value": value}
                ), {"Content-Type": "application/json"})  # fmt: skip
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except OSError as exc:
                status = self.failed(exc, started)
                conn.close()
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(status)
            value += 1
            self._stop.wait(0.05)  # the producer's pace, not a condition
        conn.close()


class ReopeningAttack:
    """`count` unfinished bodies from four addresses, each opened again as soon as the
    server closes it; connects do not block, so the attack keeps its pace while the
    server's accepting is paused."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.reopened = 0
        self._opened = 0
        self._selector = selectors.DefaultSelector()

    def _open(self) -> None:
        sock = socket.socket()
        sock.bind((f"127.0.1.{2 + self._opened % 4}", 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", self.port))
        self._selector.register(sock, selectors.EVENT_WRITE, "connecting")
        self._opened += 1

    def open_all(self) -> None:
        for _ in range(self.count):
            self._open()
        self.run(0.5)  # their heads sent

    def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "connecting":
                    with contextlib.suppress(OSError):
                        sock.send(
                            b"POST /topics/rudy/events HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 100000\r\n"
                            b'\r\n{"value": '
                        )
                        self._selector.modify(sock, selectors.EVENT_READ, "held")
                        continue
                else:
                    with contextlib.suppress(OSError):
                        if sock.recv(65536):
                            continue  # an answer: the close comes next
                self._selector.unregister(sock)
                sock.close()
                self._open()
                self.reopened += 1

    def close(self) -> None:
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


def _shed(port: int) -> float:
    return metric(port, "pushsvc_connections_shed_total")


def _turned_away(port: int) -> float:
    """Connections the server closed to keep descriptors and CPU for the others: the
    waiting shed, and those reset as soon as accepted."""
    return _shed(port) + metric(port, "pushsvc_connections_refused_total")


def test_an_unfinished_body_is_cut_off_at_the_read_timeout(topic: str) -> None:
    # A read timeout of 5 s (a third of the body's, up to a quarter more): an answer within
    # 10 s is the read timeout's, not the whole body's.
    with _server("--body-timeout", "15s") as proc:
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
            # Counted by phase (and logged only at DEBUG: an attack times out thousands).
            assert _timeouts(proc.port, "body") == 2
            assert _timeouts(proc.port, "head") == _timeouts(proc.port, "write") == 0
        finally:
            attacker.close()
            idle_get.close()
        # Nothing of the unfinished body was taken: one event, the producer's.
        status, _, stats = request(proc.port, "GET", f"/topics/{topic}/stats")
        assert status == 200
        assert json.loads(stats)["windows"]["1m"]["count"] == 1


def test_a_trickled_body_is_cut_off_at_the_body_timeout(topic: str) -> None:
    """A byte every 200 ms never waits past the read timeout (a third of the body's, 667 ms);
    `--body-timeout` ends it."""
    with _server("--body-timeout", "2s") as proc:
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
    once its socket has taken nothing for `--body-timeout` the connection ends and the
    answer is freed, while a producer posts as before."""
    with _server("--body-timeout", "2s") as proc:
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
            wait_until(lambda: _timeouts(proc.port, "write") == 1, timeout=30)
            assert post(proc.port, topic, {"value": 1.0}) == (202, {"accepted": 1})
        finally:
            sock.close()


def _timeouts(port: int, phase: str) -> float:
    return metric_sample(port, "pushsvc_client_timeouts_total", f'{{phase="{phase}"}}')


def _history_size(port: int, topic: str) -> int:
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=5000")
    return len(json.loads(body)["updates"]) if status == 200 else 0
