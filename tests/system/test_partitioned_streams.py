"""Streams over 16 partitions, on one Redis and on a Redis Cluster (3 primaries): a web process
and an aggregator process, real SSE streams.

* A stream of topics in several partitions resumes from its cursor (`id:` with a position per
  partition) with every update it missed, once, and none twice.
* The web process subscribes only to what its clients watch: a topic's own channel while a
  stream of it is open (`PUBSUB SHARDNUMSUB` on the node that owns it, on a cluster), and for a
  pattern one channel per partition; never more sharded-pub/sub connections than primaries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys
from pushsvc.core.partitions import partition_of

pytestmark = pytest.mark.redis

P = 16


@pytest.fixture(
    scope="module", params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)]
)
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture(scope="module")
def deployment(url: str) -> Iterator[tuple[PushsvcProcess, str]]:
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    env = {
        "PUSHSVC_REDIS_URL": url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_PARTITIONS": str(P),
        "PUSHSVC_TICK": "0",
        "PUSHSVC_LEASE": "1s",
        "PUSHSVC_HEARTBEAT": "1s",
    }
    web = PushsvcProcess("web", env=env).start()
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    try:
        wait_until(lambda: request(web.port, "GET", "/readyz")[0] == 200, timeout=30)
        yield web, prefix
    finally:
        web.stop()
        aggregator.stop()


def topics_over_partitions(family: str, count: int) -> list[str]:
    """`count` topics `family.N`, each in a partition of its own."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        found.setdefault(partition_of(f"{family}.{n}", P), f"{family}.{n}")
        n += 1
    return list(found.values())


def test_a_stream_over_several_partitions_resumes_from_its_cursor_exactly(
    deployment: tuple[PushsvcProcess, str],
) -> None:
    web, _ = deployment
    family = f"f{uuid.uuid4().hex[:6]}"
    topics = topics_over_partitions(family, 6)
    path = f"/stream?topic={family}.*"
    value = 0.0
    with SSEClient(web.port, path) as first:
        assert first.next().event == "snapshot"
        for _ in range(2):
            for topic in topics:
                value += 1
                assert post(web.port, topic, {"value": value})[0] == 202
        seen = [first.next() for _ in range(2 * len(topics))]
    last_id = seen[-1].id
    assert "," in last_id  # a cursor: one position per partition the stream read
    missed = []
    for topic in topics:
        value += 1
        assert post(web.port, topic, {"value": value})[0] == 202
        missed.append(value)
    with SSEClient(web.port, path, headers={"Last-Event-ID": last_id}) as resumed:
        replayed = [resumed.next() for _ in missed]
        assert all(m.event == "stats" for m in replayed)  # no snapshot, no gap
        values = sorted(json.loads(m.data)["event"]["value"] for m in replayed)
        assert values == missed
        # Live after the replay, and nothing twice.
        assert post(web.port, topics[0], {"value": value + 1})[0] == 202
        live = resumed.next()
        assert json.loads(live.data)["event"]["value"] == value + 1


def _shard_subscribers(url: str, channels: list[bytes]) -> list[int]:
    client = single_client(url, socket_timeout=5)
    try:
        found = []
        for channel in channels:
            if url.startswith("redis+cluster"):
                node = client.get_node_from_key(channel)  # type: ignore[attr-defined]
                reply = client.execute_command(  # type: ignore[no-untyped-call]
                    "PUBSUB", "SHARDNUMSUB", channel, target_nodes=node
                )
            else:
                reply = client.execute_command(  # type: ignore[no-untyped-call]
                    "PUBSUB", "NUMSUB", channel
                )
            found.append(int(reply[1]))
        return found
    finally:
        client.close()


def test_the_web_process_subscribes_only_to_what_its_streams_watch(
    deployment: tuple[PushsvcProcess, str], url: str
) -> None:
    web, prefix = deployment
    keys = Keys(prefix, P)
    topic = f"w{uuid.uuid4().hex[:6]}"
    own = [keys.of(topic).updates_channel + topic.encode()]
    assert _shard_subscribers(url, own) == [0]
    with SSEClient(web.port, f"/topics/{topic}/stream") as stream:
        assert stream.next().event == "snapshot"
        assert _shard_subscribers(url, own) == [1]
    wait_until(lambda: _shard_subscribers(url, own) == [0], timeout=10)
    if not url.startswith("redis+cluster"):
        return  # on one Redis a pattern is a PSUBSCRIBE per partition (test_stream_release)
    every = [part.all_updates_channel for part in keys]
    with SSEClient(web.port, f"/stream?topic={topic}.*") as pattern:
        assert pattern.next().event == "snapshot"
        assert _shard_subscribers(url, every) == [1] * P
        client = single_client(url, socket_timeout=5)
        try:
            readers = [
                c
                for node in client.get_primaries()  # type: ignore[attr-defined]
                for c in client.client_list(target_nodes=node)  # type: ignore[call-arg]
                if c["name"].startswith("pushsvc-redis-reader")
            ]
        finally:
            client.close()
        assert 1 <= len(readers) <= 3  # one per primary at most, however many partitions
    wait_until(lambda: _shard_subscribers(url, every) == [0] * P, timeout=10)
