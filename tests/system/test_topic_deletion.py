"""`DELETE /topics/{topic}` end to end on real sockets: on the embedded `serve`, on `web` +
`aggregate` over Redis, and on a Redis Cluster. A topic whose clock a wrong event pushed ahead
(so that every event of now is late, kept on its late stream only) is deleted; its streams get
a `"gap": true` snapshot naming it; its next event starts it afresh (count 1); a resume across
the deletion replays it exactly in its place; the Python client and `pushsvc delete` do the
same."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from harness.live import PushsvcProcess, SSEClient, aggregator_and_two_webs, post, request, run_tool
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.client import Client


def _check_lock_out_is_undone(post_port: int, stream_port: int, topic: str) -> None:
    """The scenario, POSTing and DELETing on `post_port` and streaming on `stream_port`."""
    stream = SSEClient(stream_port, f"/topics/{topic}/stream")
    assert stream.next_data("snapshot")[1] == {"gap": False, "topics": {}}
    now = time.time()
    # A clock a minute ahead (inside any future bound): every event of now is late after it.
    assert post(post_port, topic, {"value": 100, "ts": now + 60}) == (202, {"accepted": 1})
    locked_id, locked = stream.next_data()
    assert locked["windows"]["1m"]["count"] == 1
    # Past the grace: kept on the late stream, never on the topic.
    assert post(post_port, topic, {"value": 1}) == (202, {"accepted": 0, "late": 1})

    status, _, body = request(post_port, "DELETE", f"/topics/{topic}")
    assert (status, json.loads(body)) == (200, {"topic": topic, "deleted": True})
    gap_id, gap = stream.next_data("snapshot")
    assert gap == {"id": gap_id, "gap": True, "topics": {}, "deleted": [topic]}

    assert post(post_port, topic, {"value": 7, "ts": now}) == (202, {"accepted": 1})
    fresh_id, fresh = stream.next_data()
    assert fresh["windows"]["1m"]["count"] == 1 and fresh["windows"]["1m"]["sum"] == 7
    stream.close()
    stats = json.loads(request(post_port, "GET", f"/topics/{topic}/stats")[2])
    assert stats["id"] == fresh_id and stats["windows"]["1m"]["count"] == 1
    history = json.loads(request(post_port, "GET", f"/topics/{topic}/history")[2])
    assert [u["id"] for u in history["updates"]] == [fresh_id]

    # A client that last saw the locked topic resumes: the deletion in its place, then the new
    # topic's update; nothing of the deleted topic is replayed as if current.
    resumed = SSEClient(stream_port, f"/topics/{topic}/stream", {"Last-Event-ID": locked_id})
    first, second = resumed.next(), resumed.next()
    assert (first.event, first.id, json.loads(first.data)["deleted"]) == (
        "snapshot",
        gap_id,
        [topic],
    )
    assert (second.event, second.id) == ("stats", fresh_id)
    resumed.close()

    missing = request(post_port, "DELETE", f"/topics/never-{topic}")
    assert missing[0] == 404 and json.loads(missing[2])["error"]["code"] == "not_found"


def test_a_locked_topic_is_deleted_and_starts_afresh_on_the_embedded_server(
    server: PushsvcProcess, topic: str
) -> None:
    _check_lock_out_is_undone(server.port, server.port, topic)


def test_the_python_client_and_the_cli_delete_a_topic(server: PushsvcProcess, topic: str) -> None:
    assert post(server.port, topic, {"value": 1}) == (202, {"accepted": 1})
    with Client(server.base) as client:
        assert client.delete_topic(topic) is True
        assert client.delete_topic(topic) is False  # gone already: a retry is harmless
    assert post(server.port, topic, {"value": 1}) == (202, {"accepted": 1})
    done = run_tool("delete", "--url", server.base, topic)
    assert (done.returncode, done.stdout.strip()) == (0, f"deleted {topic}")
    again = run_tool("delete", "--url", server.base, topic)
    assert again.returncode == 1 and f"no topic '{topic}'" in again.stderr


@pytest.fixture
def split(redis_server: RedisServer, prefix: str) -> Iterator[list[PushsvcProcess]]:
    env = {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix, "PUSHSVC_TICK": "1s"}
    with aggregator_and_two_webs(env) as procs:
        yield procs


@pytest.mark.redis
def test_a_locked_topic_is_deleted_and_starts_afresh_on_web_and_aggregate(
    split: list[PushsvcProcess], topic: str
) -> None:
    # Posted and deleted on one web process, streamed from the other; with idle ticks on, so
    # that a tick proposed before the deletion would bring the old clock back if it were
    # logged after it.
    _, web_a, web_b = split
    _check_lock_out_is_undone(web_a.port, web_b.port, topic)


@pytest.mark.redis
@pytest.mark.cluster
def test_a_locked_topic_is_deleted_and_starts_afresh_on_a_redis_cluster(
    redis_cluster: RedisClusterServers, prefix: str, topic: str
) -> None:
    env = {"PUSHSVC_REDIS_URL": redis_cluster.url, "PUSHSVC_PREFIX": prefix, "PUSHSVC_TICK": "0"}
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    web = PushsvcProcess("web", env=env).start()
    try:
        aggregator.wait_for_log("took the lease")
        _check_lock_out_is_undone(web.port, web.port, topic)
    finally:
        web.stop()
        aggregator.stop()
