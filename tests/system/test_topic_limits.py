"""Bounding the topics (`--max-topics`) and forgetting idle ones (`--topic-ttl`), as users see
them: the 429, the metrics, a quiet topic disappearing from the read API and Redis, and its
next event bringing it back as a new topic to the subscribers still watching it.

The broker-level rules are in test_broker_contract.py, the log-level ones (the forget racing a
POST, standbys, rebuilds) in test_aggregation.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
import redis
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

from conftest import MakeApp
from support.redis_keys import partition_keys, server_keys

# A topic's windows are empty 0.5 s after its last event, and it is forgotten 1 s after it.
FAST = {
    "PUSHSVC_TOPIC_TTL": "1s",
    "PUSHSVC_TICK": "100ms",
    "PUSHSVC_WINDOWS": "200ms,500ms",
}


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match[1]) if match else None


def _metrics(port: int) -> str:
    return request(port, "GET", "/metrics")[2].decode()


def _listed(port: int) -> list[str]:
    return [t["topic"] for t in json.loads(request(port, "GET", "/topics")[2])["topics"]]


def test_an_event_for_one_topic_too_many_is_a_429_json_error(make_app: MakeApp) -> None:
    # One publisher may hold the whole table here (test_topic_shares.py holds it to a share).
    client = make_app(max_topics=2, max_topics_per_publisher=2).test_client()
    for topic in ("a", "b"):
        assert client.post(f"/topics/{topic}/events", json={"value": 1}).status_code == 202
    refused = client.post("/topics/c/events", json=[{"value": 1}, {"value": 2}])
    assert refused.status_code == 429
    assert refused.mimetype == "application/json"
    assert "Retry-After" not in refused.headers  # no time makes room: forgetting does
    error = refused.get_json()["error"]
    assert error["code"] == "too_many_topics" and "--max-topics" in error["message"]
    assert client.get("/topics/c/stats").status_code == 404  # nothing changed
    assert client.post("/topics/a/events", json={"value": 2}).status_code == 202
    metrics = client.get("/metrics").get_data(as_text=True)
    assert _metric(metrics, 'pushsvc_requests_rejected_total{code="too_many_topics"}') == 1
    assert _metric(metrics, "pushsvc_topics_live") == 2
    assert _metric(metrics, "pushsvc_topics_forgotten_total") == 0


def test_the_defaults_keep_the_quick_start_unchanged(make_app: MakeApp) -> None:
    settings = make_app().extensions["pushsvc"].settings
    # A memory budget of 1 GiB: about as many topics of messages only as the count it was.
    assert (settings.max_topics, settings.topic_ttl_us) == (104_857, 3_600_000_000)


def _until_forgotten(port: int, stream: SSEClient, topic: str) -> None:
    """Post one event, watch ticks empty the windows, wait for the topic to be forgotten."""
    assert post(port, topic, {"value": 4.0}) == (202, {"accepted": 1})
    assert stream.next_data()[1]["windows"]["500ms"]["count"] == 1
    while True:  # ticks slide the windows until they are empty
        _, update = stream.next_data(timeout=5)
        if all(w["count"] == 0 for w in update["windows"].values()):
            break
    wait_until(lambda: request(port, "GET", f"/topics/{topic}/stats")[0] == 404, timeout=10)
    assert topic not in _listed(port)


def _comes_back(port: int, stream: SSEClient, topic: str) -> None:
    """The next event starts the topic afresh, and the stream still watching it gets it."""
    an_hour_ago = time.time() - 3600  # late for the old clock; a new topic has none
    assert post(port, topic, {"value": 9.0, "ts": an_hour_ago}) == (202, {"accepted": 1})
    while True:  # skip any tick still in flight from before the forget
        update_id, update = stream.next_data(timeout=5)
        if update["reason"] == "event":
            break
    assert update["event"]["value"] == 9.0
    assert update["ts"] == pytest.approx(an_hour_ago, abs=1e-6)
    for window in update["windows"].values():
        assert (window["count"], window["sum"], window["min"]) == (1, 9.0, 9.0)
    status, _, body = request(port, "GET", f"/topics/{topic}/stats")
    assert status == 200 and json.loads(body)["id"] == update_id
    assert topic in _listed(port)


def test_an_idle_topic_is_forgotten_and_comes_back_on_the_embedded_broker(topic: str) -> None:
    server = PushsvcProcess("serve", env=FAST).start()
    try:
        with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            _until_forgotten(server.port, stream, topic)
            metrics = _metrics(server.port)
            assert _metric(metrics, "pushsvc_topics_forgotten_total") == 1
            assert _metric(metrics, "pushsvc_topics_live") == 0
            assert _metric(metrics, "pushsvc_topics") == 0  # the aggregator dropped it
            _comes_back(server.port, stream, topic)
            assert _metric(_metrics(server.port), "pushsvc_topics") == 1
    finally:
        server.stop()


@pytest.fixture
def redis_env(redis_server: RedisServer, prefix: str) -> dict[str, str]:
    return {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix, "PUSHSVC_LEASE": "1s"}


@pytest.fixture
def keys(redis_server: RedisServer, prefix: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis(port=redis_server.port)
    yield client, prefix
    client.close()


@pytest.mark.redis
def test_an_idle_topic_is_forgotten_in_redis_and_stays_forgotten_after_a_takeover(
    redis_env: dict[str, str], keys: tuple[redis.Redis, str], topic: str
) -> None:
    client, prefix = keys
    # One partition: the first aggregator holds it, the second (joined later) stands by.
    env = redis_env | FAST | {"PUSHSVC_PARTITIONS": "1"}
    active = PushsvcProcess("aggregate", env=env, http=False).start()
    procs = [active]
    try:
        active.wait_for_log("took the lease")
        standby = PushsvcProcess("aggregate", env=env, http=False).start()
        web = PushsvcProcess("web", env=env).start()
        procs += [standby, web]
        with SSEClient(web.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            _until_forgotten(web.port, stream, topic)
            assert not client.hexists(partition_keys(prefix, topic, 1).clocks, topic)
            assert not client.hexists(partition_keys(prefix, topic, 1).latest, topic)
            active.wait_for_log("forgot 1 idle topics")
            metrics = _metrics(web.port)
            assert _metric(metrics, "pushsvc_topics_forgotten_total") == 1
            assert _metric(metrics, "pushsvc_topics_live") == 0

            active.kill()  # the standby applied the forget entry too: nothing comes back
            standby.wait_for_log("active from log entry", timeout=10)
            assert not client.hexists(partition_keys(prefix, topic, 1).latest, topic)
            assert request(web.port, "GET", f"/topics/{topic}/stats")[0] == 404
            _comes_back(web.port, stream, topic)
            assert client.hexists(partition_keys(prefix, topic, 1).clocks, topic)
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.redis
def test_the_bridge_refuses_one_topic_too_many_like_a_post(
    redis_env: dict[str, str], keys: tuple[redis.Redis, str]
) -> None:
    client, prefix = keys
    env = redis_env | {
        "PUSHSVC_MAX_TOPICS": "1",
        "PUSHSVC_MAX_TOPICS_PER_PUBLISHER": "1",
        "PUSHSVC_TICK": "0",
    }
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    web = PushsvcProcess("web", env=env).start()
    try:
        aggregator.wait_for_log("bridge: bridging")
        assert post(web.port, "kept", {"value": 1}) == (202, {"accepted": 1})
        status, body = post(web.port, "new", {"value": 1})
        assert status == 429 and body["error"]["code"] == "too_many_topics"
        assert client.publish(f"{prefix}ingest:new", b'{"value": 2}') == 1
        reason = 'pushsvc_bridge_rejected_total{reason="too_many_topics"}'
        wait_until(lambda: _metric(_metrics(web.port), reason) == 1)
        assert client.hkeys(partition_keys(prefix, "kept").clocks) == [b"kept"]
        # Neither refusal logged anything.
        assert sum(client.xlen(part.log) for part in server_keys(prefix)) == 1
        metrics = _metrics(web.port)
        assert _metric(metrics, 'pushsvc_requests_rejected_total{code="too_many_topics"}') == 1
        assert _metric(metrics, "pushsvc_topics_live") == 1
    finally:
        web.stop()
        aggregator.stop()
