"""The hub alone: fan-out, bounded queues, conflation and slow-client eviction (clock injected)."""

from __future__ import annotations

import errno
import itertools
import socket
from collections.abc import Iterator

import gevent
import gevent.event
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import encode_update
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Run, Update, UpdateId
from pushsvc.deliver.hub import DirectWay, Hub, StreamExit, Subscriber
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import (
    CursorRendering,
    rendering_for_stream,
    run_of,
)
from pushsvc.deliver.stream_socket import EARNED_AFTER, EARNED_SEND_BUFFER, StreamSocket


class FakeClock:
    """A monotonic clock the test moves by hand (µs)."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def _update(topic: str, n: int, epoch: str = "0badc0de") -> Update:
    return Update.numbered(topic, UpdateId(epoch, 0, n), n, b'{"n":%d}' % n)


def _drained(client: Subscriber) -> list[Run]:
    """What the client's stream takes at its next turn (`LiveStream`): everything queued,
    and the take noted (the slow-client timeout counts from it)."""
    runs = client.queue.drain()
    client.progressed()
    return runs


def _taken(client: Subscriber) -> list[Update]:
    """What the client's stream would write, update by update."""
    return [u for run in _drained(client) for u in run.updates]


def _subscribe(hub: Hub, *selectors: str) -> Subscriber:
    return hub.subscribe(TopicMatcher(selectors))


def test_update_is_encoded_once_and_shared_by_all_clients() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    first, second, patterned = (
        _subscribe(hub, "a"),
        _subscribe(hub, "a"),
        _subscribe(hub, "*"),
    )
    hub.dispatch([_update("a", 1)])
    frames = [_taken(c)[0].sse for c in (first, second, patterned)]
    assert frames[0] == b'id: 0badc0de:0-1\nevent: stats\ndata: {"id":"0badc0de:0-1","n":1}\n\n'
    assert frames[0] is frames[1] is frames[2]


def test_only_matching_topics_are_delivered() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    exact, pattern = _subscribe(hub, "a", "b"), _subscribe(hub, "sensors.*")
    hub.dispatch([_update(t, n) for n, t in enumerate(["a", "c", "sensors.x", "b", "sensorsx"])])
    assert [u.topic for u in _taken(exact)] == ["a", "b"]
    assert [u.topic for u in _taken(pattern)] == ["sensors.x"]
    assert hub.subscriber_counts(["a", "b", "c", "sensors.x"]) == {
        "a": 1,
        "b": 1,
        "c": 0,
        "sensors.x": 1,
    }


def test_full_queue_switches_to_latest_wins_per_topic_in_id_order() -> None:
    hub = Hub(queue_size=2, slow_timeout_us=10_000_000)
    slow, fast = _subscribe(hub, "a", "b"), _subscribe(hub, "a", "b")
    updates = [_update(t, n) for n, t in enumerate(["a", "b", "a", "b", "a", "a"], start=1)]
    for update in updates:
        hub.dispatch([update])
        _taken(fast)  # the fast client keeps up and gets everything
    got = [str(u.id) for u in _taken(slow)]
    # The first two fit the queue; then only each topic's latest survives, in id order.
    assert got == ["0badc0de:0-1", "0badc0de:0-2", "0badc0de:0-4", "0badc0de:0-6"]
    assert slow.closed_reason is None


def test_client_that_takes_nothing_for_the_timeout_is_disconnected() -> None:
    clock = FakeClock()
    hub = Hub(queue_size=1, slow_timeout_us=5_000_000, clock=clock)
    slow, healthy = _subscribe(hub, "a"), _subscribe(hub, "a")
    for n in range(1, 4):
        hub.dispatch([_update("a", n)])
        _taken(healthy)
    clock.now += 4_000_000
    hub.dispatch([_update("a", 4)])
    assert not slow.closed  # behind, but within the timeout
    clock.now += 2_000_000
    _taken(healthy)
    hub.dispatch([_update("a", 5)])
    assert slow.closed_reason is StreamExit.SLOW
    assert hub.slow_disconnects == 1
    assert healthy.closed_reason is None
    assert [str(u.id) for u in _taken(healthy)] == ["0badc0de:0-5"]


def test_unsubscribe_forgets_the_client() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    client, other = _subscribe(hub, "a"), _subscribe(hub, "a.*")
    hub.unsubscribe(client)
    hub.unsubscribe(other)
    hub.dispatch([_update("a", 1), _update("a.b", 2)])
    assert _taken(client) == [] and _taken(other) == []
    assert hub.client_count == 0 and hub.subscriber_counts(["a", "a.b"]) == {"a": 0, "a.b": 0}


def test_pattern_streams_that_match_alike_are_matched_once_per_topic_and_each_delivered() -> None:
    """Many streams of one pattern (every Mercure stream's `mercure.*`) are matched once per
    run, not once per stream; a stream narrowed by another scope is matched on its own; each
    stream gets what its own matcher selects, and one that leaves is forgotten while the
    others of its pattern go on receiving."""
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    asked: list[str] = []

    def only_x(topic: str) -> bool:
        asked.append(topic)
        return topic.endswith(".x")

    plain = [_subscribe(hub, "m.*") for _ in range(50)]
    narrowed = [hub.subscribe(TopicMatcher(["m.*"]).within(only_x)) for _ in range(50)]
    other_scope = hub.subscribe(TopicMatcher(["m.*"]).within(lambda topic: True))
    hub.dispatch([_update("m.x", 1), _update("m.y", 2), _update("n.x", 3)])
    assert asked == ["m.x", "m.y"]  # once per run for the 50 streams narrowed by `only_x`
    for client in [*plain, other_scope]:
        assert [u.topic for u in _taken(client)] == ["m.x", "m.y"]
    for client in narrowed:
        assert [u.topic for u in _taken(client)] == ["m.x"]
    assert hub.subscriber_counts(["m.x", "m.y", "n.x"]) == {"m.x": 101, "m.y": 51, "n.x": 0}
    left, *staying = plain
    hub.unsubscribe(left)
    for client in narrowed:
        hub.unsubscribe(client)
    hub.dispatch([_update("m.x", 4)])
    assert _taken(left) == [] and all(_taken(c) == [] for c in narrowed)
    assert all(
        [u.id for u in _taken(c)] == [UpdateId("0badc0de", 0, 4)] for c in [*staying, other_scope]
    )
    assert hub.subscriber_counts(["m.x"]) == {"m.x": 50} and hub.client_count == 50


def test_the_gauges_count_each_stream_once_whatever_it_watches() -> None:
    """`pushsvc_subscribers` and `pushsvc_queued_runs`: a stream of several topics, or of a
    pattern, is one stream, and its queued runs count once."""
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    both = _subscribe(hub, "a", "b")
    pattern, single = _subscribe(hub, "*"), _subscribe(hub, "a")
    assert hub.client_count == 3
    hub.dispatch([_update("a", 1), _update("b", 2)])
    # Queued (no direct way): each stream holds what it watches.
    assert hub.queued_runs == len(both.queue) + len(pattern.queue) + len(single.queue)
    assert (len(both.queue), len(single.queue)) == (2, 1)
    single.queue.drain()  # its stream wrote what it held
    assert hub.queued_runs == len(both.queue) + len(pattern.queue)
    hub.dispatch([_update("a", 3)])
    hub.unsubscribe(both)
    assert hub.client_count == 2 and hub.queued_runs == len(pattern.queue) + 1
    hub.close()
    assert pattern.closed_reason is single.closed_reason is StreamExit.SHUTDOWN
    hub.unsubscribe(pattern)
    hub.unsubscribe(single)
    assert hub.client_count == 0 and hub.queued_runs == 0


def test_close_wakes_every_stream() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    clients = [_subscribe(hub, "a"), _subscribe(hub, "*")]
    streams = [_Asleep(c) for c in clients]
    hub.close()
    assert [c.closed_reason for c in clients] == [StreamExit.SHUTDOWN, StreamExit.SHUTDOWN]
    assert all(stream.woken.is_set() for stream in streams)


def test_a_batch_is_one_queue_entry_however_long() -> None:
    # Regression (e2e benchmark): a 5000-event batch conflated every subscriber when the
    # queue was counted in updates.
    hub = Hub(queue_size=3, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a")
    hub.dispatch([_update("a", n) for n in range(1, 5001)])
    runs = _drained(client)
    assert len(runs) == 1
    assert [u.id.seq for u in runs[0].updates] == list(range(1, 5001))
    assert runs[0].block == b"".join(u.sse for u in runs[0].updates)


def test_runs_beyond_the_queue_are_conflated_to_each_topics_latest() -> None:
    hub = Hub(queue_size=2, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a", "b")
    hub.dispatch([_update("a", 1), _update("a", 2)])
    hub.dispatch([_update("b", 3)])
    hub.dispatch([_update("a", 4), _update("a", 5), _update("b", 6), _update("a", 7)])
    got = [u.id.seq for u in _taken(client)]
    # Two runs fit; then only the latest of each topic: 4 and 5 are superseded by 7.
    assert got == [1, 2, 3, 6, 7]


def test_conflated_topics_come_out_in_the_order_of_their_latest_update() -> None:
    hub = Hub(queue_size=1, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a", "b")
    for n, topic in enumerate(["a", "a", "b", "a"], start=1):
        hub.dispatch([_update(topic, n)])
    # 1 is queued; then a=2, b=3, a=4 conflate: a's latest (4) now comes after b's (3).
    assert [u.id.seq for u in _taken(client)] == [1, 3, 4]


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        (0, [1, 2, 3, 4, 5]),  # nothing covered
        (2, [3, 4, 5]),  # the first run was covered whole
        (3, [4, 5]),  # the floor falls inside a run: its covered part is dropped
        (5, []),  # everything covered
        (9, []),  # a floor past what was queued covers it all
    ],
)
def test_take_drops_what_the_replay_or_snapshot_covered(floor: int, expected: list[int]) -> None:
    hub = Hub(queue_size=10, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a", "b")
    client.queue.floor = Cursor([UpdateId("0badc0de", 0, floor)])
    hub.dispatch([_update("a", 1), _update("a", 2)])
    hub.dispatch([_update("b", 3), _update("b", 4)])
    hub.dispatch([_update("a", 5)])
    assert [u.id.seq for u in _taken(client)] == expected
    hub.dispatch([_update("a", 10)])
    assert [u.id.seq for u in _taken(client)] == [10]


def test_the_floor_is_forgotten_once_passed() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a")
    client.queue.floor = Cursor([UpdateId("0badc0de", 0, 1)])
    hub.dispatch([_update("a", 2)])
    assert [u.id.seq for u in _taken(client)] == [2]
    assert client.queue.floor is None


def test_an_update_of_a_new_epoch_is_never_dropped_by_an_old_floor() -> None:
    # Redis restarted empty: its new history's ids are new whatever their numbers.
    hub = Hub(queue_size=10, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a")
    client.queue.floor = Cursor([UpdateId("0badc0de", 0, 50)])
    hub.dispatch([_update("a", 1, epoch="feed")])
    assert [str(u.id) for u in _taken(client)] == ["feed:0-1"]


def test_close_raises_in_a_writer_stuck_in_a_write() -> None:
    # A stream's greenlet blocked writing to a peer that stopped reading only leaves that
    # write through an exception; the WSGI server treats ECONNRESET as a vanished client.
    hub = Hub(queue_size=10, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a")
    writing = gevent.event.Event()

    def stream() -> None:
        client.writing()
        writing.set()
        gevent.sleep(60)  # stands for a socket write that never completes

    writer = gevent.spawn(stream)
    writing.wait(5)
    client.close(StreamExit.SLOW)
    writer.join(5)
    assert writer.dead
    assert isinstance(writer.exception, ConnectionResetError)
    assert writer.exception.errno == errno.ECONNRESET


def test_close_only_wakes_a_writer_that_is_done_writing() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=10_000_000)
    client = _subscribe(hub, "a")
    woken = gevent.event.Event()
    client.wakeup = woken

    def stream() -> bool:
        client.writing()
        client.writing(False)  # done: waits for its next wake-up, not in a write
        return woken.wait(60)

    waiter = gevent.spawn(stream)
    gevent.sleep(0)  # let it start waiting
    client.close(StreamExit.SHUTDOWN)
    assert waiter.get(timeout=5) is True


# ------------------------------------------------------------------ the direct way


_SOCKETS: list[gevent.socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _SOCKETS:
        _SOCKETS.pop().close()


def _direct_client(
    hub: Hub,
    *selectors: str,
    chunked: bool = False,
    projection: Projection | None = None,
    cursor: Cursor | None = None,
) -> tuple[Subscriber, DirectWay, gevent.socket.socket]:
    """A client whose socket the hub may write, and its direct way; returns the peer end, to
    read what the hub wrote (unframed unless `chunked`). With `cursor`, a stream over several
    partitions, at that cursor."""
    from gevent import socket as gsocket

    ours, peer = gsocket.socketpair()
    _SOCKETS.extend((ours, peer))
    client = _subscribe(hub, *selectors)
    rendering = rendering_for_stream(projection, chunked=chunked, cursor=cursor)
    direct_way = client.direct_way = DirectWay(StreamSocket(ours, chunked=chunked), rendering)
    return client, direct_way, peer


class _Asleep:
    """A client's stream asleep with nothing queued, as `LiveStream` leaves one: its direct
    way open; woken by the hub (`Subscriber.wake`) when the hub hands a write back or queues."""

    def __init__(self, client: Subscriber) -> None:
        self.woken = gevent.event.Event()
        client.wakeup = self.woken
        client.direct = client.direct_way


def _read(peer: gevent.socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += peer.recv(size - len(data))
    return data


def test_an_idle_stream_is_written_by_the_hub_without_waking_it() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    client, direct_way, peer = _direct_client(hub, "a")
    stream = _Asleep(client)
    assert client.direct is direct_way  # open while it sleeps
    updates = [_update("a", 1), _update("a", 2)]
    hub.dispatch(updates)
    expected = b"".join(u.sse for u in updates)
    assert _read(peer, len(expected)) == expected
    assert not stream.woken.is_set()  # the stream was never woken: nothing to take
    assert hub.direct_sends == 1 and direct_way.ready == [] and not client.queue


def test_many_dispatches_before_the_writer_runs_go_in_one_send() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    client, _, peer = _direct_client(hub, "a")
    _Asleep(client)
    updates = [_update("a", n) for n in range(5)]
    for update in updates:  # five POSTs handled before the loop turns
        hub.dispatch([update])
    expected = b"".join(u.sse for u in updates)
    assert _read(peer, len(expected)) == expected
    assert hub.direct_sends == 1


def test_every_idle_stream_gets_the_same_chunk_and_one_latency_observation_per_send() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    clients = [_direct_client(hub, "a", chunked=True) for _ in range(3)]
    streams = [_Asleep(client) for client, _, _ in clients]
    update = _update("a", 1)
    hub.dispatch([update])
    chunk = b"%x\r\n" % len(update.sse) + update.sse + b"\r\n"
    for _, _, peer in clients:
        assert _read(peer, len(chunk)) == chunk
    assert hub.direct_sends == 3 and hub.delivered == 3
    assert hub.delivery_latency.counts[-1] + sum(hub.delivery_latency.counts[:-1]) == 3
    assert not any(stream.woken.is_set() for stream in streams)


def _with_windows(n: int) -> Update:
    body = b'{"topic":"a","windows":{"1m":{"count":%d,"mean":%d.123456}}}' % (n, n)
    return Update.numbered("a", UpdateId("0badc0de", 0, n), n, body)


def _projected(update: Update, projection: Projection) -> bytes:
    return encode_update(update.id.text, projection.data(update))


def test_a_projected_stream_is_written_its_own_rendering_of_every_run() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    projection = Projection(None, ("mean",), precision=2)
    client, _, peer = _direct_client(hub, "a", projection=projection)
    _Asleep(client)
    first, second = _with_windows(1), _with_windows(2)
    hub.dispatch([first])
    hub.dispatch([second])  # before the writer runs: two runs in one send
    expected = _projected(first, projection) + _projected(second, projection)
    assert b'"windows":{"1m":{"mean":1.1}}' in expected
    assert _read(peer, len(expected)) == expected
    assert hub.direct_sends == 1


def test_streams_that_render_alike_are_sent_the_same_bytes_and_others_their_own() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    projection = Projection(None, ("mean",), precision=2)
    clients = [
        _direct_client(hub, "a", chunked=True, projection=projection),
        _direct_client(hub, "a", chunked=True),
        _direct_client(hub, "a", chunked=True, projection=Projection(None, ("mean",), 2)),
        _direct_client(hub, "a", chunked=False, projection=projection),
    ]
    for client, _, _ in clients:
        _Asleep(client)
    update = _with_windows(1)
    hub.dispatch([update])
    projected = _projected(update, projection)
    chunk = b"%x\r\n%b\r\n"
    expected = [
        chunk % (len(projected), projected),
        chunk % (len(update.sse), update.sse),
        chunk % (len(projected), projected),
        projected,
    ]
    written = [_read(peer, len(data)) for (_, _, peer), data in zip(clients, expected, strict=True)]
    assert written == expected
    assert hub.direct_sends == 4


def test_a_full_socket_hands_the_rest_back_to_the_stream_in_order() -> None:
    hub = Hub(queue_size=1000, slow_timeout_us=10_000_000)
    client, direct_way, peer = _direct_client(hub, "a")
    stream = _Asleep(client)
    big = [Update.numbered("a", UpdateId("e", 0, n), n, b"x" * 60_000) for n in range(200)]
    for update in big:  # ~12 MB: far more than a socket buffer holds
        hub.dispatch([update])
    gevent.sleep(0)  # the writer runs and finds the socket full
    assert hub.handbacks == 1
    assert stream.woken.wait(1)  # the stream was woken to finish the write itself
    handback, ready = direct_way.leftovers()
    assert handback is not None
    later = [_update("a", 1000)]
    hub.dispatch(later)  # while the stream writes, new runs queue behind what it holds
    assert [u.id.seq for u in _taken(client)] == [1000]
    received = bytearray()
    reader = gevent.spawn(lambda: received.extend(_read(peer, sum(len(u.sse) for u in big))))
    _send_all(direct_way.sink, bytes(handback) + b"".join(run.block for run in ready))
    reader.join(10)
    assert bytes(received) == b"".join(u.sse for u in big)


def _send_all(sink: StreamSocket, data: bytes) -> None:
    """What a live stream does with bytes its socket cannot take at once: send, then flush."""
    sent = gevent.event.Event()
    if sink.send(data):
        sink.flush(lambda left: None if left else sent.set(), sent.set)
        assert sent.wait(10)


def test_a_stream_sent_the_shared_bytes_gets_the_rest_of_a_send_its_socket_cut_short() -> None:
    # The first stream of a slice renders the run; the next, rendering alike, is sent the same
    # bytes on the writer's shortest path, which must hand a partial send back just the same.
    hub = Hub(queue_size=1000, slow_timeout_us=10_000_000)
    clients = [_direct_client(hub, "a", chunked=True) for _ in range(2)]
    streams = [_Asleep(client) for client, _, _ in clients]
    big = Update.numbered("a", UpdateId("e", 0, 1), 1, b"x" * 4_000_000)  # > a socket buffer
    hub.dispatch([big])
    gevent.sleep(0)
    assert hub.handbacks == 2 and all(stream.woken.wait(1) for stream in streams)
    chunk = b"%x\r\n%b\r\n" % (len(big.sse), big.sse)
    for _, direct_way, peer in clients:
        handback, ready = direct_way.leftovers()
        assert handback is not None and ready == []
        received = bytearray()
        reader = gevent.spawn(lambda p=peer, r=received: r.extend(_read(p, len(chunk))))
        _send_all(direct_way.sink, bytes(handback))
        reader.join(10)
        assert bytes(received) == chunk


def test_a_stream_sent_the_shared_bytes_whose_peer_is_gone_is_closed_and_the_rest_written() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    clients = [_direct_client(hub, "a") for _ in range(3)]
    streams = [_Asleep(client) for client, _, _ in clients]
    clients[1][2].close()  # the second stream's client leaves
    updates = [_update("a", 1), _update("a", 2)]
    for update in updates:
        hub.dispatch([update])
        gevent.sleep(0)
    assert clients[1][0].closed_reason is StreamExit.GONE and streams[1].woken.wait(1)
    expected = b"".join(u.sse for u in updates)
    for index in (0, 2):
        assert _read(clients[index][2], len(expected)) == expected
        assert clients[index][0].closed_reason is None


def test_streams_the_hub_writes_earn_the_larger_send_buffer_as_their_clients_read() -> None:
    hub = Hub(queue_size=1000, slow_timeout_us=10_000_000)
    clients = [_direct_client(hub, "a") for _ in range(3)]
    for client, _, _ in clients:
        _Asleep(client)
    taken = 0
    for n in range(EARNED_AFTER // 50_000 + 2):  # a little more than it takes to earn it
        update = Update.numbered("a", UpdateId("e", 0, n), n, b"x" * 50_000)
        hub.dispatch([update])
        gevent.sleep(0)
        for _, _, peer in clients:  # every client reads it all
            _read(peer, len(update.sse))
        taken += len(update.sse)
    assert taken > EARNED_AFTER and hub.handbacks == 0
    for _, direct_way, _ in clients:  # the first rendered the run, the others shared it
        sink = direct_way.sink
        assert sink.to_earn == 0
        assert sink.raw.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 2 * EARNED_SEND_BUFFER


def test_a_peer_gone_closes_the_client() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    client, _, peer = _direct_client(hub, "a")
    stream = _Asleep(client)
    peer.close()
    hub.dispatch([_update("a", 1)])
    gevent.sleep(0)
    hub.dispatch([_update("a", 2)])  # the first send may still succeed into the buffer
    gevent.sleep(0)
    assert client.closed_reason is StreamExit.GONE
    assert stream.woken.wait(1)


def test_a_client_whose_direct_way_is_closed_is_queued_and_woken() -> None:
    # A stream with a floor or a queue keeps its direct way closed (`LiveStream`, tested
    # there): the hub then queues.
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    client, _, _peer = _direct_client(hub, "a")
    stream = _Asleep(client)
    client.direct = None
    hub.dispatch([_update("a", 3)])
    assert stream.woken.wait(1)
    assert hub.direct_sends == 0 and [u.id.seq for u in _taken(client)] == [3]


def test_the_disconnect_reasons_are_the_metric_labels_operators_know() -> None:
    # `pushsvc_stream_disconnects_total{reason}`: dashboards and alerts name these values, so
    # renaming one breaks them; everything else names the members.
    assert [reason.value for reason in StreamExit] == [
        "gone",
        "slow",
        "expired",
        "reset",
        "shutdown",
        "error",
        "behind",
    ]


@st.composite
def _partitioned_arrivals(
    draw: st.DrawFn,
) -> tuple[dict[int, UpdateId], list[list[Update]], list[bool]]:
    """A floor (partition → its id), the updates of several partitions as the hub gets them
    (each partition's in its own order, interleaved, in dispatches), and after which dispatch
    the stream takes. A partition's history may be reset midway (a new epoch)."""
    count = draw(st.integers(1, 4))
    histories: dict[int, list[UpdateId]] = {}
    floor: dict[int, UpdateId] = {}
    for p in range(count):
        prefix = format(p, "x") if p else ""
        first, second = prefix + "aaaaaaaa", prefix + "bbbbbbbb"
        n = draw(st.integers(0, 6))
        ids = [UpdateId(first, 0, seq) for seq in range(1, n + 1)]
        if draw(st.booleans()):
            ids += [UpdateId(second, 0, seq) for seq in range(1, draw(st.integers(1, 4)) + 1)]
        histories[p] = ids
        if draw(st.booleans()):
            floor[p] = UpdateId(first, 0, draw(st.integers(0, n + 1)))
    topics = {p: [f"t{p}.{k}" for k in range(draw(st.integers(1, 2)))] for p in histories}
    arrivals: list[Update] = []
    next_of = dict.fromkeys(histories, 0)
    while waiting := [p for p in histories if next_of[p] < len(histories[p])]:
        p = draw(st.sampled_from(waiting))
        update_id = histories[p][next_of[p]]
        next_of[p] += 1
        topic = draw(st.sampled_from(topics[p]))
        arrivals.append(Update.numbered(topic, update_id, 0, b'{"n":%d}' % update_id.seq))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(arrivals) - 1, 1)), max_size=5)))
    batches = [arrivals[a:b] for a, b in itertools.pairwise([0, *cuts, len(arrivals)])]
    takes = [draw(st.booleans()) for _ in batches]
    return floor, [b for b in batches if b], takes


def _floor_admits(floor: dict[int, UpdateId], update_id: UpdateId) -> bool:
    """The model: a stream lacks an update when its floor has nothing of the update's
    partition, or the update is of another epoch there, or comes after the floor's id."""
    mine = floor.get(update_id.partition)
    if mine is None or mine.epoch != update_id.epoch:
        return True
    return update_id.seq > mine.seq


@given(_partitioned_arrivals(), st.sampled_from([("*",), ("t0.*", "t1.*", "t2.*", "t3.*")]))
def test_the_floor_drops_per_partition_exactly_what_the_stream_has(
    arrivals: tuple[dict[int, UpdateId], list[list[Update]], list[bool]],
    selectors: tuple[str, ...],
) -> None:
    floor, batches, takes = arrivals
    hub = Hub(queue_size=1000, slow_timeout_us=10_000_000)
    client = _subscribe(hub, *selectors)
    client.queue.floor = Cursor(floor.values()) or None
    written: list[Update] = []
    for batch, take in zip(batches, takes, strict=False):
        hub.dispatch(batch)
        if take:
            written += _taken(client)
    written += _taken(client)
    expected = [u for batch in batches for u in batch if _floor_admits(floor, u.id)]
    assert [u.id.text for u in written] == [u.id.text for u in expected]  # none lost, none twice
    if any(batches):
        assert client.queue.floor is None or set(client.queue.floor) <= set(floor)


def test_streams_over_several_partitions_get_their_own_ids_and_the_shared_messages() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1_000_000)
    b7 = UpdateId("1bbbbbbbb", 0, 7)
    plain, _, plain_peer = _direct_client(hub, "*", chunked=True)
    first, first_way, first_peer = _direct_client(hub, "*", chunked=True, cursor=Cursor([b7]))
    second, _, second_peer = _direct_client(hub, "*", chunked=False, cursor=Cursor())
    for client in (plain, first, second):
        _Asleep(client)
    a1, a2 = _update("a", 1, epoch="aaaaaaaa"), _update("a", 2, epoch="aaaaaaaa")
    (b8,) = [_update("b", 8, epoch="1bbbbbbbb")]
    hub.dispatch([a1, a2])
    hub.dispatch([b8])

    def messages(*pairs: tuple[str, Update]) -> bytes:
        return b"".join(b"id: %b\n%b" % (i.encode(), u.unnumbered) for i, u in pairs)

    for_first = messages((f"{a1.id},{b7}", a1), (f"{a2.id},{b7}", a2), (f"{a2.id},{b8.id}", b8))
    for_second = messages((a1.id.text, a1), (a2.id.text, a2), (f"{a2.id},{b8.id}", b8))
    plain_bytes = a1.sse + a2.sse + b8.sse
    chunk = b"%x\r\n%b\r\n"
    expected_first = chunk % (len(for_first), for_first)
    expected_plain = chunk % (len(plain_bytes), plain_bytes)
    assert _read(first_peer, len(expected_first)) == expected_first
    assert _read(second_peer, len(for_second)) == for_second
    assert _read(plain_peer, len(expected_plain)) == expected_plain
    rendering = first_way.rendering
    assert isinstance(rendering, CursorRendering)
    assert rendering.cursor == Cursor([a2.id, b8.id])  # where its client is


def test_a_cursor_streams_parts_are_the_shared_message_objects() -> None:
    # Encode once, write many: only the `id:` lines are a stream's own.
    update = _update("a", 1, epoch="aaaaaaaa")
    run = run_of([update])
    ones = [rendering_for_stream(None, chunked=False, cursor=Cursor()) for _ in range(3)]
    parts = [r.blocks([run]) for r in ones]
    assert all(p[1] is update.unnumbered for p in parts)
    projection = Projection(None, ("mean",), precision=2)
    windowed = run_of([_with_windows(1)])
    projected = [
        rendering_for_stream(projection, chunked=False, cursor=Cursor()).blocks([windowed])
        for _ in range(2)
    ]
    assert projected[0][1] is projected[1][1]
