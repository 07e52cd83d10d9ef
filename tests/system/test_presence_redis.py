"""Presence on Redis with two `pushsvc web` processes: either one answers every stream of both,
exactly, through joins, leaves and a server-ended stream; a web process killed with SIGKILL
stops counting within the presence expiry (`EXPIRY_US`); a web process that stops cleanly takes
its streams out at once, and leaves no key behind."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from harness.live import PushsvcProcess, SSEClient, request, wait_until
from harness.raw_streams import open_stream, reset
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.broker.redis.presence import EXPIRY_US
from support.auth_tokens import SECRET, hs256

EXPIRY_S = EXPIRY_US / 1_000_000  # the product's own: a fixed expiry


@pytest.fixture
def webs(redis_server: RedisServer, prefix: str) -> Iterator[list[PushsvcProcess]]:
    env = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_HEARTBEAT": "1s",
        "PUSHSVC_JWT_KEY": SECRET,
        "PUSHSVC_ANONYMOUS": "*",
    }
    procs = [PushsvcProcess("web", env=env).start() for _ in range(2)]
    yield procs
    for proc in procs:
        proc.kill()


def watching(web: PushsvcProcess, topic: str) -> int:
    status, _, body = request(web.port, "GET", f"/topics/{topic}/presence")
    assert status == 200, body
    count: int = json.loads(body)["watching"]
    return count


def both(webs: list[PushsvcProcess], topic: str, count: int) -> bool:
    return all(watching(web, topic) == count for web in webs)


def test_two_webs_count_every_stream_of_both(webs: list[PushsvcProcess], topic: str) -> None:
    one, two = webs
    gone = None
    streams = [
        SSEClient(one.port, f"/topics/{topic}/stream"),
        SSEClient(one.port, "/stream?topic=*"),
        SSEClient(two.port, f"/stream?topic={topic}&topic=other-{topic}"),
    ]
    try:
        # Each topic's answer is read, and cached for half a refresh, on its own: one topic's
        # count having moved says nothing of another's, so each is awaited.
        wait_until(lambda: both(webs, topic, 3), what="both webs count three")
        wait_until(lambda: both(webs, f"other-{topic}", 2), what="two on the other topic")
        wait_until(lambda: both(webs, "nobody-names-this", 1), what="the `*` stream")
        streams.pop(1).close()
        wait_until(lambda: both(webs, topic, 2), what="the pattern stream's leave")
        wait_until(lambda: both(webs, "nobody-names-this", 0), what="the leave, for any topic")
        # A stream the server ends (its token expires) and a client that resets.
        short = {"Authorization": f"Bearer {hs256(subscribe=[topic], ttl_s=3)}"}
        streams.append(SSEClient(two.port, f"/topics/{topic}/stream", headers=short))
        gone = open_stream(two.port, f"/topics/{topic}/stream")
        wait_until(lambda: both(webs, topic, 4), what="two more on the second web")
        reset(gone)
        wait_until(lambda: both(webs, topic, 3), what="the reset client's leave")
        streams[-1].wait_closed(timeout=10)
        wait_until(lambda: both(webs, topic, 2), what="the expired stream's leave")
    finally:
        if gone is not None:
            gone.close()
        for stream in streams:
            stream.close()
    wait_until(lambda: both(webs, topic, 0), what="every stream's leave")


def test_a_killed_webs_streams_leave_within_the_expiry(
    webs: list[PushsvcProcess], topic: str, redis_server: RedisServer, prefix: str
) -> None:
    one, two = webs
    on_one = [SSEClient(one.port, f"/topics/{topic}/stream") for _ in range(3)]
    on_two = SSEClient(two.port, f"/topics/{topic}/stream?presence=1")
    try:
        wait_until(lambda: both(webs, topic, 4), what="both webs count four")
        _, data = on_two.next_data("presence")
        while data["topics"][topic]["watching"] != 4:
            _, data = on_two.next_data("presence")
        one.kill()  # SIGKILL: nothing of it says goodbye
        # Its entries expire: its streams leave within the expiry (and the next refresh).
        wait_until(
            lambda: watching(two, topic) == 1,
            timeout=EXPIRY_S + 5,
            what="the killed web's streams leave",
        )
        _, data = on_two.next_data("presence", timeout=EXPIRY_S + 5)
        assert data == {"topics": {topic: {"watching": 1}}}
    finally:
        for stream in on_one:
            stream.close()
        on_two.close()
    # A clean stop takes its entries out at once; the killed web's directory listing expires.
    two.stop()
    client = redis.Redis.from_url(redis_server.url)
    assert [k for k in client.keys(f"{prefix}*presence*") if k.endswith(b"presence")] == (
        client.keys(f"{prefix}*presence*")
    )
    wait_until(
        lambda: client.keys(f"{prefix}*presence*") == [],
        timeout=EXPIRY_S + 5,
        what="no key of presence left",
    )


def test_two_webs_on_a_redis_cluster_count_from_each_topics_slot(
    redis_cluster: RedisClusterServers, prefix: str
) -> None:
    """On a Redis Cluster a topic's entries are in its partition's slot: a read is the two
    pipelines, routed by slot, whatever node holds it; topics of several partitions (several
    nodes) are counted alike."""
    env = {
        "PUSHSVC_REDIS_URL": redis_cluster.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
    }
    webs = [PushsvcProcess("web", env=env).start() for _ in range(2)]
    topics = [f"cluster-{i}-{prefix.rstrip(':')}" for i in range(6)]
    streams = []
    try:
        for i, topic in enumerate(topics):
            streams.append(SSEClient(webs[i % 2].port, f"/topics/{topic}/stream"))
            streams.append(SSEClient(webs[(i + 1) % 2].port, f"/topics/{topic}/stream"))
        streams.append(SSEClient(webs[0].port, "/stream?topic=*"))
        for topic in topics:
            wait_until(lambda t=topic: both(webs, t, 3), what=f"{topic} counted on both")
        streams.pop().close()
        for topic in topics:
            wait_until(lambda t=topic: both(webs, t, 2), what=f"{topic} without the * stream")
    finally:
        for stream in streams:
            stream.close()
        for web in webs:
            web.stop()


def test_streams_reset_by_a_redis_restart_leave_and_new_ones_count(
    own_redis: RedisServer, prefix: str, topic: str
) -> None:
    """Redis restarts empty: the web's updates feed is reset and its streams end (they resume
    from the history); they leave, and what joins after is counted in entries written anew."""
    env = {
        "PUSHSVC_REDIS_URL": own_redis.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
    }
    web = PushsvcProcess("web", env=env).start()
    try:
        with (
            SSEClient(web.port, f"/topics/{topic}/stream") as one,
            SSEClient(web.port, f"/stream?topic={topic}") as two,
        ):
            wait_until(lambda: watching(web, topic) == 2, what="two streams counted")
            own_redis.stop()
            own_redis.start()  # the same port, empty
            one.wait_closed()
            two.wait_closed()
        wait_until(lambda: watching(web, topic) == 0, what="the reset streams' leave")
        with SSEClient(web.port, f"/topics/{topic}/stream"):
            wait_until(lambda: watching(web, topic) == 1, what="a new stream counted")
    finally:
        web.stop()
