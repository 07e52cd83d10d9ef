"""The app factory under gunicorn's gevent worker: several workers share one Redis."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MakeApp
from support.live import SRC, PushsvcProcess, SSEClient, post, request, wait_until
from support.net import free_port
from support.redis_server import RedisServer

pytestmark = pytest.mark.redis


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_two_gunicorn_workers_serve_streams_and_posts(
    redis_server: RedisServer, prefix: str, topic: str, tmp_path: Path
) -> None:
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    assert gunicorn is not None, "gunicorn is a test dependency"
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        # gunicorn configures no logging for the app: pushsvc must, as the CLI does.
        "PUSHSVC_LOG_FORMAT": "json",
    }
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    port = free_port()
    log_file = (tmp_path / "gunicorn.log").open("w")
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
            # gunicorn's access log quotes every request line: pushsvc's filter must reach it.
            "--access-logfile",
            str(tmp_path / "access.log"),
            "pushsvc.app:create_app()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
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
        assert request(port, "GET", "/healthz?token=abc.def")[0] == 200
    finally:
        for stream in streams:
            stream.close()
        web.terminate()
        web.wait(30)
        log_file.close()
        aggregator.stop()
    # Each worker's app logged its settings as a JSON line, in the format configured.
    lines = [json.loads(line) for line in (tmp_path / "gunicorn.log").read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    settings_lines = [
        line for line in lines
        if line["logger"] == "pushsvc.app" and line["message"].startswith("pushsvc web settings")
    ]  # fmt: skip
    assert len(settings_lines) == 2, lines
    access = (tmp_path / "access.log").read_text()
    assert "GET /healthz?token=[redacted] HTTP/1.1" in access and "abc.def" not in access


def test_a_hosts_own_log_handlers_get_the_credential_filter(make_app: MakeApp) -> None:
    """Where the host configured logging itself (gunicorn --log-config, an application), the
    app keeps its handlers and adds the credential filter to each."""
    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(self.format(record))

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [Collect()]
    try:
        make_app()
        logging.getLogger("gevent.pywsgi").error("bad request line GET /stream?token=abc.def")
    finally:
        root.handlers[:] = saved
    assert written[-1] == "bad request line GET /stream?token=[redacted]"
