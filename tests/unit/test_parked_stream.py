"""A stream with no greenlet (`pushsvc.deliver.parked_stream`), on a socket pair: written by
the hub while idle and by its turns otherwise, in order and never twice; conflated behind a
full socket; heartbeats when nothing is written; its end at its token's expiry and when its
peer leaves, each calling `on_end` once."""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Iterator

import gevent
import gevent.event
import pytest
from gevent import socket as gsocket

from pushsvc.core.sse import HEARTBEAT
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateId
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.hub import Hub, StreamExit, Subscriber
from pushsvc.deliver.parked_stream import ParkedStream
from pushsvc.deliver.rendering import rendering_for_stream
from pushsvc.deliver.stream_socket import StreamSocket
from pushsvc.gevent_private import os_socket

WAIT_S = 10  # a bound for events awaited, never a sleep

_SOCKETS: list[gsocket.socket] = []

_PATIENT_US = 3_600_000_000
"""The slow-client timeout of the tests not about slowness: the hub's sweeper ends a stream
whose socket took nothing of what is in flight for the timeout, by the real clock, and the
suite's filler worker (at a lower priority, beside five busy ones) was once held up past 10 s
with bytes in flight ("stream closed: slow")."""


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _SOCKETS:
        _SOCKETS.pop().close()


def _tcp_pair() -> tuple[gsocket.socket, gsocket.socket]:
    """Two ends of a loopback TCP connection (a socket pair is AF_UNIX, where a send that
    does not fit sends nothing rather than part)."""
    with gsocket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ours = gsocket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
    _SOCKETS.extend((ours, peer))
    return ours, peer


def _update(n: int, size: int = 0) -> Update:
    body = b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)
    return Update.numbered("a", UpdateId("0badc0de", 0, n), n, body)


class Parked:
    """A parked stream of topic `a` on one end of a socket pair; `peer` reads what it wrote."""

    def __init__(
        self,
        hub: Hub,
        *,
        heartbeat_s: float = 60,
        expires_at: float | None = None,
        small_buffers: bool = False,
    ) -> None:
        ours, self.peer = _tcp_pair()
        if small_buffers:
            ours.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, 4096)
            self.peer.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, 4096)
        self.client: Subscriber = hub.subscribe(TopicMatcher(["a"]))
        self.ended = gevent.event.Event()
        self.ends = 0
        raw = os_socket(ours)
        self.stream = ParkedStream(
            self.client,
            raw,
            StreamSocket(raw, chunked=False),
            rendering_for_stream(None, chunked=False, cursor=None),
            heartbeat_s=heartbeat_s,
            expires_at=expires_at,
            latency=Histogram(),
            on_end=self._on_end,
        )
        self.received = b""

    def _on_end(self) -> None:
        self.ends += 1
        self.ended.set()

    def read_until(self, wanted: bytes) -> bytes:
        self.peer.settimeout(WAIT_S)
        while wanted not in self.received:
            data = self.peer.recv(65536)
            assert data, f"closed before {wanted!r}"
            self.received += data
        return self.received

    def values(self) -> list[int]:
        return [int(n) for n in re.findall(rb'"n":(\d+)', self.received)]


def test_an_idle_parked_stream_is_written_by_the_hub_then_by_its_turn_in_order() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=_PATIENT_US)
    parked = Parked(hub)
    gevent.sleep(0)  # its first turn: nothing queued, so the direct way opens
    assert parked.client.direct is parked.client.direct_way
    hub.dispatch([_update(1), _update(2)])
    parked.read_until(b'"n":2')
    assert hub.direct_sends == 1
    # A run for the hub's writer, then a wake-up before it runs (the direct way closes): the
    # next run is queued, and the turn writes the hub's run first, then the queue's.
    hub.dispatch([_update(3)])
    parked.client.wake()
    hub.dispatch([_update(4)])
    parked.read_until(b'"n":4')
    assert parked.values() == [1, 2, 3, 4]
    gevent.sleep(0)
    assert parked.client.direct is parked.client.direct_way  # open again once all is out


def test_behind_a_full_socket_a_parked_stream_conflates_then_sends_the_latest_in_order() -> None:
    hub = Hub(queue_size=2, slow_timeout_us=60_000_000)
    parked = Parked(hub, small_buffers=True)
    gevent.sleep(0)
    n = 0
    while hub.conflated_runs < 3:
        n += 1
        assert n < 10_000, "never conflated"
        hub.dispatch([_update(n, size=2000)])
        gevent.sleep(0)  # the hub's writer and the stream's turns run
    assert hub.handbacks >= 1
    parked.read_until(b'"n":%d,' % n)
    got = parked.values()
    assert got == sorted(set(got)), "in order, none twice"
    # Whole messages only: the rest of a send that would have blocked went out first.
    assert parked.received == b"".join(_update(v, size=2000).sse for v in got)
    assert got[-1] == n and len(got) < n
    assert not parked.client.closed


def test_a_parked_stream_sends_heartbeats_while_nothing_is_written() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=_PATIENT_US)
    parked = Parked(hub, heartbeat_s=0.05)
    parked.read_until(HEARTBEAT + HEARTBEAT)
    assert parked.received == HEARTBEAT * (len(parked.received) // len(HEARTBEAT))


def test_a_parked_stream_ends_at_its_tokens_expiry() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=_PATIENT_US)
    parked = Parked(hub, expires_at=time.time() + 0.05)
    assert parked.ended.wait(WAIT_S)
    assert parked.client.closed_reason == StreamExit.EXPIRED
    parked.peer.settimeout(WAIT_S)
    assert parked.peer.recv(100) == b""  # the stream closed its connection
    gevent.sleep(0)
    assert parked.ends == 1


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_a_parked_stream_ends_when_its_peer_leaves(how: str) -> None:
    hub = Hub(queue_size=10, slow_timeout_us=_PATIENT_US)
    parked = Parked(hub)
    gevent.sleep(0)
    if how == "reset":
        parked.peer.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    parked.peer.close()
    assert parked.ended.wait(WAIT_S)
    assert parked.client.closed_reason == StreamExit.GONE
    hub.dispatch([_update(1)])  # nothing to a stream that is over
    gevent.sleep(0)
    assert parked.ends == 1


def test_ended_parked_streams_are_freed_without_the_collector() -> None:
    """A stream that ended lets go of its subscriber's wake-up, so what it held is freed by
    reference counting at once, not by the collector's next full pass (which a serving
    process runs seldom: `pushsvc.ops.collector`)."""
    hub = Hub(queue_size=10, slow_timeout_us=_PATIENT_US)

    def one_stream_that_ends() -> None:
        parked = Parked(hub)
        gevent.sleep(0)
        parked.peer.close()
        assert parked.ended.wait(WAIT_S)
        hub.unsubscribe(parked.client)  # what the subscription's end does (`on_end`)
        gevent.sleep(0)
        while _SOCKETS:  # the test's own hold on the two ends
            _SOCKETS.pop().close()

    one_stream_that_ends()  # anything made once (the hub's writer, caches) is made here
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(50):
            one_stream_that_ends()
        left = len(gc.get_objects()) - before
    finally:
        gc.enable()
    # A stream leaves nothing behind (a cycle would keep its subscriber, queue, matcher,
    # direct way and sockets: dozens of objects each).
    assert left < 25, f"{left} objects left by 50 ended streams"
