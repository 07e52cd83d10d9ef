"""A stream ends when its client goes: a client that closes or resets its connection releases
its stream slot, its hub subscription and its node subscription with nothing written to it.

Every server here has a 60 s heartbeat and nothing is published while streams are released,
so no write can be what notices the client left: only the stream watching its connection can.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from harness.live import PushsvcProcess, metric_sample, post, request, subscribers, wait_until
from harness.raw_streams import (
    StreamRefused,
    close_all,
    close_cleanly,
    open_stream,
    open_streams,
    raise_fd_limit,
    reset,
)
from harness.redis_server import RedisServer
from harness.sse_parser import EventStreamParser

from pushsvc.deliver.hub import StreamExit
from support.gunicorn import gunicorn
from support.redis_keys import updates_channel
from support.tls_pairs import Pair, https_metric, self_signed

STREAMS = 1000
RELEASE_WAIT_S = 5  # generous on a loaded machine; the bound itself is measured in bench/
QUIET = ("--tick", "0", "--heartbeat", "60s")  # no heartbeat falls due during a test


def _gone(port: int) -> float:
    return metric_sample(
        port, "pushsvc_stream_disconnects_total", f'{{reason="{StreamExit.GONE}"}}'
    )


def _topic_subscribers(port: int, topic: str) -> int:
    listed = json.loads(request(port, "GET", "/topics")[2])["topics"]
    counts: list[int] = [t["subscribers"] for t in listed if t["topic"] == topic]
    return counts[0]


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _next_data(sock: socket.socket, parser: EventStreamParser, event: str = "stats") -> object:
    """The data of the next `event` message on a raw stream (blocking, 10 s at most)."""
    sock.settimeout(10)
    while True:
        for message in parser.feed(sock.recv(65536)):
            if message.event == event:
                return json.loads(message.data)


@pytest.fixture(scope="module")
def quiet_server() -> Iterator[PushsvcProcess]:
    raise_fd_limit(2 * STREAMS + 256)  # our sockets and, inherited, the server's
    proc = PushsvcProcess(
        "serve", *QUIET, env={"PUSHSVC_MAX_STREAMS_PER_IP": str(2 * STREAMS)}
    ).start()
    yield proc
    assert proc.stop() == 0


def test_a_thousand_streams_closed_or_reset_are_released_with_nothing_written(
    quiet_server: PushsvcProcess, topic: str
) -> None:
    port = quiet_server.port
    assert post(port, topic, {"value": 1})[0] == 202  # /topics lists topics with data
    fds_before = _open_fds(quiet_server.pid)
    gone_before = _gone(port)
    stays = open_stream(port, f"/topics/{topic}/stream")  # connected, idle: never released
    parser = EventStreamParser()
    streams = open_streams(port, f"/topics/{topic}/stream", STREAMS)
    try:
        assert subscribers(port) == STREAMS + 1
        assert _topic_subscribers(port, topic) == STREAMS + 1
        for index, sock in enumerate(streams):
            (close_cleanly if index % 2 else reset)(sock)
        wait_until(lambda: subscribers(port) == 1, RELEASE_WAIT_S)
        assert _topic_subscribers(port, topic) == 1
        assert _gone(port) - gone_before == STREAMS
        # The server's sockets are closed too (the one stream left, give or take the
        # connections of these requests).
        wait_until(lambda: _open_fds(quiet_server.pid) <= fds_before + 3, RELEASE_WAIT_S)
        # The stream that stayed is a stream still.
        assert post(port, topic, {"value": 2})[0] == 202
        update = _next_data(stays, parser)
        assert isinstance(update, dict) and update["event"]["value"] == 2
    finally:
        close_all(streams)
        stays.close()


def test_a_freed_slot_admits_the_next_stream_at_the_per_address_limit(topic: str) -> None:
    proc = PushsvcProcess("serve", *QUIET, env={"PUSHSVC_MAX_STREAMS_PER_IP": "5"}).start()
    path = f"/topics/{topic}/stream"
    streams = open_streams(proc.port, path, 5)
    try:
        with pytest.raises(StreamRefused, match="429"):
            open_stream(proc.port, path)
        close_cleanly(streams.pop())
        wait_until(lambda: subscribers(proc.port) == 4, RELEASE_WAIT_S)
        streams.append(open_stream(proc.port, path))  # no longer refused
        reset(streams.pop(0))
        wait_until(lambda: subscribers(proc.port) == 4, RELEASE_WAIT_S)
        streams.append(open_stream(proc.port, path))
        assert subscribers(proc.port) == 5
    finally:
        close_all(streams)
        assert proc.stop() == 0


@pytest.mark.parametrize(
    "sent",
    [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n"],
    ids=["a pipelined request", "a stray line end"],
)
def test_bytes_from_a_client_neither_end_its_stream_nor_hide_its_leaving(
    quiet_server: PushsvcProcess, topic: str, sent: bytes
) -> None:
    """A client that sends something on its stream makes its connection readable for good:
    the stream goes on, and still ends when the client goes."""
    port = quiet_server.port
    sock = open_stream(port, f"/topics/{topic}/stream")
    parser = EventStreamParser()
    try:
        sock.sendall(sent)
        assert post(port, topic, {"value": 3})[0] == 202
        update = _next_data(sock, parser)
        assert isinstance(update, dict) and update["event"]["value"] == 3
        assert _topic_subscribers(port, topic) == 1
    finally:
        close_cleanly(sock)
    wait_until(lambda: _topic_subscribers(port, topic) == 0, RELEASE_WAIT_S)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return self_signed(tmp_path_factory.mktemp("tls"), "server")


def _tls_stream(port: int, context: ssl.SSLContext, path: str) -> ssl.SSLSocket:
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost"
    )
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = b""
    while b"\ndata:" not in received:  # subscribed once its snapshot is in
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return sock


def _close_notify_then_fin(sock: ssl.SSLSocket) -> None:
    sock.setblocking(False)
    with contextlib.suppress(ssl.SSLWantReadError):
        sock.unwrap()  # sends close_notify; the server's answer is not awaited
    sock.close()


@pytest.mark.parametrize(
    "leave",
    [_close_notify_then_fin, ssl.SSLSocket.close, reset],
    ids=["close_notify then FIN", "FIN", "RST"],
)
def test_a_tls_stream_is_released_when_its_client_goes(
    pair: Pair, topic: str, leave: Callable[[ssl.SSLSocket], None]
) -> None:
    proc = PushsvcProcess(
        "serve", *QUIET, "--certfile", str(pair.cert), "--keyfile", str(pair.key)
    ).start()
    context = ssl.create_default_context(cafile=str(pair.cert))
    path = f"/topics/{topic}/stream"
    stays = _tls_stream(proc.port, context, path)
    leaves = _tls_stream(proc.port, context, path)
    try:

        def metrics() -> float:
            return https_metric(proc.port, context, "pushsvc_subscribers")

        assert metrics() == 2
        leave(leaves)
        wait_until(lambda: metrics() == 1, RELEASE_WAIT_S)
        assert not any("Traceback" in line for line in proc.output), proc.log_tail()
    finally:
        leaves.close()
        stays.close()
        assert proc.stop() == 0


def _numsub(admin: redis.Redis, channel: str) -> int:
    return int(dict(admin.pubsub_numsub(channel))[channel.encode()])


@pytest.mark.redis
def test_the_node_subscription_goes_with_the_last_local_stream_of_a_topic(
    redis_server: RedisServer, prefix: str, topic: str
) -> None:
    proc = PushsvcProcess(
        "serve", *QUIET, "--redis-url", redis_server.url, "--prefix", prefix
    ).start()
    admin = redis.Redis.from_url(redis_server.url)
    channel, other_channel = (
        updates_channel(prefix, topic),
        updates_channel(prefix, f"{topic}-other"),
    )
    streams = open_streams(proc.port, f"/topics/{topic}/stream", 3)
    other = open_stream(proc.port, f"/topics/{topic}-other/stream")
    try:
        assert (_numsub(admin, channel), _numsub(admin, other_channel)) == (1, 1)
        close_cleanly(streams.pop())
        reset(streams.pop())
        wait_until(lambda: subscribers(proc.port) == 2, RELEASE_WAIT_S)
        assert _numsub(admin, channel) == 1  # one local stream still watches it
        close_cleanly(streams.pop())
        wait_until(lambda: _numsub(admin, channel) == 0, RELEASE_WAIT_S)
        assert _numsub(admin, other_channel) == 1
        assert subscribers(proc.port) == 1
    finally:
        close_all([*streams, other])
        admin.close()
        assert proc.stop() == 0


@pytest.mark.redis
def test_streams_under_gunicorn_are_released_too(
    redis_server: RedisServer, prefix: str, topic: str, tmp_path: Path
) -> None:
    settings = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_HEARTBEAT": "60s",
    }
    admin = redis.Redis.from_url(redis_server.url)
    channel = updates_channel(prefix, topic)
    streams: list[socket.socket] = []
    try:
        with gunicorn(settings, tmp_path) as (port, _):
            streams = open_streams(port, f"/topics/{topic}/stream", 4)
            assert _numsub(admin, channel) == 1
            for index, sock in enumerate(streams):
                (close_cleanly if index % 2 else reset)(sock)
            wait_until(lambda: subscribers(port) == 0, RELEASE_WAIT_S)
            wait_until(lambda: _numsub(admin, channel) == 0, RELEASE_WAIT_S)
    finally:
        close_all(streams)
        admin.close()
