"""End to end on the embedded broker: POST on a real port → update on a real SSE socket."""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_published

STATS = ["count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99"]


def test_post_then_update_arrives_on_stream(server: PushsvcProcess, topic: str) -> None:
    stream = SSEClient(server.port, f"/topics/{topic}/stream")
    assert stream.status == 200
    assert stream.response_headers["content-type"].startswith("text/event-stream")
    assert stream.response_headers["cache-control"] == "no-store"
    assert stream.response_headers["x-accel-buffering"] == "no"
    _, snapshot = stream.next_data("snapshot")
    assert snapshot == {"gap": False, "topics": {}}
    assert stream.raw.startswith(b"retry: ")

    status, body = post(server.port, topic, {"value": 12.5, "tags": {"dish": "noodles"}})
    assert (status, body) == (202, {"accepted": 1})

    update_id, update = stream.next_data()
    assert update["topic"] == topic
    assert update["id"] == update_id
    assert update["event"]["value"] == 12.5
    assert update["event"]["tags"] == {"dish": "noodles"}
    assert set(update["windows"]) == {"10s", "1m", "5m"}
    for window in update["windows"].values():
        assert list(window) == STATS
        assert window["count"] == 1
        assert window["sum"] == window["mean"] == window["min"] == window["max"] == 12.5
        assert window["p50"] == window["p90"] == window["p99"] == 12.5
        assert window["var"] is None and window["stddev"] is None
    stream.close()


def test_every_update_arrives_in_order_once(server: PushsvcProcess, topic: str) -> None:
    stream = SSEClient(server.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    values = [float(i % 17) for i in range(300)]
    for start in range(0, len(values), 50):
        batch = [{"value": v} for v in values[start : start + 50]]
        assert post(server.port, topic, batch)[0] == 202
    received = stream.take(len(values))
    assert [u["event"]["value"] for _, u in received] == values
    ids = [i for i, _ in received]
    assert len(set(ids)) == len(ids)
    last = received[-1][1]["windows"]["5m"]
    assert last["count"] == len(values)
    assert math.isclose(last["mean"], statistics.fmean(values), rel_tol=1e-12)
    assert math.isclose(last["var"], statistics.variance(values), rel_tol=1e-9)
    stream.close()


def test_ndjson_batch(server: PushsvcProcess, topic: str) -> None:
    stream = SSEClient(server.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    stamp = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    body = f'{{"value": 1}}\n{{"value": 2.5, "ts": "{stamp}"}}\n\n{{"value": 3}}\n'
    status, reply = post(server.port, topic, body, content_type="application/x-ndjson")
    assert (status, reply) == (202, {"accepted": 3})
    assert [u["event"]["value"] for _, u in stream.take(3)] == [1.0, 2.5, 3.0]
    stream.close()


def test_multi_topic_stream_with_prefix_pattern(server: PushsvcProcess, topic: str) -> None:
    stream = SSEClient(server.port, f"/stream?topic={topic}.*&topic=other-{topic}")
    stream.next_data("snapshot")
    post(server.port, f"{topic}.a", {"value": 1})
    post(server.port, f"unrelated-{topic}", {"value": 2})
    post(server.port, f"other-{topic}", {"value": 3})
    post(server.port, f"{topic}.b", {"value": 4})
    got = [(u["topic"], u["event"]["value"]) for _, u in stream.take(3)]
    assert got == [(f"{topic}.a", 1.0), (f"other-{topic}", 3.0), (f"{topic}.b", 4.0)]
    stream.close()


def test_snapshot_first_carries_current_state(server: PushsvcProcess, topic: str) -> None:
    post(server.port, topic, [{"value": v} for v in (1, 2, 3, 4)])
    wait_published(server.port, topic, {"value": 4})  # logged is not yet applied
    status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
    assert status == 200
    latest = json.loads(body)
    stream = SSEClient(server.port, f"/stream?topic={topic}")
    snapshot_id, snapshot = stream.next_data("snapshot")
    assert snapshot["gap"] is False
    assert snapshot_id == latest["id"]
    assert snapshot["topics"][topic] == {
        "id": latest["id"],
        "ts": latest["ts"],
        "windows": latest["windows"],
    }
    assert latest["windows"]["1m"]["var"] == pytest.approx(statistics.variance([1, 2, 3, 4]))
    post(server.port, topic, {"value": 5})
    _, update = stream.next_data()
    assert update["event"]["value"] == 5.0 and update["windows"]["1m"]["count"] == 5
    stream.close()


def test_resume_replays_exactly_the_missed_updates(server: PushsvcProcess, topic: str) -> None:
    stream = SSEClient(server.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    post(server.port, topic, [{"value": v} for v in range(5)])
    seen = stream.take(3)
    stream.close()  # dropped after k=3 of 5

    post(server.port, topic, [{"value": v} for v in range(5, 9)])
    resumed = SSEClient(server.port, f"/topics/{topic}/stream", {"Last-Event-ID": seen[-1][0]})
    replayed = resumed.take(6)
    assert [u["event"]["value"] for _, u in replayed] == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    post(server.port, topic, {"value": 9})
    assert resumed.next_data()[1]["event"]["value"] == 9.0
    resumed.close()

    # First connects pass the id as a query parameter (EventSource cannot set headers).
    by_query = SSEClient(server.port, f"/topics/{topic}/stream?lastEventId={replayed[-1][0]}")
    assert by_query.next_data()[1]["event"]["value"] == 9.0
    by_query.close()


def test_resume_with_unknown_or_malformed_id_gets_gap_snapshot(
    server: PushsvcProcess, topic: str
) -> None:
    post(server.port, topic, {"value": 7})
    for last_id in ("0badc0de:0-1", "garbage", "x" * 300):
        stream = SSEClient(server.port, f"/topics/{topic}/stream", {"Last-Event-ID": last_id})
        _, snapshot = stream.next_data("snapshot")
        assert snapshot["gap"] is True
        assert snapshot["topics"][topic]["windows"]["10s"]["max"] == 7.0
        stream.close()


def test_resume_beyond_trimmed_history_gets_gap_snapshot(topic: str) -> None:
    small = PushsvcProcess("serve", "--tick", "0", "--history", "5").start()
    try:
        stream = SSEClient(small.port, f"/topics/{topic}/stream")
        stream.next_data("snapshot")
        post(small.port, topic, [{"value": v} for v in range(3)])
        first_id, _ = stream.next_data()
        stream.close()
        post(small.port, topic, [{"value": v} for v in range(3, 12)])
        resumed = SSEClient(small.port, f"/topics/{topic}/stream", {"Last-Event-ID": first_id})
        snapshot_id, snapshot = resumed.next_data("snapshot")
        assert snapshot["gap"] is True
        assert snapshot["topics"][topic]["windows"]["5m"]["count"] == 12
        post(small.port, topic, {"value": 12})
        update_id, update = resumed.next_data()
        assert update["windows"]["5m"]["count"] == 13
        assert update_id != snapshot_id
        resumed.close()
    finally:
        small.stop()


def test_heartbeat_keeps_idle_stream_alive(server: PushsvcProcess, topic: str) -> None:
    stream = SSEClient(server.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    with pytest.raises(TimeoutError):
        stream.next(timeout=2.5)  # heartbeats are comments: no message, but bytes flow
    assert stream.comments.count("") >= 2
    stream.close()


def test_topics_counts_the_streams_watching_each(server: PushsvcProcess, topic: str) -> None:
    post(server.port, topic, [{"value": 2}, {"value": 4}])
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        topics = json.loads(request(server.port, "GET", "/topics")[2])["topics"]
        assert {t["topic"]: t["subscribers"] for t in topics}[topic] == 1


def test_idle_topic_windows_keep_sliding(topic: str) -> None:
    ticking = PushsvcProcess("serve", "--tick", "100ms", "--windows", "1s,1m").start()
    try:
        stream = SSEClient(ticking.port, f"/topics/{topic}/stream")
        stream.next_data("snapshot")
        post(ticking.port, topic, {"value": 3})
        assert stream.next_data()[1]["windows"]["1s"]["count"] == 1
        _, tick = stream.next_data(timeout=5)
        assert tick["reason"] == "tick" and tick["event"] is None
        assert tick["windows"]["1s"] == dict.fromkeys(STATS, None) | {"count": 0, "sum": 0.0}
        assert tick["windows"]["1m"]["count"] == 1
        stream.close()
    finally:
        ticking.stop()


def test_sigterm_ends_open_streams_and_exits_cleanly(topic: str) -> None:
    proc = PushsvcProcess("serve").start()
    stream = SSEClient(proc.port, f"/topics/{topic}/stream")
    stream.next_data("snapshot")
    assert proc.stop(timeout=10) == 0
    with pytest.raises(EOFError):
        stream.next(timeout=5)
    stream.close()


def test_a_stream_over_several_topics_resumes_from_its_id_exactly(
    server: PushsvcProcess, topic: str
) -> None:
    # The stream's id is its cursor (on the embedded broker, one partition: the newest id it
    # has). Dropped at two different points, it resumes with no snapshot, no gap and no
    # duplicate, across the topics and whatever order they were posted in.
    topics = [f"{topic}.a", f"other-{topic}", f"{topic}.b"]
    path = f"/stream?topic={topic}.*&topic=other-{topic}"
    posted = [(topics[n % 3 if n % 5 else 1], float(n)) for n in range(12)]

    def post_all(items: list[tuple[str, float]]) -> None:
        for name, value in items:
            assert post(server.port, name, {"value": value})[0] == 202

    stream = SSEClient(server.port, path)
    stream.next_data("snapshot")
    post_all(posted[:6])
    seen = stream.take(2)
    stream.close()
    post_all(posted[6:9])
    received = [(u["topic"], u["event"]["value"]) for _, u in seen]
    for cut in (4, 7):  # a second drop, later, after the first resume
        resumed = SSEClient(server.port, path, {"Last-Event-ID": seen[-1][0]})
        first = resumed.next()
        assert first.event == "stats"  # a replay, not a (gap) snapshot
        more = [(first.id, json.loads(first.data)), *resumed.take(cut - len(received) - 1)]
        received += [(u["topic"], u["event"]["value"]) for _, u in more]
        seen = more
        resumed.close()
        if cut == 4:
            post_all(posted[9:])
    tail = SSEClient(server.port, path, {"Last-Event-ID": seen[-1][0]})
    rest = tail.take(len(posted) - len(received))
    received += [(u["topic"], u["event"]["value"]) for _, u in rest]
    assert received == posted
    tail.close()
