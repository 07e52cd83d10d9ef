"""The one stream loop alone: its named exits, heartbeats and expiry, with the clocks injected
and a scripted write strategy (nothing sleeps); then the write strategies' own steps."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import gevent.socket
import pytest

from pushsvc.core.sse import HEARTBEAT
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Run, Update, UpdateId
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.hub import Hub, StreamExit, Subscriber
from pushsvc.deliver.rendering import run_of
from pushsvc.deliver.stream_loop import loop
from pushsvc.deliver.stream_socket import StreamSocket
from pushsvc.deliver.stream_writes import OwnSocket, Paced, YieldToServer

HEARTBEAT_S = 15.0


class Clocks:
    """Monotonic and wall seconds, moved by hand (the wall runs a fixed offset ahead)."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + 1_000_000.0


Step = Callable[[float], list[Run]]
"""What one `take` does, given the wait the loop allows: move the clock, close, return runs."""


class Script:
    """A write strategy whose `take` plays `steps` in turn, recording each wait; it renders a
    run whole and writes by yielding its blocks."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.waits: list[float] = []

    def take(self, wait_s: float) -> list[Run]:
        self.waits.append(wait_s)
        return self.steps.pop(0)(wait_s)

    def render(self, runs: list[Run]) -> Sequence[bytes]:
        return [run.block for run in runs if run.block]

    def write(self, blocks: Sequence[bytes]) -> Iterator[bytes]:
        yield from blocks


def _client() -> Subscriber:
    return Hub(queue_size=10, slow_timeout_us=1_000_000).subscribe(TopicMatcher(["a"]))


def _run(n: int, received_us: int = 0) -> Run:
    run = run_of([Update.numbered("a", UpdateId("e", 0, n), n, b'{"n":%d}' % n)])
    run.received_us = received_us
    return run


def _written(
    client: Subscriber,
    script: Script,
    clocks: Clocks,
    *,
    expires_in: float | None = None,
    latency: Histogram | None = None,
) -> list[bytes]:
    expires_at = None if expires_in is None else clocks.wall() + expires_in
    return list(
        loop(
            client,
            script,
            heartbeat_s=HEARTBEAT_S,
            expires_at=expires_at,
            latency=latency or Histogram(),
            monotonic=clocks.monotonic,
            wall=clocks.wall,
        )
    )


def _sleeps(clocks: Clocks) -> Step:
    """The whole wait passes with nothing."""

    def step(wait_s: float) -> list[Run]:
        clocks.now += wait_s
        return []

    return step


def _closes(
    client: Subscriber,
    reason: StreamExit,
    *runs: Run,
    clocks: Clocks | None = None,
    after_s: float = 0.0,
) -> Step:
    """The subscriber is closed (by the hub, the peer watch) `after_s` into the stream's
    sleep; `runs` were queued before."""

    def step(wait_s: float) -> list[Run]:
        if clocks is not None:
            clocks.now += after_s
        client.close(reason)
        return list(runs)

    return step


def _returns(clocks: Clocks, after_s: float, *runs: Run) -> Step:
    def step(wait_s: float) -> list[Run]:
        clocks.now += after_s
        return list(runs)

    return step


@pytest.mark.parametrize("reason", [StreamExit.SHUTDOWN, StreamExit.RESET, StreamExit.SLOW])
def test_a_closed_subscriber_ends_the_loop_with_its_reason_and_nothing_more(
    reason: StreamExit,
) -> None:
    clocks, client = Clocks(), _client()
    # Woken to end when a heartbeat is overdue: still nothing is written.
    script = Script(_closes(client, reason, clocks=clocks, after_s=20.0))
    assert _written(client, script, clocks) == []
    assert client.closed_reason is reason and script.steps == []


def test_what_was_queued_before_an_exit_is_still_written() -> None:
    clocks, client = Clocks(), _client()
    run = _run(1)
    assert _written(client, Script(_closes(client, StreamExit.GONE, run)), clocks) == [run.block]
    assert client.closed_reason is StreamExit.GONE


def test_an_idle_stream_gets_a_heartbeat_each_heartbeat_interval() -> None:
    clocks, client = Clocks(), _client()
    script = Script(_sleeps(clocks), _sleeps(clocks), _closes(client, StreamExit.SHUTDOWN))
    assert _written(client, script, clocks) == [HEARTBEAT, HEARTBEAT]
    assert script.waits == [HEARTBEAT_S] * 3


def test_a_wake_up_with_nothing_to_write_before_the_heartbeat_is_due_writes_nothing() -> None:
    clocks, client = Clocks(), _client()
    script = Script(_returns(clocks, 5.0), _sleeps(clocks), _closes(client, StreamExit.SHUTDOWN))
    assert _written(client, script, clocks) == [HEARTBEAT]
    assert script.waits == [HEARTBEAT_S, HEARTBEAT_S - 5.0, HEARTBEAT_S]


def test_a_write_puts_the_next_heartbeat_off() -> None:
    clocks, client = Clocks(), _client()
    run = _run(1)
    script = Script(
        _returns(clocks, 10.0, run), _sleeps(clocks), _closes(client, StreamExit.SHUTDOWN)
    )
    assert _written(client, script, clocks) == [run.block, HEARTBEAT]
    assert script.waits == [HEARTBEAT_S, HEARTBEAT_S, HEARTBEAT_S]


def test_a_run_a_filter_leaves_nothing_of_is_as_if_none_came() -> None:
    clocks, client = Clocks(), _client()
    empty = Run([], b"", received_us=1)  # what a group filter leaves of a run
    latency = Histogram()
    script = Script(_returns(clocks, 5.0, empty), _closes(client, StreamExit.SHUTDOWN))
    assert _written(client, script, clocks, latency=latency) == []
    assert sum(latency.counts) == 0


def test_each_write_observes_the_latency_of_its_oldest_run() -> None:
    clocks, client = Clocks(), _client()
    latency = Histogram()
    taken_at_us = int((clocks.now + 0.002) * 1_000_000)
    older, newer = _run(1, taken_at_us - 3_000), _run(2, taken_at_us - 1_000)
    script = Script(_returns(clocks, 0.002, older, newer), _closes(client, StreamExit.SHUTDOWN))
    assert _written(client, script, clocks, latency=latency) == [older.block, newer.block]
    assert sum(latency.counts) == 1 and latency.sum_us == pytest.approx(3_000, abs=1)


def test_the_token_expiring_ends_the_stream_as_expired() -> None:
    clocks, client = Clocks(), _client()
    script = Script(_sleeps(clocks), _sleeps(clocks))
    # The wait is bounded by the token's exp: a heartbeat at 15 s, the end at 20 s.
    assert _written(client, script, clocks, expires_in=20.0) == [HEARTBEAT]
    assert script.waits == [HEARTBEAT_S, 5.0]
    assert client.closed_reason is StreamExit.EXPIRED


def test_a_token_expired_before_the_loop_ends_it_without_a_take() -> None:
    clocks, client = Clocks(), _client()
    script = Script()
    assert _written(client, script, clocks, expires_in=0.0) == []
    assert script.waits == [] and client.closed_reason is StreamExit.EXPIRED


# ------------------------------------------------------------------- the write strategies


@pytest.fixture
def socket_pair() -> Iterator[tuple[gevent.socket.socket, gevent.socket.socket]]:
    ours, peer = gevent.socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def _read(peer: gevent.socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += peer.recv(size - len(data))
    return data


def test_the_hubs_writes_on_the_direct_way_put_the_heartbeat_off(
    socket_pair: tuple[gevent.socket.socket, gevent.socket.socket],
) -> None:
    clocks, client = Clocks(), _client()
    own = OwnSocket(client, StreamSocket(socket_pair[0], chunked=False), None)
    assert client.direct_way is not None

    def hub_writes(wait_s: float) -> list[Run]:
        clocks.now += 10.0
        assert client.direct_way is not None
        client.direct_way.last_write_us = int(clocks.now * 1_000_000)
        return []

    script = Script(hub_writes, _closes(client, StreamExit.SHUTDOWN))
    script.render = own.render  # type: ignore[method-assign]
    _written(client, script, clocks)
    assert script.waits == [HEARTBEAT_S, HEARTBEAT_S]


def test_own_socket_writes_the_handed_back_rest_then_the_ready_runs_then_the_queued(
    socket_pair: tuple[gevent.socket.socket, gevent.socket.socket],
) -> None:
    ours, peer = socket_pair
    client = _client()
    own = OwnSocket(client, StreamSocket(ours, chunked=True), None)
    direct_way = client.direct_way
    assert direct_way is not None
    ready, queued = _run(1), _run(2)
    direct_way.ready.append(ready)
    direct_way.handback = memoryview(b"the rest\r\n")
    client.queue.put(queued)
    runs = own.take(0)
    assert runs == [ready, queued] and direct_way.ready == [] and direct_way.handback is None
    blocks = own.render(runs)
    assert list(own.write(blocks)) == []
    body = ready.block + queued.block
    expected = b"the rest\r\n" + b"%x\r\n" % len(body) + body + b"\r\n"
    assert _read(peer, len(expected)) == expected


def test_own_socket_counts_a_handed_back_rest_alone_as_a_write_and_adds_no_chunk(
    socket_pair: tuple[gevent.socket.socket, gevent.socket.socket],
) -> None:
    ours, peer = socket_pair
    client = _client()
    own = OwnSocket(client, StreamSocket(ours, chunked=True), None)
    assert client.direct_way is not None
    client.direct_way.handback = memoryview(b"end of a chunk\r\n")
    blocks = own.render(own.take(0))
    assert blocks  # a write: no heartbeat in its place
    list(own.write(blocks))
    ours.close()
    assert peer.recv(100) == b"end of a chunk\r\n" and peer.recv(100) == b""


def test_own_socket_turns_a_failed_write_into_a_reset_connection(
    socket_pair: tuple[gevent.socket.socket, gevent.socket.socket],
) -> None:
    ours, peer = socket_pair
    client = _client()
    own = OwnSocket(client, StreamSocket(ours, chunked=False), None)
    peer.close()
    with pytest.raises(ConnectionResetError):
        for _ in range(50):  # the first send after the close may still be buffered
            list(own.write([b"x" * 65536]))


def test_yield_to_server_steps_are_the_subscriber_rendering_and_coalesce_themselves() -> None:
    client = _client()
    way = YieldToServer(client, None)
    client.queue.put(_run(1))
    runs = way.take(0)
    assert [run.updates[0].id.seq for run in runs] == [1]
    assert list(way.write(way.render(runs))) == [runs[0].block]


class _Taker:
    """Stands in for a subscriber: records the waits `take` is given."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def take(self, wait_s: float) -> list[Run]:
        self.waits.append(wait_s)
        return []


def _numbered(topic: str, n: int) -> Update:
    return Update.numbered(topic, UpdateId("e", 0, n), n, b'{"n":%d}' % n)


def test_paced_sends_an_update_held_behind_a_newer_one_without_its_id() -> None:
    clocks, taker = Clocks(), _Taker()
    paced = Paced(taker, None, 1.0, monotonic=clocks.monotonic)  # type: ignore[arg-type]
    a1, a2, b3 = _numbered("a", 1), _numbered("a", 2), _numbered("b", 3)
    assert paced.render([run_of([a1])]) == [a1.sse]
    clocks.now += 0.25
    assert paced.render([run_of([a2])]) == []  # held back: its topic went 0.25 s ago
    # The held-back update falls due before the heartbeat: the wait ends then.
    assert paced.take(15.0) == [] and taker.waits == [0.75]
    clocks.now += 0.25
    assert paced.render([run_of([b3])]) == [b3.sse]
    clocks.now += 0.5
    # a2 goes now, after b3 went: without `id:`, so Last-Event-ID never moves backwards.
    assert paced.render([]) == [b"event: stats\ndata: " + a2.data + b"\n\n"]
    paced.take(15.0)
    assert taker.waits[-1] == 15.0  # nothing held back: the loop's wait as it is
