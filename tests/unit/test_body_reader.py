"""A request body's reader (`pushsvc.http.body_deadline.BodyReader`) over a real gevent socket
pair: a piece already at hand is read without a wait, and so without counting the connection
as waiting; anything else is read under both deadlines as before. And the send that never
waits (`pushsvc.gevent_private.send_now`)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import gevent
import pytest
from gevent import socket as gsocket

from pushsvc.gevent_private import read_now, send_now
from pushsvc.http.body_deadline import SPREAD, BodyReader, BodyTooSlow

BODY = b'{"value": 1.5}'


@pytest.fixture
def pair() -> Iterator[tuple[gsocket.socket, gsocket.socket]]:
    ours, peer = gsocket.socketpair()
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()


def _reader(
    sock: gsocket.socket,
    waits: list[bool],
    *,
    timeout_s: float = 30.0,
    read_timeout_s: float = 10.0,
) -> BodyReader:
    reader = BodyReader(
        sock.makefile("rb"),
        timeout_s=timeout_s,
        read_timeout_s=read_timeout_s,
        to_close=lambda: None,
        on_waiting=waits.append,
    )
    reader.read_first_with(partial(read_now, sock))
    return reader


def test_a_body_at_hand_is_read_without_waiting(pair: tuple[gsocket.socket, ...]) -> None:
    ours, peer = pair
    peer.sendall(BODY)
    waits: list[bool] = []
    assert _reader(ours, waits).read(len(BODY)) == BODY
    assert waits == []  # never counted as waiting on its client


def test_the_rest_of_a_body_is_waited_for_under_the_deadline(
    pair: tuple[gsocket.socket, ...],
) -> None:
    ours, peer = pair
    peer.sendall(BODY[:5])
    gevent.spawn_later(0.05, peer.sendall, BODY[5:])
    waits: list[bool] = []
    assert _reader(ours, waits).read(len(BODY)) == BODY
    assert waits == [True, False]


def test_a_body_that_never_comes_still_times_out(pair: tuple[gsocket.socket, ...]) -> None:
    ours, _ = pair
    waits: list[bool] = []
    reader = _reader(ours, waits, read_timeout_s=0.05)
    with pytest.raises(BodyTooSlow):
        reader.read(len(BODY))
    assert waits == [True, False]


def test_bodies_waited_on_together_time_out_spread_over_a_quarter_more(
    pair: tuple[gsocket.socket, ...],
) -> None:
    """An attack's wave of bodies, all waiting from the same moment, gets read timeouts spread
    over the setting and a quarter more, so that it does not time out in one turn of the
    loop; none shorter than the setting."""
    ours, _ = pair
    waits = [_reader(ours, [], read_timeout_s=10.0).read_timeout_s for _ in range(200)]
    assert min(waits) >= 10.0 and max(waits) <= 10.0 * (1 + SPREAD)
    # 200 draws within a third of the spread would be a spread of nothing (p < 1e-35).
    assert max(waits) - min(waits) > 10.0 * SPREAD / 3, (min(waits), max(waits))


def test_a_body_past_its_deadline_is_refused_even_when_at_hand(
    pair: tuple[gsocket.socket, ...],
) -> None:
    ours, peer = pair
    peer.sendall(BODY)
    with pytest.raises(BodyTooSlow):
        _reader(ours, [], timeout_s=0.0).read(len(BODY))


def test_reading_now_at_the_end_of_the_stream_is_empty_and_restores_the_timeout(
    pair: tuple[gsocket.socket, ...],
) -> None:
    ours, peer = pair
    peer.close()
    rfile = ours.makefile("rb")
    assert read_now(ours, rfile.read1, 10) == b""
    assert ours.gettimeout() is None


def test_sending_now_takes_what_the_kernel_takes_and_never_waits(
    pair: tuple[gsocket.socket, ...],
) -> None:
    ours, _ = pair  # the peer reads nothing
    assert send_now(ours, memoryview(BODY)) == len(BODY)
    big = memoryview(bytes(1 << 20))
    while send_now(ours, big):
        pass  # the kernel's buffer fills: then 0, not a wait
    assert send_now(ours, big) == 0
