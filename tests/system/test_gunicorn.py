"""The app factory under gunicorn's gevent worker: several workers share one Redis."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

from conftest import MakeApp
from support.gunicorn import gunicorn
from support.gzip_sse import GzipSSEClient
from support.scrapes import Scrapes, key

pytestmark = pytest.mark.redis


def test_two_gunicorn_workers_serve_streams_and_posts(
    redis_server: RedisServer, prefix: str, topic: str, tmp_path: Path
) -> None:
    settings = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        # gunicorn configures no logging for the app: pushsvc must, as the CLI does.
        "PUSHSVC_LOG_FORMAT": "json",
    }
    aggregator = PushsvcProcess("aggregate", env={**os.environ, **settings}, http=False).start()
    streams: list[SSEClient] = []
    # gunicorn's access log quotes every request line: pushsvc's filter must reach it.
    access_log = ("--access-logfile", str(tmp_path / "access.log"))
    try:
        aggregator.wait_for_log("took the lease")
        with gunicorn(settings, tmp_path, *access_log, workers=2) as (port, _):
            # Several streams: the kernel spreads the accepts over the workers.
            for _ in range(8):
                stream = SSEClient(port, f"/topics/{topic}/stream")
                stream.next_data("snapshot")
                streams.append(stream)
            for value in range(5):
                assert post(port, topic, {"value": value})[0] == 202
            for stream in streams:
                values = [u["event"]["value"] for _, u in stream.take(5)]
                assert values == [0.0, 1.0, 2.0, 3.0, 4.0]
            assert request(port, "GET", "/healthz?token=abc.def")[0] == 200
            for stream in streams:
                stream.close()
    finally:
        for stream in streams:
            stream.close()
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


def test_the_settings_line_of_an_app_a_host_serves_leaves_out_the_port_it_never_binds(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Under gunicorn the host binds (`-b`): `--port`, whatever it says, is not where the
    app answers, so the settings line must not claim it."""
    with caplog.at_level(logging.INFO, logger="pushsvc.app"):
        make_app(port=8000)
    (line,) = [r.getMessage() for r in caplog.records if "settings:" in r.getMessage()]
    assert "'port'" not in line and "'host'" not in line
    assert "'tick': '0'" in line and "'windows': '10s,1m,5m'" in line


def test_gunicorn_workers_answer_metrics_as_one_with_the_aggregator_beside_them(
    redis_server: RedisServer, prefix: str, topic: str, tmp_path: Path
) -> None:
    """As docs/deploy.md says: one PROMETHEUS_MULTIPROC_DIR for the workers and the aggregator
    on that machine, and pushsvc's gunicorn config to drop a dead worker's gauges."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    settings = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_PARTITIONS": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    aggregator = PushsvcProcess("aggregate", env={**os.environ, **settings}, http=False).start()
    config = ("-c", "python:pushsvc.ops.gunicorn_config")
    try:
        aggregator.wait_for_log("took the lease")
        with gunicorn(settings, tmp_path, *config, workers=2) as (port, _):
            scrapes = Scrapes(port)
            posted = 0
            while scrapes.taken < 8 or len(scrapes.answered_by) < 2:
                assert scrapes.taken < 80, "every scrape reached one worker"
                assert post(port, topic, [{"value": 1.0}] * (scrapes.taken % 3 + 1))[0] == 202
                posted += scrapes.taken % 3 + 1
                assert scrapes.take()[key("pushsvc_events_accepted_total")] == posted
            wait_until(
                lambda: (
                    scrapes.value("pushsvc_partitions_owned") == 4
                    and scrapes.value("pushsvc_topics") == 1
                ),
                interval=0.1,
            )
            # gunicorn starts another worker for one killed; the master drops its gauges.
            victim = sorted(scrapes.answered_by)[0]
            assert (shared / f"gauge_livesum_{victim}.db").exists()
            os.kill(int(victim), signal.SIGKILL)
            wait_until(lambda: not (shared / f"gauge_livesum_{victim}.db").exists(), timeout=20)
            for _ in range(8):
                assert scrapes.take()[key("pushsvc_events_accepted_total")] == posted
    finally:
        aggregator.stop()
    # The aggregator, stopping, took its gauges with it.
    assert not list(shared.glob(f"gauge_*_{aggregator.pid}.db"))


def test_gzip_streams_under_gunicorn_decode_as_plain_ones(
    redis_server: RedisServer, prefix: str, topic: str, tmp_path: Path
) -> None:
    """Under gunicorn the response's greenlet writes the stream: a client offering gzip gets
    it gzipped and decodes the very updates a plain stream gets."""
    settings = {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix,
                "PUSHSVC_TICK": "0"}  # fmt: skip
    aggregator = PushsvcProcess("aggregate", env={**os.environ, **settings}, http=False).start()
    try:
        aggregator.wait_for_log("took the lease")
        with gunicorn(settings, tmp_path, workers=1) as (port, _):
            plain = SSEClient(port, f"/topics/{topic}/stream")
            zipped = GzipSSEClient(port, f"/topics/{topic}/stream")
            assert zipped.response_headers["content-encoding"] == "gzip"
            plain.next_data("snapshot")
            zipped.next_data("snapshot")
            for batch in range(3):
                events = [{"value": batch * 30 + v} for v in range(30)]
                assert post(port, topic, events)[0] == 202
            assert zipped.take(90) == plain.take(90)
            assert zipped.wire * 3 < len(plain.raw)
            plain.close()
            zipped.close()
    finally:
        aggregator.stop()
