"""The pub/sub reader hands over every message, in order, however they arrive (real Redis)."""

from __future__ import annotations

import threading

import pytest
import redis

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.pubsub import PubSubReader
from support.live import wait_until
from support.redis_server import RedisServer

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
