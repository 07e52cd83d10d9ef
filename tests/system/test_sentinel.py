"""High availability with Redis Sentinel: the URL form, a deployment that finds its primary
through the sentinels, and `PUSHSVC_REDIS_MIN_REPLICAS` holding back the 202 until replicas
have the events. The failover under load is a fault scenario (tests/faults)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until

from pushsvc.broker.redis.url import SentinelUrl, parse_sentinel_url, redact_url
from pushsvc.config import Settings
from pushsvc.errors import ConfigError
from support.sentinel import SentinelCluster


def test_the_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    assert parse_sentinel_url(
        "redis+sentinel://:s3cret@h1:26380,h2/mymaster/2?sentinel_password=other"
    ) == SentinelUrl(
        sentinels=(("h1", 26380), ("h2", 26379)),
        service="mymaster",
        db=2,
        password="s3cret",
        sentinel_password="other",
    )
    assert parse_sentinel_url("redis+sentinel://h1:26379/mymaster").db == 0


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://h1:26379", "service name"),
        ("redis+sentinel://h1:26379/a/b/c", "service name"),
        ("redis+sentinel://h1:26379/mymaster/zero", "database must be a number"),
        ("redis+sentinel://h1:port/mymaster", "is not host:port"),
        ("redis+sentinel://h1:26379,/mymaster", "is not host:port"),
        ("redis+sentinel://h1/mymaster?ssl=1", "unknown option"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_at_start_up(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        Settings.load({"redis_url": url}, {})


def test_passwords_in_a_sentinel_url_stay_out_of_logs() -> None:
    url = "redis+sentinel://user:s3cret@h1:26379,h2:26379/mymaster/0?sentinel_password=other"
    assert redact_url(url) == (
        "redis+sentinel://user:***@h1:26379,h2:26379/mymaster/0?sentinel_password=***"
    )
    logged = repr(Settings.load({"redis_url": url}, {}).redacted())
    assert "s3cret" not in logged and "other" not in logged


def test_min_replicas_is_a_count() -> None:
    assert Settings.load({}, {}).redis_min_replicas == 0
    assert Settings.load({}, {"PUSHSVC_REDIS_MIN_REPLICAS": "2"}).redis_min_replicas == 2
    with pytest.raises(ConfigError, match="--redis-min-replicas / PUSHSVC_REDIS_MIN_REPLICAS"):
        Settings.load({"redis_min_replicas": "-1"}, {})


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    with SentinelCluster(replicas=2) as started:
        yield started


@pytest.fixture(scope="module")
def processes(cluster: SentinelCluster) -> Iterator[tuple[PushsvcProcess, PushsvcProcess]]:
    """A web process and an aggregator that find the primary through the sentinels, and
    acknowledge an event only once both replicas have it."""
    env = {
        "PUSHSVC_REDIS_URL": cluster.url,
        "PUSHSVC_REDIS_MIN_REPLICAS": "2",
        "PUSHSVC_TICK": "0",
        "PUSHSVC_PREFIX": "sentinel-test:",
    }
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    web = PushsvcProcess("web", env=env).start()
    aggregator.wait_for_log("bridge: bridging")  # Redis producers too (test below)
    yield web, aggregator
    web.stop()
    aggregator.stop()


@pytest.fixture(scope="module")
def deployment(processes: tuple[PushsvcProcess, PushsvcProcess]) -> PushsvcProcess:
    return processes[0]


@pytest.mark.redis
def test_events_and_updates_flow_through_the_primary_the_sentinels_name(
    deployment: PushsvcProcess, cluster: SentinelCluster, topic: str
) -> None:
    with SSEClient(deployment.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        assert post(deployment.port, topic, [{"value": 1.0}, {"value": 2.0}]) == (
            202,
            {"accepted": 2},
        )
        (_, first), (_, second) = stream.take(2)
    assert [first["event"]["value"], second["event"]["value"]] == [1.0, 2.0]
    assert second["windows"]["5m"]["count"] == 2
    assert cluster.current_primary() is cluster.primary


@pytest.mark.redis
def test_an_append_no_replica_confirms_in_time_is_a_503(
    deployment: PushsvcProcess, cluster: SentinelCluster, topic: str
) -> None:
    replica = cluster.replicas[0]
    assert replica.pid is not None
    stream = SSEClient(deployment.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    os.kill(replica.pid, signal.SIGSTOP)  # alive but silent: WAIT 2 cannot be satisfied
    try:
        started = time.monotonic()
        status, body = post(deployment.port, topic, {"value": 1.0})
        waited = time.monotonic() - started
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    # Its own code, unlike every other 503: the batch is in the primary's log.
    assert status == 503
    assert body["error"]["code"] == "replicas_unconfirmed"
    assert "1 of 2 replicas" in body["error"]["message"]
    assert waited < 5.0  # the replica timeout (1 s) and a busy machine, not a hang
    cluster.wait_until_settled()
    assert post(deployment.port, topic, {"value": 2.0})[0] == 202
    # ... and is applied, as the code warns: a producer that retried would have posted it twice.
    assert [u["event"]["value"] for _, u in stream.take(2)] == [1.0, 2.0]
    stream.close()


@pytest.mark.redis
def test_a_retry_of_a_replicas_unconfirmed_batch_with_its_key_is_logged_once(
    deployment: PushsvcProcess, cluster: SentinelCluster, topic: str
) -> None:
    """The 503 says the batch is in the primary's log; its Idempotency-Key was remembered with
    it, so the producer's retry is answered 202 (replayed) and the batch yields one update."""
    replica = cluster.replicas[0]
    assert replica.pid is not None
    stream = SSEClient(deployment.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    key = {"Idempotency-Key": f"unconfirmed-{topic}"}
    os.kill(replica.pid, signal.SIGSTOP)  # WAIT 2 cannot be satisfied
    try:
        status, body = post(deployment.port, topic, {"value": 1.0}, headers=key)
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert (status, body["error"]["code"]) == (503, "replicas_unconfirmed")
    cluster.wait_until_settled()
    status, headers, answer = request(
        deployment.port, "POST", f"/topics/{topic}/events", {"value": 1.0}, headers=key
    )
    assert (status, json.loads(answer)) == (202, {"accepted": 1})
    assert headers["idempotent-replayed"] == "true"
    assert post(deployment.port, topic, {"value": 2.0})[0] == 202
    assert [u["event"]["value"] for _, u in stream.take(2)] == [1.0, 2.0]
    stream.close()


def _bridge_counts(web: PushsvcProcess) -> dict[str, float]:
    """`pushsvc_bridge_events_total` and each `pushsvc_bridge_rejected_total` reason."""
    text = request(web.port, "GET", "/metrics")[2].decode()
    counts = {"bridged": 0.0}
    for name, reason, value in re.findall(
        r'^pushsvc_bridge_(events|rejected)_total(?:\{reason="(\w+)"\})? (\S+)$', text, re.M
    ):
        counts["bridged" if name == "events" else reason] = float(value)
    return counts


@pytest.mark.redis
def test_a_redis_producers_event_too_few_replicas_confirmed_is_bridged_not_refused(
    processes: tuple[PushsvcProcess, PushsvcProcess], cluster: SentinelCluster, topic: str
) -> None:
    """A Redis producer gets no answer to retry on: the bridge counts such an event as
    bridged (it is in the log and is applied), never as refused."""
    deployment, aggregator = processes
    before = _bridge_counts(deployment)
    replica = cluster.replicas[0]
    assert replica.pid is not None
    stream = SSEClient(deployment.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    producer = redis.Redis(port=cluster.current_primary().port)
    os.kill(replica.pid, signal.SIGSTOP)  # WAIT 2 cannot be satisfied
    try:
        assert producer.publish(f"sentinel-test:ingest:{topic}", b'{"value": 7}') == 1
        [(_, update)] = stream.take(1)
        # The replica stays silent until the bridge's WAIT has given up on it.
        aggregator.wait_for_log(rf"{re.escape(repr(topic))} \(replicas_unconfirmed\)")
    finally:
        os.kill(replica.pid, signal.SIGCONT)
        producer.close()
    stream.close()
    assert update["event"]["value"] == 7.0
    wait_until(lambda: _bridge_counts(deployment)["bridged"] == before["bridged"] + 1)
    after = _bridge_counts(deployment)
    assert after.get("replicas_unconfirmed", 0.0) == 0.0
    assert {k: v for k, v in after.items() if k != "bridged"} == {
        k: v for k, v in before.items() if k != "bridged"
    }
    cluster.wait_until_settled()
