"""The pub/sub reader hands over every message, in order, however they arrive (real Redis)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from harness.live import wait_until
from harness.redis_server import RedisServer

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.pubsub import PubSubReader

pytestmark = pytest.mark.redis


def test_a_burst_larger_than_a_batch_is_handed_over_whole(redis_server: RedisServer) -> None:
    # While the handler is busy with the first message, a burst of 2,000 queues up in the
    # socket; the reader then hands it over in batches, and must lose none at their seams.
    received: list[bytes] = []
    busy = threading.Event()
    release = threading.Event()

    def handler(messages: list[tuple[bytes, bytes]]) -> None:
        if not received:
            busy.set()
            release.wait(10)
        received.extend(data for _, data in messages)

    reader = PubSubReader(
        single_client(redis_server.url, socket_timeout=None), name="burst", on_messages=handler
    )
    client = redis.Redis(port=redis_server.port)
    try:
        reader.add_prefix(b"burst:")
        client.publish("burst:a", b"0")
        assert busy.wait(10)
        with client.pipeline(transaction=False) as pipe:
            for n in range(1, 2001):
                pipe.publish(f"burst:{n % 7}", str(n).encode())
            assert pipe.execute() == [1] * 2000
        release.set()
        wait_until(lambda: len(received) >= 2001, timeout=10)
    finally:
        release.set()
        reader.close()
        client.close()
    assert [int(data) for data in received] == list(range(2001))


def _reader_counting_resets(url: str) -> tuple[PubSubReader, list[int]]:
    resets: list[int] = []
    reader = PubSubReader(
        single_client(url, socket_timeout=None),
        name="resets",
        on_messages=lambda messages: None,
        on_reset=lambda: resets.append(1),
        min_backoff=0.01,
    )
    return reader, resets


def test_a_lost_connection_with_subscriptions_resets(own_redis: RedisServer) -> None:
    # Messages published while it was down are lost to this process: its streams must resume.
    reader, resets = _reader_counting_resets(own_redis.url)
    admin = redis.Redis(port=own_redis.port)
    try:
        reader.add_channel(b"resets:a")
        assert admin.client_kill_filter(_type="pubsub") == 1
        wait_until(lambda: resets == [1], timeout=10)
        # Subscribed again by itself: a publication reaches it.
        wait_until(lambda: admin.pubsub_numsub("resets:a") == [(b"resets:a", 1)], timeout=10)
    finally:
        reader.close()
        admin.close()


def test_a_lost_idle_connection_resets_nothing_and_the_next_subscription_holds(
    own_redis: RedisServer,
) -> None:
    # A Redis of its own, so that the only other connection is the reader's.
    # Redis restarted while nothing was subscribed: the first SUBSCRIBE afterwards finds the
    # old connection dead. No message could be missed, so no stream may be ended for it; the
    # subscription is confirmed on the new connection.
    reader, resets = _reader_counting_resets(own_redis.url)
    admin = redis.Redis(port=own_redis.port)
    try:
        reader.add_channel(b"resets:a")
        reader.remove_channel(b"resets:a")
        wait_until(lambda: admin.pubsub_numsub("resets:a") == [(b"resets:a", 0)], timeout=10)
        # No longer of type pubsub once it has unsubscribed: it is the other connection.
        assert admin.client_kill_filter(skipme=True) == 1
        reader.add_channel(b"resets:b")
        assert admin.pubsub_numsub("resets:b") == [(b"resets:b", 1)]
        assert resets == []
    finally:
        reader.close()
        admin.close()


def test_a_client_factory_is_asked_again_at_each_reconnection(
    own_redis: RedisServer, redis_server: RedisServer
) -> None:
    # A Redis Cluster's bridge gets a factory (a live node each time): after a lost
    # connection the reader subscribes through the factory's next client, wherever that goes.
    servers = [own_redis, redis_server]
    made: list[redis.Redis] = []

    def next_client() -> redis.Redis:
        made.append(single_client(servers[min(len(made), 1)].url, socket_timeout=None))
        return made[-1]

    resets: list[int] = []
    reader = PubSubReader(
        next_client,
        name="factory",
        on_messages=lambda messages: None,
        on_reset=lambda: resets.append(1),
        min_backoff=0.01,
    )
    channel = f"factory:{uuid.uuid4().hex}".encode()
    first, second = (redis.Redis(port=s.port) for s in servers)
    try:
        reader.add_channel(channel)
        assert first.pubsub_numsub(channel) == [(channel, 1)]
        assert first.client_kill_filter(_type="pubsub") == 1
        wait_until(lambda: second.pubsub_numsub(channel) == [(channel, 1)], timeout=10)
        assert resets == [1] and len(made) == 2
    finally:
        reader.close()
        first.close()
        second.close()
