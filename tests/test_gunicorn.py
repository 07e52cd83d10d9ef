"""The app factory under gunicorn's gevent worker: several workers share one Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from pushsvc.testing.live import SRC, PushsvcProcess, SSEClient, post, wait_until
from pushsvc.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_two_gunicorn_workers_serve_streams_and_posts(
    redis_server: RedisServer, prefix: str, topic: str
) -> None:
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    assert gunicorn is not None, "gunicorn is a test dependency"
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
    }
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    port = _free_port()
    web = subprocess.Popen(
        [
            gunicorn,
            "-k",
            "gevent",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            # Streams only notice a gone client at their next write (heartbeat): don't wait.
            "--graceful-timeout",
            "2",
            "pushsvc.app:create_app()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    streams: list[SSEClient] = []
    try:
        aggregator.wait_for_log("took the lease")
        wait_until(lambda: _answers(port), timeout=30)
        # Several streams: the kernel spreads the accepts over the workers.
        for _ in range(8):
            stream = SSEClient(port, f"/topics/{topic}/stream")
            stream.next_data("snapshot")
            streams.append(stream)
        for value in range(5):
            assert post(port, topic, {"value": value})[0] == 202
        for stream in streams:
            assert [u["event"]["value"] for _, u in stream.take(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    finally:
        for stream in streams:
            stream.close()
        web.terminate()
        web.wait(30)
        aggregator.stop()
