"""The one object that writes every stream (`pushsvc.deliver.live_stream`): its named exits,
heartbeats and expiry on a clock the tests move (nothing sleeps); on a loopback connection
(plain TCP), written by the hub while idle and by its turns otherwise, in order and never
twice, conflated behind a full socket; through the WSGI server (`ServerWrites`, TLS and
gunicorn), its bytes in flight until the server wrote them; paced; and its end, which calls
`on_end` once."""

from __future__ import annotations

import gc
import re
import sys
from collections.abc import Callable, Iterator

import gevent
import gevent.event
import pytest
from gevent import socket as gsocket

from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import HEARTBEAT
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Run, Update, UpdateId
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.hub import Hub, StreamExit, Subscriber
from pushsvc.deliver.live_stream import LiveStream, Renew, StreamSink
from pushsvc.deliver.pacer import Paced
from pushsvc.deliver.peer_watch import PeerWatch
from pushsvc.deliver.rendering import rendering_for_stream, run_of
from pushsvc.deliver.server_writes import ServerWrites
from pushsvc.deliver.stream_clock import LOOP_CLOCK, StreamClock
from pushsvc.deliver.stream_socket import StreamSocket, http_chunk

HEARTBEAT_S = 15.0
WAIT_S = 10  # a bound for events awaited, never a sleep

_PATIENT_US = 3_600_000_000
"""The slow-client timeout of the tests on real sockets not about slowness: the hub's sweeper
ends a stream whose socket took nothing of what is in flight for the timeout, by the real
clock, and the suite's filler worker was once held up past 10 s with bytes in flight."""

_SOCKETS: list[gsocket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _SOCKETS:
        _SOCKETS.pop().close()


class _ManualTimer:
    def __init__(self, due_us: int, callback: Callable[[], None]) -> None:
        self.due_us = due_us
        self.callback: Callable[[], None] | None = callback

    def close(self) -> None:
        self.callback = None


class ManualClock:
    """Monotonic and wall time moved by hand (the wall runs a fixed offset ahead); timers
    fire, in order, as `advance` passes them, each followed by the turns it scheduled."""

    def __init__(self) -> None:
        self.now_us = 100_000_000
        self.delays: list[float] = []
        """Every timer's delay, in the order asked."""
        self._timers: list[_ManualTimer] = []

    def monotonic_us(self) -> int:
        return self.now_us

    def wall(self) -> float:
        return self.now_us / 1_000_000 + 1_000_000.0

    def call_later(self, delay_s: float, callback: Callable[[], None], /) -> _ManualTimer:
        self.delays.append(round(delay_s, 6))
        timer = _ManualTimer(self.now_us + round(delay_s * 1_000_000), callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        until = self.now_us + round(seconds * 1_000_000)
        while True:
            live = [t for t in self._timers if t.callback is not None and t.due_us <= until]
            if not live:
                break
            timer = min(live, key=lambda t: t.due_us)
            self._timers.remove(timer)
            self.now_us = max(self.now_us, timer.due_us)
            callback, timer.callback = timer.callback, None
            assert callback is not None
            callback()
            gevent.sleep(0)  # the turns it scheduled
        self.now_us = until
        gevent.sleep(0)


class Recorder:
    """A sink that takes every send whole, at once, and records it."""

    chunked = False

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.ended: bool | None = None
        """None while the stream runs; then whether its end was quiet."""

    def send(self, data: bytes | memoryview, /) -> int:
        self.sent.append(bytes(data))
        return 0

    def flush(self, progressed: Callable[[int], None], failed: Callable[[], None], /) -> None:
        raise AssertionError("nothing is ever left")

    def end(self, quiet: bool, /) -> None:
        self.ended = quiet


class Live:
    """A live stream of topic `a` on `sink`, and what its end calls."""

    def __init__(
        self,
        hub: Hub,
        sink_of: Callable[[Subscriber], StreamSink],
        *,
        clock: StreamClock,
        heartbeat_s: float = HEARTBEAT_S,
        expires_at: float | None = None,
        latency: Histogram | None = None,
        paced_s: float = 0.0,
        watch: Callable[[Subscriber], PeerWatch] | None = None,
        renew: Renew | None = None,
    ) -> None:
        self.client: Subscriber = hub.subscribe(TopicMatcher(["a"]))
        self.ended = gevent.event.Event()
        self.ends = 0
        self.latency = latency or Histogram()
        sink = self.sink = sink_of(self.client)
        rendering = rendering_for_stream(None, chunked=sink.chunked, cursor=None)
        self.stream = LiveStream(
            self.client,
            sink,
            rendering,
            heartbeat_s=heartbeat_s,
            expires_at=expires_at,
            latency=self.latency,
            on_end=self._on_end,
            paced=Paced(paced_s, rendering.message) if paced_s else None,
            watch=None if watch is None else watch(self.client),
            clock=clock,
            renew=renew,
        )

    def _on_end(self) -> None:
        self.ends += 1
        self.ended.set()


def _hub(clock: StreamClock = LOOP_CLOCK, **given: int) -> Hub:
    settings = {"queue_size": 10, "slow_timeout_us": _PATIENT_US, **given}
    return Hub(clock=clock.monotonic_us, **settings)


def _update(n: int, size: int = 0, topic: str = "a") -> Update:
    body = b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)
    return Update.numbered(topic, UpdateId("0badc0de", 0, n), n, body)


def _run(n: int, received_us: int = 0) -> Run:
    run = run_of([_update(n)])
    run.received_us = received_us
    return run


def _recorded(
    clock: ManualClock | None = None, **given: float | Histogram | None
) -> tuple[ManualClock, Live, Recorder]:
    clock = clock or ManualClock()
    sink = Recorder()
    live = Live(_hub(clock), lambda _: sink, clock=clock, **given)  # type: ignore[arg-type]
    gevent.sleep(0)  # its first turn
    return clock, live, sink


# ---------------------------------------------------------------- exits, heartbeats, expiry


@pytest.mark.parametrize("reason", [StreamExit.SHUTDOWN, StreamExit.RESET, StreamExit.SLOW])
def test_a_closed_stream_ends_with_its_reason_and_nothing_more(reason: StreamExit) -> None:
    clock, live, sink = _recorded()
    live.client.close(reason)
    clock.advance(20.0)  # a heartbeat overdue: still nothing is written
    assert sink.sent == [] and sink.ended is True
    assert live.client.closed_reason is reason and live.ends == 1


def test_what_was_queued_before_an_exit_is_still_written() -> None:
    _clock, live, sink = _recorded()
    run = _run(1)
    live.client.queue.put(run)
    live.client.close(StreamExit.GONE)  # before the turn the queue woke it for
    gevent.sleep(0)
    assert sink.sent == [run.block] and sink.ended is False
    assert live.client.closed_reason is StreamExit.GONE and live.ends == 1


def test_an_idle_stream_gets_a_heartbeat_each_heartbeat_interval() -> None:
    clock, _live, sink = _recorded()
    clock.advance(HEARTBEAT_S)
    assert sink.sent == [HEARTBEAT]
    clock.advance(HEARTBEAT_S)
    assert sink.sent == [HEARTBEAT, HEARTBEAT]
    assert clock.delays == [HEARTBEAT_S] * 3


def test_a_wake_up_with_nothing_to_write_before_the_heartbeat_is_due_writes_nothing() -> None:
    clock, live, sink = _recorded()
    clock.advance(5.0)
    live.client.wake()
    gevent.sleep(0)
    clock.advance(HEARTBEAT_S - 5.0 - 0.1)
    assert sink.sent == []
    clock.advance(0.1)
    assert sink.sent == [HEARTBEAT]


def test_a_write_puts_the_next_heartbeat_off() -> None:
    clock, live, sink = _recorded()
    clock.advance(10.0)
    run = _run(1)
    live.client.queue.put(run)
    live.client.wake()
    gevent.sleep(0)
    clock.advance(HEARTBEAT_S - 0.1)
    assert sink.sent == [run.block]
    clock.advance(0.1)
    assert sink.sent == [run.block, HEARTBEAT]


def test_a_run_a_filter_leaves_nothing_of_is_as_if_none_came() -> None:
    clock, live, sink = _recorded(latency=Histogram())
    clock.advance(5.0)
    live.client.queue.put(Run([], b"", received_us=1))  # what a group filter leaves of a run
    live.client.wake()
    gevent.sleep(0)
    assert sink.sent == [] and sum(live.latency.counts) == 0
    clock.advance(HEARTBEAT_S - 5.0)
    assert sink.sent == [HEARTBEAT]  # the heartbeat as due as if nothing came


def test_each_write_observes_the_latency_of_its_oldest_run() -> None:
    clock, live, sink = _recorded(latency=Histogram())
    clock.advance(0.002)
    older, newer = _run(1, clock.now_us - 3_000), _run(2, clock.now_us - 1_000)
    live.client.queue.put(older)
    live.client.queue.put(newer)
    live.client.wake()
    gevent.sleep(0)
    assert sink.sent == [older.block + newer.block]  # one send
    assert sum(live.latency.counts) == 1 and live.latency.sum_us == pytest.approx(3_000, abs=1)


def test_the_token_expiring_ends_the_stream_as_expired() -> None:
    clock = ManualClock()
    # A heartbeat at 15 s, the end at 20 s: the timer is bounded by the token's exp.
    clock, live, sink = _recorded(clock, expires_at=clock.wall() + 20.0)
    clock.advance(HEARTBEAT_S)
    assert sink.sent == [HEARTBEAT] and live.ends == 0
    clock.advance(5.0)
    assert clock.delays == [HEARTBEAT_S, 5.0]
    assert live.client.closed_reason is StreamExit.EXPIRED and live.ends == 1
    assert sink.ended is True  # a quiet end: the response ends whole


def test_a_token_expired_before_the_stream_ends_it_without_a_write() -> None:
    clock = ManualClock()
    clock, live, sink = _recorded(clock, expires_at=clock.wall())
    assert sink.sent == [] and clock.delays == []
    assert live.client.closed_reason is StreamExit.EXPIRED and live.ends == 1


class Renewals:
    """A renewal hook that records each ask; the test answers them (`answer`)."""

    def __init__(self) -> None:
        self.asked: list[Callable[[float | None], None]] = []

    def __call__(self, done: Callable[[float | None], None]) -> None:
        self.asked.append(done)

    def answer(self, expires_at: float | None) -> None:
        self.asked[-1](expires_at)
        gevent.sleep(0)


def test_a_renewed_grant_carries_the_stream_to_its_new_expiry_then_asks_again() -> None:
    clock = ManualClock()
    renewals = Renewals()
    clock, live, sink = _recorded(clock, expires_at=clock.wall() + 5.0, renew=renewals)
    clock.advance(5.0)
    assert len(renewals.asked) == 1 and live.client.closed_reason is None
    # While the backend is asked the stream goes on: its heartbeat is still due.
    clock.advance(HEARTBEAT_S - 5.0)
    assert sink.sent == [HEARTBEAT]
    renewals.answer(clock.wall() + 20.0)
    assert live.client.closed_reason is None and live.ends == 0
    clock.advance(20.0)
    assert len(renewals.asked) == 2 and live.client.closed_reason is None


@pytest.mark.parametrize("answer", ["no", "already past"])
def test_a_renewal_that_says_no_ends_the_stream_as_expired(answer: str) -> None:
    clock = ManualClock()
    renewals = Renewals()
    clock, live, sink = _recorded(clock, expires_at=clock.wall() + 5.0, renew=renewals)
    clock.advance(5.0)
    assert live.ends == 0
    renewals.answer(None if answer == "no" else clock.wall())
    assert live.client.closed_reason is StreamExit.EXPIRED and live.ends == 1
    assert sink.ended is True


def test_a_renewal_answered_after_the_stream_ended_changes_nothing() -> None:
    clock = ManualClock()
    renewals = Renewals()
    clock, live, _ = _recorded(clock, expires_at=clock.wall() + 5.0, renew=renewals)
    clock.advance(5.0)
    live.client.close(StreamExit.SHUTDOWN)
    gevent.sleep(0)
    renewals.answer(clock.wall() + 60.0)
    assert live.client.closed_reason is StreamExit.SHUTDOWN and live.ends == 1


# ------------------------------------------------------------------- paced (`?max_hz=`)


def test_paced_sends_an_update_held_behind_a_newer_one_without_its_id() -> None:
    paced = Paced(1.0, rendering_for_stream(None, chunked=False, cursor=None).message)
    a1, a2, b3 = _update(1), _update(2), _update(3, topic="b")
    assert paced.blocks([run_of([a1])], 100.0) == [a1.sse]
    assert paced.next_due() is None
    assert paced.blocks([run_of([a2])], 100.25) == []  # held back: its topic went 0.25 s ago
    assert paced.next_due() == 101.0
    assert paced.blocks([run_of([b3])], 100.5) == [b3.sse]
    # a2 goes now, after b3 went: without `id:`, so Last-Event-ID never moves backwards.
    assert paced.blocks([], 101.0) == [b"event: stats\ndata: " + a2.data + b"\n\n"]
    assert paced.next_due() is None


def test_a_paced_streams_timer_falls_due_with_what_its_pacer_held_back() -> None:
    clock, live, sink = _recorded(paced_s=1.0)
    hub_queue = live.client.queue
    a1, a2 = _update(1), _update(2)
    hub_queue.put(run_of([a1]))
    live.client.wake()
    gevent.sleep(0)
    assert sink.sent == [a1.sse]
    clock.advance(0.25)
    hub_queue.put(run_of([a2]))
    live.client.wake()
    gevent.sleep(0)
    assert sink.sent == [a1.sse]  # held back
    assert clock.delays[-1] == 0.75  # the held-back update falls due before the heartbeat
    clock.advance(0.75)
    assert sink.sent == [a1.sse, a2.sse]
    clock.advance(HEARTBEAT_S - 0.1)  # nothing held back: the heartbeat's time again
    assert sink.sent == [a1.sse, a2.sse]
    clock.advance(0.1)
    assert sink.sent == [a1.sse, a2.sse, HEARTBEAT]


def test_a_paced_stream_is_never_written_by_the_hub() -> None:
    sink = StreamSocket(_tcp_pair()[0], chunked=False)
    live = Live(_hub(), lambda _: sink, clock=LOOP_CLOCK, paced_s=1.0)
    gevent.sleep(0)
    assert live.client.direct_way is None and live.client.direct is None
    live.client.close(StreamExit.SHUTDOWN)
    assert live.ended.wait(WAIT_S)


# ---------------------------------------------------------------- plain TCP: the connection


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


class OnTcp(Live):
    """A live stream on one end of a loopback connection; `peer` reads what it wrote."""

    def __init__(
        self,
        hub: Hub,
        *,
        clock: StreamClock = LOOP_CLOCK,
        chunked: bool = False,
        small_buffers: bool = False,
        expires_at: float | None = None,
    ) -> None:
        ours, self.peer = _tcp_pair()
        if small_buffers:
            ours.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, 4096)
            self.peer.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, 4096)
        sink = StreamSocket(ours, chunked=chunked)
        super().__init__(
            hub,
            lambda _: sink,
            clock=clock,
            heartbeat_s=60,
            expires_at=expires_at,
            watch=lambda client: PeerWatch(ours, client.gone),
        )
        self.received = b""

    def read_until(self, wanted: bytes) -> bytes:
        self.peer.settimeout(WAIT_S)
        while wanted not in self.received:
            data = self.peer.recv(65536)
            assert data, f"closed before {wanted!r}"
            self.received += data
        return self.received

    def nothing_more(self) -> bool:
        self.peer.setblocking(False)
        try:
            return not self.peer.recv(65536)  # b"": closed with nothing more
        except BlockingIOError:
            return True
        finally:
            self.peer.setblocking(True)

    def values(self) -> list[int]:
        return [int(n) for n in re.findall(rb'"n":(\d+)', self.received)]


def test_an_idle_stream_is_written_by_the_hub_then_by_its_turn_in_order() -> None:
    hub = _hub()
    live = OnTcp(hub)
    gevent.sleep(0)  # its first turn: nothing queued, so the direct way opens
    assert live.client.direct is live.client.direct_way
    hub.dispatch([_update(1), _update(2)])
    live.read_until(b'"n":2')
    assert hub.direct_sends == 1
    # A run for the hub's writer, then a wake-up before it runs (the direct way closes): the
    # next run is queued, and the turn writes the hub's run first, then the queue's.
    hub.dispatch([_update(3)])
    live.client.wake()
    hub.dispatch([_update(4)])
    live.read_until(b'"n":4')
    assert live.values() == [1, 2, 3, 4]
    gevent.sleep(0)
    assert live.client.direct is live.client.direct_way  # open again once all is out


def test_a_stream_with_a_floor_or_a_queue_is_never_written_directly() -> None:
    hub = _hub()
    live = OnTcp(hub)
    # Subscribed before its replay was read: its floor drops what the replay had (n <= 5).
    live.client.queue.floor = Cursor([UpdateId("0badc0de", 0, 5)])
    hub.dispatch([_update(3)])  # queued before its first turn, as during its head
    gevent.sleep(0)
    assert live.client.direct is None  # the floor is still there (nothing after it came)
    hub.dispatch([_update(6)])
    live.read_until(b'"n":6')
    assert live.values() == [6] and hub.direct_sends == 0
    gevent.sleep(0)
    assert live.client.direct is live.client.direct_way  # floor passed, queue empty: open


def test_the_hubs_writes_on_the_direct_way_put_the_heartbeat_off() -> None:
    clock = ManualClock()
    hub = _hub(clock)
    live = OnTcp(hub, clock=clock)
    gevent.sleep(0)
    clock.advance(10.0)
    hub.dispatch([_update(1)])
    live.read_until(b'"n":1')
    assert hub.direct_sends == 1
    clock.advance(60.0 - 10.0)  # due from the stream's start, but the hub wrote at 10 s
    assert live.nothing_more()
    clock.advance(10.0)
    assert live.read_until(HEARTBEAT).endswith(HEARTBEAT)


def test_a_turn_writes_the_handed_back_rest_then_the_ready_runs_then_the_queued() -> None:
    live = OnTcp(_hub(), chunked=True)
    gevent.sleep(0)
    direct_way = live.client.direct_way
    assert direct_way is not None
    ready, queued = _run(1), _run(2)
    direct_way.ready.append(ready)
    direct_way.handback = memoryview(b"the rest\r\n")
    live.client.queue.put(queued)
    live.client.wake()
    body = ready.block + queued.block
    expected = b"the rest\r\n" + http_chunk(body)
    assert live.read_until(expected) == expected
    assert direct_way.ready == [] and direct_way.handback is None


def test_a_handed_back_rest_alone_is_a_write_with_no_chunk_of_its_own() -> None:
    clock = ManualClock()
    live = OnTcp(_hub(clock), clock=clock, chunked=True)
    gevent.sleep(0)
    clock.advance(5.0)
    assert live.client.direct_way is not None
    live.client.direct_way.handback = memoryview(b"end of a chunk\r\n")
    live.client.wake()
    assert live.read_until(b"\r\n") == b"end of a chunk\r\n"
    clock.advance(60.0 - 5.0)  # a write: no heartbeat 60 s after the start
    assert live.nothing_more() and live.received == b"end of a chunk\r\n"
    clock.advance(5.0)
    assert live.read_until(HEARTBEAT).endswith(http_chunk(HEARTBEAT))


def test_behind_a_full_socket_a_stream_conflates_then_sends_the_latest_in_order() -> None:
    hub = _hub(queue_size=2, slow_timeout_us=60_000_000)
    live = OnTcp(hub, small_buffers=True)
    gevent.sleep(0)
    n = 0
    while hub.conflated_runs < 3:
        n += 1
        assert n < 10_000, "never conflated"
        hub.dispatch([_update(n, size=2000)])
        gevent.sleep(0)  # the hub's writer and the stream's turns run
    assert hub.handbacks >= 1
    live.read_until(b'"n":%d,' % n)
    got = live.values()
    assert got == sorted(set(got)), "in order, none twice"
    # Whole messages only: the rest of a send that would have blocked went out first.
    assert live.received == b"".join(_update(v, size=2000).sse for v in got)
    assert got[-1] == n and len(got) < n
    assert not live.client.closed


def test_a_rest_that_would_pass_the_budget_ends_the_stream_mid_chunk_as_behind() -> None:
    """The hub's send of a large run to a stream whose socket is full: its rest, kept, would
    take the process's pending bytes past the budget, so the stream ends (its client resumes
    from the history), holding nothing, and with no last chunk after the part it got."""
    budget = 64 << 10
    hub = _hub(stream_buffer_budget=budget, max_stream_buffer=budget)
    live = OnTcp(hub, chunked=True, small_buffers=True)
    gevent.sleep(0)
    assert live.client.direct is live.client.direct_way
    hub.dispatch([_update(n, size=2000) for n in range(200)])  # one run of ~400 kB
    assert live.ended.wait(WAIT_S)
    assert live.client.closed_reason is StreamExit.BEHIND
    hub.unsubscribe(live.client)
    assert hub.pending.total == 0
    live.peer.settimeout(WAIT_S)
    while data := live.peer.recv(1 << 16):
        live.received += data
    assert 0 < len(live.received) < 200 * 2000
    assert not live.received.endswith(b"0\r\n\r\n")


def test_a_turn_whose_rendered_bytes_would_pass_the_budget_ends_the_stream() -> None:
    budget = 64 << 10
    hub = _hub(stream_buffer_budget=budget)
    live = OnTcp(hub, chunked=True)
    gevent.sleep(0)
    direct_way = live.client.direct_way
    assert direct_way is not None
    # Runs the hub's writer had not sent when the stream woke: rendered, past the budget.
    direct_way.ready.extend(run_of([_update(n, size=1000)]) for n in range(100))
    live.client.wake()
    assert live.ended.wait(WAIT_S)
    assert live.client.closed_reason is StreamExit.BEHIND
    hub.unsubscribe(live.client)
    assert hub.pending.total == 0
    live.peer.settimeout(WAIT_S)
    assert live.peer.recv(100) == b"0\r\n\r\n"  # nothing of it went: a whole response


def test_the_hubs_writer_keeps_no_stream_alive_once_it_ended() -> None:
    """The writer's last pass listed the streams it wrote: that list must not outlive the
    pass, or every stream of a fan-out, and what its socket had not taken, stays after it
    ended until the next update comes."""
    hub = _hub()
    live = OnTcp(hub)
    gevent.sleep(0)
    hub.dispatch([_update(1)])
    live.read_until(b'"n":1')
    client = live.client
    live.peer.close()
    assert live.ended.wait(WAIT_S)
    hub.unsubscribe(client)
    del live
    gevent.sleep(0)
    gc.collect()
    here = sys._getframe()
    assert [type(r).__name__ for r in gc.get_referrers(client) if r is not here] == []


def test_a_quiet_end_ends_the_response_whole_and_closes_the_connection() -> None:
    clock = ManualClock()
    live = OnTcp(_hub(clock), clock=clock, chunked=True, expires_at=clock.wall() + 1.0)
    gevent.sleep(0)
    clock.advance(1.0)
    assert live.ended.wait(WAIT_S)
    assert live.client.closed_reason == StreamExit.EXPIRED
    live.peer.settimeout(WAIT_S)
    assert live.read_until(b"0\r\n\r\n") == b"0\r\n\r\n"  # the last chunk
    assert live.peer.recv(100) == b""  # then the stream closed its connection
    assert live.ends == 1


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_a_stream_ends_when_its_peer_leaves(how: str) -> None:
    hub = _hub()
    live = OnTcp(hub)
    gevent.sleep(0)
    if how == "reset":
        live.peer.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    live.peer.close()
    assert live.ended.wait(WAIT_S)
    assert live.client.closed_reason == StreamExit.GONE
    hub.dispatch([_update(1)])  # nothing to a stream that is over
    gevent.sleep(0)
    assert live.ends == 1


def test_a_failed_write_ends_the_stream_as_gone() -> None:
    hub = _hub()
    live = OnTcp(hub, small_buffers=True)
    gevent.sleep(0)
    live.client.direct_way = live.client.direct = None  # the stream's own sends, not the hub's
    live.peer.close()
    for n in range(50):  # the first sends after the close may still be buffered
        if live.client.closed:
            break
        live.client.queue.put(run_of([_update(n, size=65536)]))
        live.client.wake()
        gevent.sleep(0.01)
    assert live.ended.wait(WAIT_S)
    assert live.client.closed_reason == StreamExit.GONE and live.ends == 1


def test_ended_streams_are_freed_without_the_collector() -> None:
    """A stream that ended lets go of its subscriber's wake-up, so what it held is freed by
    reference counting at once, not by the collector's next full pass (which a serving
    process runs seldom: `pushsvc.ops.collector`)."""
    hub = _hub()

    def one_stream_that_ends() -> None:
        live = OnTcp(hub)
        gevent.sleep(0)
        live.peer.close()
        assert live.ended.wait(WAIT_S)
        hub.unsubscribe(live.client)  # what the subscription's end does (`on_end`)
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


# ------------------------------------------------------ through the WSGI server (TLS, gunicorn)


class Server:
    """What a WSGI server does with a response: iterate it, writing each block; `gate`, when
    given, holds each write until it is set (a client that reads nothing)."""

    def __init__(self, writes: ServerWrites, gate: gevent.event.Event | None = None) -> None:
        self.written: list[bytes] = []
        self.error: BaseException | None = None
        self._gate = gate
        self.greenlet = gevent.spawn(self._serve, writes)
        gevent.sleep(0)

    def _serve(self, writes: ServerWrites) -> None:
        try:
            for block in writes:
                if self._gate is not None:
                    self._gate.wait()
                self.written.append(block)
        except ConnectionResetError as exc:
            self.error = exc


def _served(
    gate: gevent.event.Event | None = None, **hub_given: int
) -> tuple[ManualClock, Hub, Live, Server]:
    clock = ManualClock()
    hub = _hub(clock, **hub_given)
    live = Live(hub, ServerWrites, clock=clock)
    assert isinstance(live.sink, ServerWrites)
    return clock, hub, live, Server(live.sink, gate)


def test_through_the_server_each_write_is_a_block_and_a_quiet_end_ends_the_response() -> None:
    clock, hub, live, server = _served()
    assert live.client.direct_way is None  # the hub never writes what the server writes
    hub.dispatch([_update(1)])
    gevent.idle()  # the server wrote it
    clock.advance(HEARTBEAT_S)
    live.client.close(StreamExit.SHUTDOWN)
    server.greenlet.join(WAIT_S)
    assert server.written == [_update(1).sse, HEARTBEAT]
    assert server.greenlet.dead and server.error is None and live.ends == 1


def test_through_the_server_a_client_gone_ends_the_response_as_a_failed_write() -> None:
    _clock, _, live, server = _served()
    live.client.close(StreamExit.GONE)
    server.greenlet.join(WAIT_S)
    assert isinstance(server.error, ConnectionResetError) and live.ends == 1


def test_through_the_server_what_it_has_not_written_is_in_flight_and_a_stuck_write_is_slow() -> (
    None
):
    gate = gevent.event.Event()
    clock, hub, live, server = _served(gate, slow_timeout_us=1_000_000)
    big = _update(1, size=10_000)
    hub.dispatch([big])
    gevent.sleep(0)
    assert live.client.queue.in_flight == len(big.sse)  # the server is writing it
    assert hub.pending.total == len(big.sse)
    clock.advance(2.0)
    assert hub.sweep() == 1
    server.greenlet.join(WAIT_S)
    # The stuck write was broken off: ECONNRESET in the server's greenlet.
    assert isinstance(server.error, ConnectionResetError)
    assert live.client.closed_reason is StreamExit.SLOW
    live.stream.close()  # what the response's end does once the server gives up on it
    assert live.ends == 1
    hub.unsubscribe(live.client)
    assert hub.pending.total == 0


def test_the_server_stopping_ends_the_stream_as_gone_once() -> None:
    _clock, _, live, server = _served()
    server.greenlet.kill()  # the server's write failed: it stops iterating the response
    live.stream.close()
    live.stream.close()
    assert live.client.closed_reason is StreamExit.GONE and live.ends == 1


# ------------------------------------------------- messages aside (presence events)

_ASIDE = b"event: presence\ndata: {}\n\n"


def test_a_message_aside_goes_before_what_waits_and_a_newer_one_replaces_it() -> None:
    _clock, live, sink = _recorded()
    live.client.queue.put(_run(1))
    live.stream.send_aside(b'event: presence\ndata: {"n":1}\n\n')
    live.stream.send_aside(_ASIDE)  # before the turn: the older one is never written
    gevent.sleep(0)
    assert sink.sent == [_ASIDE + _update(1).sse]
    live.stream.send_aside(_ASIDE)  # an idle stream: a turn of its own
    gevent.sleep(0)
    assert sink.sent[-1] == _ASIDE


def test_a_message_aside_while_the_server_writes_goes_out_once_it_is_done() -> None:
    gate = gevent.event.Event()
    _clock, hub, live, server = _served(gate)
    hub.dispatch([_update(1)])
    gevent.sleep(0)  # the server is writing it, held by the gate
    live.stream.send_aside(_ASIDE)
    gevent.sleep(0)
    assert server.written == []
    gate.set()  # the client reads: the server's write is done, nothing is queued after it
    for _ in range(10):  # turns of the loop, not time: each callback it schedules runs
        gevent.idle()
    assert server.written == [_update(1).sse, _ASIDE]
    live.client.close(StreamExit.SHUTDOWN)
    server.greenlet.join(WAIT_S)
