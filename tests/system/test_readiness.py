"""`/readyz` is ready only when writes can be acknowledged, and every other answer says why and
what to do: here, `--redis-min-replicas` on a real primary with and without its replica."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_until
from harness.redis_server import RedisServer

pytestmark = pytest.mark.redis


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, _, body = request(port, "GET", "/readyz")
    return status, json.loads(body)


def test_not_ready_while_writes_cannot_reach_the_replicas_asked_for(
    own_redis: RedisServer, prefix: str, topic: str
) -> None:
    """A primary with no replica online (as after a failover that promoted the only one):
    every POST answers 503 replicas_unconfirmed, so /readyz must not answer ready; once a
    replica is attached and in sync, both recover."""
    env = {
        "PUSHSVC_REDIS_URL": own_redis.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_REDIS_MIN_REPLICAS": "1",
        "PUSHSVC_TICK": "0",
    }
    server = PushsvcProcess("serve", env=env).start()
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(own_redis.port)))
    try:
        status, posted = post(server.port, topic, {"value": 1})
        assert (status, posted["error"]["code"]) == (503, "replicas_unconfirmed")
        # Past the start (no aggregator yet), the reason is the replicas, with the fix.
        wait_until(
            lambda: _readyz(server.port)[1]["status"] != "no_aggregator",
            timeout=30,
            what="the aggregator holds the partitions",
        )
        status, ready = _readyz(server.port)
        assert (status, ready["status"]) == (503, "replicas_unconfirmed")
        assert ready["reason"].startswith("a Redis primary has 0 replica(s) online")
        assert "PUSHSVC_REDIS_MIN_REPLICAS" in ready["reason"]
        assert "attach a replica" in ready["reason"]

        replica.start()
        wait_until(
            lambda: _readyz(server.port)[0] == 200, timeout=30, what="ready with the replica"
        )
        assert _readyz(server.port)[1]["status"] == "ready"
        assert post(server.port, topic, {"value": 2}) == (202, {"accepted": 1})
    finally:
        server.stop()
        replica.stop()
