"""The auth proxy under gunicorn's gevent worker on Redis, as docs/deploy.md deploys it: the
ask parks a greenlet of the worker, a stream opened on a grant is renewed, and ends when the
application says no."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from harness.app_process import AppProcess
from harness.live import PushsvcProcess, SSEClient, post, request
from harness.redis_server import RedisServer

from support.auth_tokens import hs256
from support.gunicorn import gunicorn

pytestmark = pytest.mark.redis

CAROL = {"Authorization": f"Bearer {hs256(publish=['orders'], subscribe=['orders'])}"}


def test_a_gunicorn_worker_asks_renews_and_ends_a_stream(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    with AppProcess("-m", "support.auth_backend") as backend:
        request(backend.port, "POST", "/mode", {"mode": "tokens", "ttl": 1, "forget": True})
        settings = {
            "PUSHSVC_REDIS_URL": redis_server.url,
            "PUSHSVC_PREFIX": prefix,
            "PUSHSVC_TICK": "0",
            "PUSHSVC_HEARTBEAT": "1s",
            "PUSHSVC_AUTH_URL": f"{backend.url}/auth",
        }
        aggregator = PushsvcProcess("aggregate", env={**os.environ, **settings}, http=False)
        aggregator.start()
        try:
            aggregator.wait_for_log("took the lease")
            with gunicorn(settings, tmp_path) as (port, _):
                assert request(port, "GET", "/topics/orders/stream")[0] == 401
                with SSEClient(port, "/topics/orders/stream", headers=CAROL, timeout=20) as stream:
                    assert stream.status == 200
                    stream.next_data("snapshot")
                    assert post(port, "orders", {"value": 3}, headers=CAROL)[0] == 202
                    _, update = stream.next_data("stats")
                    assert update["event"]["value"] == 3.0
                    stream.wait_comments(3)  # heartbeats of a second: past two grants
                    asks = json.loads(request(backend.port, "GET", "/asks")[2])
                    assert len(asks) >= 3, asks  # the stream's renewals asked
                    request(backend.port, "POST", "/mode", {"mode": "401", "ttl": 1})
                    stream.wait_closed(timeout=10)
        finally:
            aggregator.stop()
