"""Each /metrics series moves when its event happens, on a real server."""

from __future__ import annotations

import os
import re

import pytest
from harness.live import (
    PushsvcProcess,
    SSEClient,
    post,
    request,
    stalled_reader,
    wait_until,
)
from harness.redis_server import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from pushsvc.deliver.hub import StreamExit
from support.auth_tokens import SECRET, hs256


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    text = request(port, "GET", "/metrics")[2].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(port: int, name: str, **labels: str) -> float:
    return samples(port).get((name, tuple(sorted(labels.items()))), 0.0)


def disconnects(port: int, reason: StreamExit) -> float:
    return value(port, "pushsvc_stream_disconnects_total", reason=reason.value)


def test_stream_connects_disconnects_and_delivery_latency(
    server: PushsvcProcess, topic: str
) -> None:
    before = samples(server.port)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return value(server.port, name, **labels) - before.get(key, 0.0)

    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        assert moved("pushsvc_stream_connects_total") == 1
        for n in range(3):
            assert post(server.port, topic, {"value": n})[0] == 202
            stream.next_data()
        # Three writes, each observed once; the hub wrote this idle stream itself.
        wait_until(lambda: moved("pushsvc_delivery_seconds_count") >= 3)
        assert moved("pushsvc_delivery_seconds_bucket", le="+Inf") >= 3
        assert moved("pushsvc_delivery_seconds_sum") > 0
        assert moved("pushsvc_direct_writes_total") >= 1
    wait_until(lambda: moved("pushsvc_stream_disconnects_total", reason=StreamExit.GONE) == 1)


def test_greenlets_count_open_connections_and_fall_back_when_they_close(
    server: PushsvcProcess, topic: str
) -> None:
    """A leak of connection greenlets (a stream never released) shows on /metrics."""
    # The scrape's own connection is one of them, in every reading alike.
    base = value(server.port, "pushsvc_greenlets")
    assert base >= 1
    streams = [SSEClient(server.port, f"/topics/{topic}/stream") for _ in range(3)]
    for stream in streams:
        stream.next_data("snapshot")
    assert value(server.port, "pushsvc_greenlets") == base + 3
    for stream in streams:
        stream.close()
    # The fixture's 1 s heartbeat finds a closed stream even where its close went unseen.
    wait_until(lambda: value(server.port, "pushsvc_greenlets") == base)


def test_a_stalled_reader_is_queued_then_conflated_then_evicted(topic: str) -> None:
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--max-stream-buffer", "16KiB", "--body-timeout", "1s"
    ).start()
    stalled = stalled_reader(proc.port, f"/topics/{topic}/stream")
    try:
        wait_until(lambda: value(proc.port, "pushsvc_subscribers") == 1)
        tags = {f"k{i}": "v" * 200 for i in range(16)}  # ~4 KB per update
        seen_queued = 0.0
        for n in range(2000):
            assert post(proc.port, topic, {"value": n, "tags": tags})[0] == 202
            now = samples(proc.port)
            seen_queued = max(seen_queued, now.get(("pushsvc_queued_runs", ()), 0.0))
            if now.get(("pushsvc_slow_disconnects_total", ()), 0.0):
                break
        assert value(proc.port, "pushsvc_direct_handbacks_total") >= 1  # its socket filled
        assert seen_queued >= 1  # then its updates waited in its queue
        assert value(proc.port, "pushsvc_conflated_runs_total") >= 1  # then latest-wins
        assert disconnects(proc.port, StreamExit.SLOW) == 1
    finally:
        stalled.close()
        proc.stop()


def test_rejected_requests_are_counted_by_code(server: PushsvcProcess, topic: str) -> None:
    before = value(server.port, "pushsvc_requests_rejected_total", code="invalid_event")
    assert post(server.port, topic, {"value": "twelve"})[0] == 400
    after = value(server.port, "pushsvc_requests_rejected_total", code="invalid_event")
    assert after == before + 1


def test_metrics_text_names_the_new_series_with_help(server: PushsvcProcess) -> None:
    text = request(server.port, "GET", "/metrics")[2].decode()
    for name in (
        "pushsvc_delivery_seconds",
        "pushsvc_stream_connects_total",
        "pushsvc_stream_disconnects_total",
        "pushsvc_conflated_runs_total",
        "pushsvc_queued_runs",
        "pushsvc_direct_writes_total",
        "pushsvc_greenlets",
    ):
        assert re.search(rf"^# HELP {name} \S", text, re.M), name


@pytest.mark.redis
def test_a_lost_broker_connection_counts_a_reset_and_ends_streams_by_reason(
    prefix: str, topic: str
) -> None:
    redis = RedisServer().start()
    proc = PushsvcProcess(
        "serve", "--tick", "0", env={"PUSHSVC_REDIS_URL": redis.url, "PUSHSVC_PREFIX": prefix}
    ).start()
    try:
        with SSEClient(proc.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            redis.stop()
            redis.start()  # the same port, empty: the pub/sub connection was lost meanwhile
            stream.wait_closed()  # ended, so that EventSource resumes from the history
        assert value(proc.port, "pushsvc_stream_resets_total") >= 1
        assert disconnects(proc.port, StreamExit.RESET) == 1
    finally:
        proc.stop()
        redis.stop()


def test_a_stream_whose_token_expires_is_counted_as_expired(topic: str) -> None:
    proc = PushsvcProcess("serve", "--tick", "0", env={"PUSHSVC_JWT_KEY": SECRET}).start()
    try:
        # `exp` is the minting second plus the TTL: 3 s leaves at least 2 s to open the
        # stream on a loaded machine (1 s once left a few ms, and the token expired first).
        token = hs256(subscribe=[topic], ttl_s=3)
        with SSEClient(
            proc.port, f"/topics/{topic}/stream", headers={"Authorization": f"Bearer {token}"}
        ) as stream:
            stream.next_data("snapshot")
            stream.wait_closed()
        wait_until(lambda: disconnects(proc.port, StreamExit.EXPIRED) == 1)
    finally:
        proc.stop()


@pytest.mark.redis
def test_an_aggregate_process_answers_metrics_on_its_metrics_port(prefix: str, topic: str) -> None:
    """`pushsvc aggregate` has no other HTTP: its partitions, topics and updates published
    are scraped there."""
    redis = RedisServer().start()
    env = {**os.environ, "PUSHSVC_REDIS_URL": redis.url, "PUSHSVC_PREFIX": prefix}
    aggregator = PushsvcProcess(
        "aggregate", "--partitions", "4", "--metrics-port", "0", "--tick", "0", env=env, http=False
    ).start()
    web = PushsvcProcess("web", "--partitions", "4", env=env).start()
    try:
        aggregator.wait_for_log("pushsvc aggregator metrics on")
        line = next(x for x in aggregator.output if "pushsvc aggregator metrics on" in x)
        port = int(re.search(r":(\d+)/metrics", line)[1])  # type: ignore[index]
        assert post(web.port, topic, [{"value": 1.0}, {"value": 2.0}])[0] == 202
        wait_until(lambda: value(port, "pushsvc_updates_published_total") == 2)
        assert value(port, "pushsvc_partitions_owned") == 4
        assert value(port, "pushsvc_aggregators_live") == 1
        assert value(port, "pushsvc_topics") == 1
    finally:
        web.stop()
        aggregator.stop()
        redis.stop()
