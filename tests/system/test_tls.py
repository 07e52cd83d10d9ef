"""HTTPS served directly (`--certfile`, `--keyfile`), by one process and by `--workers 2`,
checked with clients that trust only the test's self-signed certificate."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.live import PushsvcProcess, run_tool, start_tool, wait_until
from harness.redis_server import RedisServer
from harness.sse_parser import EventStreamParser, SSEMessage

from support.tls_pairs import Pair, https_metric, self_signed


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return self_signed(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return self_signed(tmp_path_factory.mktemp("tls-other"), "other")


def _serve(pair: Pair, *args: str, command: str = "serve", **env: str) -> PushsvcProcess:
    return PushsvcProcess(
        command,
        "--tick",
        "0",
        "--heartbeat",
        "1s",
        "--certfile",
        str(pair.cert),
        "--keyfile",
        str(pair.key),
        *args,
        env=env,
    ).start()


@pytest.fixture(
    scope="module",
    params=[
        "one process",
        # a private redis-server, two web workers and an aggregator (see test_workers.py)
        pytest.param("--workers 2", marks=[pytest.mark.redis, pytest.mark.slow]),
        # the web tier on its own, beside an aggregator, on the test's redis-server
        pytest.param("web", marks=pytest.mark.redis),
    ],
)
def https_server(request: pytest.FixtureRequest, pair: Pair) -> Iterator[PushsvcProcess]:
    if request.param == "web":
        redis = RedisServer().start()
        aggregator = PushsvcProcess(
            "aggregate", "--tick", "0", env={"PUSHSVC_REDIS_URL": redis.url}, http=False
        ).start()
        server = _serve(pair, command="web", PUSHSVC_REDIS_URL=redis.url)
        aggregator.wait_for_log("took the lease")
        yield server
        assert server.stop() == 0
        aggregator.stop()
        redis.stop()
        return
    args = ("--workers", "2") if request.param == "--workers 2" else ()
    server = _serve(pair, *args)
    if args:  # both workers listening, or the kernel has only one socket to hand out
        wait_until(lambda: sum("web listening on" in line for line in server.output) == 2, 20)
    yield server
    assert server.stop() == 0


def _trusting(pair: Pair) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pair.cert))


def _https(
    port: int, context: ssl.SSLContext, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


class HttpsStream:
    """An SSE stream over HTTPS, parsed by the WHATWG parser the suite uses."""

    def __init__(self, port: int, context: ssl.SSLContext, path: str) -> None:
        self._conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
        self._conn.request("GET", path)
        self._response = self._conn.getresponse()
        assert self._response.status == 200
        assert self._response.getheader("Content-Type", "").startswith("text/event-stream")
        self._parser = EventStreamParser()
        self._pending: list[SSEMessage] = []

    def next_data(self, event: str = "stats") -> Any:
        while True:
            while not self._pending:
                chunk = self._response.read1(65536)  # the socket's 10 s timeout bounds this
                if not chunk:
                    raise EOFError("stream ended")
                self._pending.extend(self._parser.feed(chunk))
            message = self._pending.pop(0)
            if message.event == event:
                return json.loads(message.data)

    def close(self) -> None:
        self._response.close()
        self._conn.close()


def test_https_post_reaches_an_sse_stream(
    https_server: PushsvcProcess, pair: Pair, topic: str
) -> None:
    context = _trusting(pair)
    port = https_server.port
    assert any("listening on https://" in line for line in https_server.output)
    streams = [HttpsStream(port, context, f"/topics/{topic}/stream") for _ in range(4)]
    try:
        for stream in streams:  # with --workers 2, likely on both workers
            stream.next_data("snapshot")
        assert _https(port, context, "POST", f"/topics/{topic}/events", {"value": 4.5}) == (
            202,
            {"accepted": 1},
        )
        for stream in streams:
            update = stream.next_data()
            assert (update["topic"], update["event"]["value"]) == (topic, 4.5)
    finally:
        for stream in streams:
            stream.close()
    status, stats = _https(port, context, "GET", f"/topics/{topic}/stats")
    assert status == 200 and stats["windows"]["1m"]["count"] == 1


def test_plain_http_to_the_tls_port_gets_no_http_answer(
    https_server: PushsvcProcess, pair: Pair
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", https_server.port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/healthz")
            conn.getresponse()
    finally:
        conn.close()
    # and the server is none the worse for it
    assert _https(https_server.port, _trusting(pair), "GET", "/healthz") == (
        200,
        {"status": "ok"},
    )


def test_a_client_that_does_not_trust_the_certificate_is_refused(
    https_server: PushsvcProcess, other: Pair
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _https(https_server.port, _trusting(other), "GET", "/healthz")


def test_publish_and_subscribe_tools_over_https(
    https_server: PushsvcProcess, pair: Pair, topic: str
) -> None:
    url = f"--url=https://localhost:{https_server.port}"
    trust = {"SSL_CERT_FILE": str(pair.cert)}
    subscriber = start_tool("subscribe", url, topic, "--count", "2", env=trust)
    try:
        assert subscriber.stdout is not None
        first = json.loads(subscriber.stdout.readline())  # subscribed before we publish
        assert first["event"] == "snapshot"
        done = run_tool("publish", url, topic, "1.5", "2.5", env=trust)
        assert (done.returncode, done.stdout.strip()) == (0, "accepted 2"), done.stderr
        lines = [json.loads(subscriber.stdout.readline()) for _ in range(2)]
        assert [line["data"]["event"]["value"] for line in lines] == [1.5, 2.5]
        assert subscriber.wait(30) == 0
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
        if subscriber.stdout is not None:
            subscriber.stdout.close()
    # Without the certificate trusted, the tool says so in one line and fails.
    refused = run_tool("publish", url, topic, "1")
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    "case", ["mismatched pair", "missing key", "key without cert", "cert is not PEM"]
)
def test_a_bad_certificate_pair_is_refused_at_start_up(
    pair: Pair, other: Pair, tmp_path: Path, case: str, workers: str
) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    flags = {
        "mismatched pair": ["--certfile", str(pair.cert), "--keyfile", str(other.key)],
        "missing key": ["--certfile", str(pair.cert), "--keyfile", str(tmp_path / "none.key")],
        "key without cert": ["--keyfile", str(pair.key)],
        "cert is not PEM": ["--certfile", str(garbage), "--keyfile", str(pair.key)],
    }[case]
    # With --workers 2 this looped for ever: every web worker failed on the pair and the
    # supervisor restarted it. Now the pair is loaded before anything starts.
    done = run_tool("serve", "--port", "0", "--workers", workers, *flags, timeout=30)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushsvc: "), done.stderr
    assert "Traceback" not in done.stderr
    assert "keyfile" in lines[0]


# ------------------------------------------------------------------ handshakes


@pytest.fixture(scope="module")
def strict_tls(pair: Pair) -> Iterator[PushsvcProcess]:
    """One process with a short header timeout (1 s: a third of its body timeout) and JSON
    logs."""
    server = _serve(pair, "--body-timeout", "3s", "--log-format", "json")
    yield server
    assert server.stop() == 0


def _new_lines(server: PushsvcProcess, pair: Pair, since: int) -> list[str]:
    """The log lines written since line `since`, once a request after them is answered (a
    line about a handshake before it is written by then) and this process has read at least
    one: a thread of it reads the server's log, and may not have read the line yet."""
    assert _https(server.port, _trusting(pair), "GET", "/healthz")[0] == 200
    wait_until(lambda: len(server.output) > since, timeout=5, what="a new log line")
    return server.output[since:]


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def _handshake_timeouts(port: int, pair: Pair) -> float:
    return https_metric(
        port, _trusting(pair), "pushsvc_client_timeouts_total", '{phase="handshake"}'
    )


def test_a_connection_that_sends_no_client_hello_is_closed_at_the_header_timeout(
    strict_tls: PushsvcProcess, pair: Pair
) -> None:
    before = _handshake_timeouts(strict_tls.port, pair)
    with socket.create_connection(("127.0.0.1", strict_tls.port), timeout=10) as sock:
        started = time.monotonic()
        assert _closed_by_server(sock)  # or TimeoutError after 10 s
        assert 0.9 < time.monotonic() - started < 5
    # Counted, not logged: an attacker's thousands would flood the log.
    assert _handshake_timeouts(strict_tls.port, pair) == before + 1


def test_a_client_hello_begun_but_never_finished_is_closed_at_the_header_timeout(
    strict_tls: PushsvcProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", strict_tls.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00")  # a handshake record's header, then nothing
        started = time.monotonic()
        assert _closed_by_server(sock)
        assert time.monotonic() - started < 5


def test_the_handshake_counts_against_the_header_timeout(
    strict_tls: PushsvcProcess, pair: Pair
) -> None:
    with socket.create_connection(("127.0.0.1", strict_tls.port), timeout=10) as raw:
        accepted = time.monotonic()
        time.sleep(0.6)  # the client is slow to begin its handshake (part of the scenario)
        with _trusting(pair).wrap_socket(raw, server_hostname="localhost") as sock:
            assert _closed_by_server(sock)  # no request head: closed 1 s after accept
            assert time.monotonic() - accepted < 1.5  # not 1 s after the handshake


def _old_tls_client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is the point
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def _plain_http(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_by_server(sock)


def _tls_1_1(port: int) -> None:
    context = _old_tls_client()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(sock)


@pytest.mark.parametrize(
    ("client", "reason"),
    [(_plain_http, "http request"), (_tls_1_1, "unsupported protocol")],
    ids=["plain HTTP", "TLS 1.1"],
)
def test_a_failed_handshake_is_one_json_log_line(
    strict_tls: PushsvcProcess, pair: Pair, client: Callable[[int], None], reason: str
) -> None:
    since = len(strict_tls.output)
    client(strict_tls.port)
    [line] = _new_lines(strict_tls, pair, since)
    record = json.loads(line)
    assert record["level"] == "info" and "exc" not in record
    assert record["message"].startswith("TLS handshake with ('127.0.0.1', ")
    assert reason in record["message"].lower()


def test_a_gzip_stream_over_https_decodes_as_the_plain_one(
    https_server: PushsvcProcess, pair: Pair, topic: str
) -> None:
    """TLS streams are written by the server's greenlet (not the hub's direct sends): they
    are gzipped alike, and httpx, offering gzip by default, decodes the same updates."""
    context = _trusting(pair)
    port = https_server.port
    plain = HttpsStream(port, context, f"/topics/{topic}/stream")
    plain.next_data("snapshot")
    with (
        httpx.Client(verify=context, timeout=10) as client,
        client.stream("GET", f"https://localhost:{port}/topics/{topic}/stream") as response,
    ):
        assert response.headers["content-encoding"] == "gzip"
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        assert _https(port, context, "POST", f"/topics/{topic}/events",
                      [{"value": v} for v in range(40)])[0] == 202  # fmt: skip
        expected = [plain.next_data() for _ in range(40)]
        decoded = []
        for line in lines:  # the snapshot's data line first, then one per update
            if line.startswith("data: "):
                decoded.append(json.loads(line[6:]))
                if len(decoded) == 41:
                    break
        assert decoded[1:] == expected
    plain.close()
