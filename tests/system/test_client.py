"""The Python client (`pushsvc.client.Client`) against real `pushsvc serve` processes:
publishing with retries, typed subscriptions that reconnect with Last-Event-ID."""

from __future__ import annotations

import time

import pytest

from pushsvc.client import Backoff, Client, ClientError
from pushsvc.client.models import Snapshot, StreamUpdate
from support.live import PushsvcProcess, post
from support.net import free_port

T0 = 1_763_700_000


class Sleeps:
    """Records the client's waits (and waits them: the server's limit must really pass)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


def test_publish_retries_a_429_after_the_servers_retry_after(topic: str) -> None:
    # Two events per second, a burst of two: a batch of three leaves the bucket in debt, so
    # the next POST is refused with Retry-After: 1 (until it refills).
    proc = PushsvcProcess("serve", "--tick", "0", "--publish-rate", "2").start()
    try:
        sleeps = Sleeps()
        client = Client(proc.base, backoff=Backoff(retries=3, base=0.01), sleep=sleeps)
        assert client.publish(topic, [{"value": 1}, {"value": 2}, {"value": 3}]) == 3
        assert sleeps.waits == []
        assert client.publish(topic, {"value": 4}) == 1
        assert len(sleeps.waits) == 1
        assert sleeps.waits[0] == 1  # what the server said, not the 0.01 s backoff
        assert client.history(topic)["value"].tolist() == [1, 2, 3, 4]
    finally:
        proc.stop()


def test_publish_gives_up_after_its_retries(topic: str) -> None:
    proc = PushsvcProcess("serve", "--tick", "0", "--publish-rate", "0.001").start()
    try:
        waits: list[float] = []
        client = Client(proc.base, backoff=Backoff(retries=2, cap=0.0), sleep=waits.append)
        client.publish(topic, {"value": 1})
        with pytest.raises(ClientError) as refused:
            client.publish(topic, {"value": 2})
        assert refused.value.status == 429
        assert len(waits) == 2
    finally:
        proc.stop()


def test_publish_never_retries_a_bad_request(server: PushsvcProcess, topic: str) -> None:
    waits: list[float] = []
    client = Client(server.base, sleep=waits.append)
    with pytest.raises(ClientError) as refused:
        client.publish(topic, {"value": "twelve"})
    assert refused.value.status == 400 and waits == []


def test_subscribe_yields_typed_updates_and_resumes_after_a_restart(topic: str) -> None:
    args = ("--port", str(free_port()), "--tick", "0")
    first = PushsvcProcess("serve", *args).start()
    client = Client(first.base, backoff=Backoff(base=0.05, cap=0.2))
    messages = client.subscribe([topic])
    second: PushsvcProcess | None = None
    try:
        snapshot = next(messages)
        assert snapshot == Snapshot(None, False, {})
        assert post(first.port, topic, {"value": 2.5, "ts": T0, "tags": {"k": "v"}})[0] == 202
        update = next(messages)
        assert isinstance(update, StreamUpdate)
        assert (update.topic, update.ts, update.reason) == (topic, T0, "event")
        assert update.event is not None
        assert (update.event.value, update.event.tags) == (2.5, {"k": "v"})
        assert update.windows["10s"]["count"] == 1 and update.windows["10s"]["var"] is None
        assert update.time.isoformat() == "2025-11-21T04:40:00+00:00"
        # The server goes away with its (in-memory) history; a new one takes its port.
        first.stop()
        second = PushsvcProcess("serve", *args).start()
        resumed = next(messages)
        # The client resumed with Last-Event-ID; the new history cannot continue it: a gap.
        assert isinstance(resumed, Snapshot) and resumed.gap
        assert post(second.port, topic, {"value": 7})[0] == 202
        after = next(messages)
        assert isinstance(after, StreamUpdate) and after.event is not None
        assert after.event.value == 7
    finally:
        messages.close()
        first.stop()
        if second is not None:
            second.stop()
