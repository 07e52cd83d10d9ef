"""A messages stream whose history read fails for a moment, on a real Redis Cluster: `pushsvc
aggregate` and `pushsvc web` on a cluster of the test's own, the node of the stream's partition
paused (`CLIENT PAUSE ... ALL`: it answers nothing, past the web's 5 s socket timeout) while
the stream is primed, its subscriber coming back as an EventSource does (after the `retry:`,
with the last `id:` it read as `Last-Event-ID`, none if it read none).

What each subscriber must end with (`promise_kept`): every acknowledged message once, in
publish order, except where an `event: gap` stands at the very place of the ones it lacks.
A resume whose replay read failed must neither replay a part nor go live past what it missed;
a stream that came with no id and could not be primed must not leave its client to come back
as a new subscriber with nothing said of what was published meanwhile."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from harness.live import aggregator_and_two_webs, request, wait_caught_up
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer
from harness.sse_parser import EventStreamParser

from pushsvc.broker.redis.slots import partition_slot
from pushsvc.core.partitions import partition_of
from support.promise import promise_kept

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

P = 16  # the processes' default partitions
PAUSE_MS = 7000  # past the web's socket timeout (5 s): its read of the paused node fails


@dataclass
class Subscriber:
    """What one EventSource-like subscriber of `/topics/{topic}/messages` received: each
    message's number, the count received before each `event: gap`, its `Last-Event-ID`."""

    port: int
    topic: str
    numbers: list[int] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    last_id: str = ""
    connects: int = 0

    def stream(self, until: Callable[[Subscriber], bool], timeout: float = 20) -> bool:
        """One connection, read until the server ends it (False) or `until` holds (True)."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", f"/topics/{self.topic}/messages", headers=headers)
            response = conn.getresponse()
            assert response.status == 200, response.status
            self.connects += 1
            parser = EventStreamParser()
            deadline = time.monotonic() + timeout
            while not until(self):
                assert time.monotonic() < deadline, f"{self} in time"
                chunk = response.read1(65536)
                if not chunk:
                    return False
                for message in parser.feed(chunk):
                    if message.event == "gap":
                        self.gaps.append(len(self.numbers))
                    elif message.data:
                        self.numbers.append(json.loads(message.data)["n"])
                # An `id:` block with no data dispatches nothing, and sets it all the same.
                self.last_id = parser.last_event_id or self.last_id
            return True
        finally:
            conn.close()

    def holds(self, acked: list[int]) -> None:
        """The promise, for the messages `acked` (in publish order)."""
        with promise_kept():
            assert self.numbers == [n for n in acked if n in self.numbers], (
                f"{self.topic}: {self.numbers} is not {acked} once each, in order"
            )
            for missing in (n for n in acked if n not in self.numbers):
                before = len([n for n in self.numbers if acked.index(n) < acked.index(missing)])
                assert before in self.gaps, (
                    f"{self.topic}: message {missing} lost with no gap in its place "
                    f"(received {self.numbers}, gaps at {self.gaps})"
                )


@pytest.fixture
def deployment() -> Iterator[tuple[RedisClusterServers, int]]:
    with RedisClusterServers() as cluster:
        env = {
            "PUSHSVC_REDIS_URL": cluster.url,
            "PUSHSVC_PREFIX": f"t{uuid.uuid4().hex[:8]}:",
            "PUSHSVC_TICK": "0",
        }
        with aggregator_and_two_webs(env) as procs:
            yield cluster, procs[1].port


def _post(port: int, topic: str, n: int) -> None:
    status, _, body = request(
        port, "POST", f"/topics/{topic}/events", [{"type": "m", "data": {"n": n}}]
    )
    assert status == 202, (status, body)
    wait_caught_up(port)


def _node_of(cluster: RedisClusterServers, topic: str) -> RedisServer:
    return cluster.owner_of(partition_slot(partition_of(topic, P), P))


def _pause(cluster: RedisClusterServers, node: RedisServer) -> None:
    client = cluster.client(node)
    try:
        client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    finally:
        client.close()


def _unpause(cluster: RedisClusterServers, node: RedisServer) -> None:
    client = cluster.client(node)
    try:
        client.execute_command("CLIENT", "UNPAUSE")
    finally:
        client.close()


def test_a_resume_whose_replay_read_fails_replays_everything_when_it_comes_back(
    deployment: tuple[RedisClusterServers, int],
) -> None:
    """Message 1 received, the subscriber gone; message 2 published; its resume (with message
    1's id) is primed while the node is paused: that stream ends with nothing (the read
    failed, so no replay and no live), and its `Last-Event-ID` is still message 1's. It comes
    back once the node answers: message 2 replayed, then message 3 live. No gap: nothing was
    lost."""
    cluster, port = deployment
    topic = "u1"
    node = _node_of(cluster, topic)
    sub = Subscriber(port, topic)
    sub.stream(lambda s: bool(s.last_id))  # primed: its position (`earliest`: nothing yet)
    _post(port, topic, 1)
    sub.stream(lambda s: s.numbers == [1])
    _post(port, topic, 2)
    _pause(cluster, node)
    try:
        assert not sub.stream(lambda s: False), "a stream primed on a paused node went live"
        assert sub.numbers == [1]
    finally:
        _unpause(cluster, node)
    sub.stream(lambda s: s.numbers[-1:] == [2])
    _post(port, topic, 3)
    sub.stream(lambda s: s.numbers[-1:] == [3])
    sub.holds([1, 2, 3])
    assert sub.gaps == []


def test_a_new_stream_that_could_not_be_primed_says_gap_before_its_client_starts_afresh(
    deployment: tuple[RedisClusterServers, int],
) -> None:
    """A subscriber with no id opens its stream while the node is paused: the stream ends
    unprimed, with no id to come back with. Message 1 is published before it comes back, so
    its next stream (no `Last-Event-ID`: a new subscriber's) starts live past it: the first
    stream must have said `event: gap`. Message 2, published once it is back, arrives."""
    cluster, port = deployment
    topic = "u2"
    node = _node_of(cluster, topic)
    sub = Subscriber(port, topic)
    _pause(cluster, node)
    try:
        assert not sub.stream(lambda s: False), "a stream primed on a paused node went live"
    finally:
        _unpause(cluster, node)
    assert sub.last_id == ""
    _post(port, topic, 1)
    sub.stream(lambda s: s.last_id != "")  # primed: live from here
    _post(port, topic, 2)
    sub.stream(lambda s: s.numbers[-1:] == [2])
    sub.holds([1, 2])
