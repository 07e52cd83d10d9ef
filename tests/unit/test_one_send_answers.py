"""A small answer leaves pushsvc's pywsgi handler in one send, its head and its first write
together (pywsgi sends them apart: a second syscall and a second wake-up of the client), with
the same bytes, counted the same in the access log's length; a large first write is still
sent after its head, uncopied."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import gevent
import pytest
from gevent import pywsgi
from gevent import socket as gsocket

from pushsvc.gevent_private import JOIN_AT_MOST, _DateCache
from pushsvc.server import Server, StreamingHandler

WAIT_S = 10  # a bound for events awaited, never a sleep


def _answer(body: bytes, *, chunked: bool = False) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        headers = [("Content-Type", "application/octet-stream")]
        if not chunked:
            headers.append(("Content-Length", str(len(body))))
        start_response("202 Accepted", headers)
        return iter([body, b"-tail"]) if chunked else [body]

    return app


def _served(app: Callable[..., Iterable[bytes]]) -> tuple[bytes, list[int], list[int]]:
    """The bytes a client read, each send's size and each response's counted length."""
    sends: list[int] = []
    lengths: list[int] = []

    class Counting(StreamingHandler):
        header_timeout_s = 10.0
        greenlets = None

        def send_all(self, data: bytes | bytearray) -> None:
            sends.append(len(data))
            super().send_all(data)

        def log_request(self) -> None:
            lengths.append(self.response_length)

    server = Server(("127.0.0.1", 0), app, log=None, handler_class=Counting)
    server.start()
    try:
        with gsocket.create_connection(("127.0.0.1", server.server_port), timeout=WAIT_S) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        gevent.sleep(0)  # the server's greenlet ends the connection
    finally:
        server.stop()
    return answer, sends, lengths


@pytest.mark.parametrize("size", [0, 14, JOIN_AT_MOST])
def test_a_small_answer_is_one_send_of_its_head_and_body(size: int) -> None:
    body = b"x" * size
    answer, sends, lengths = _served(_answer(body))
    head, _, got = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202") and got == body
    assert sends == [len(answer)]
    assert lengths == [len(answer)]


def test_a_large_first_write_follows_its_head_in_a_send_of_its_own() -> None:
    body = b"y" * (JOIN_AT_MOST + 1)
    answer, sends, lengths = _served(_answer(body))
    assert answer.endswith(b"\r\n\r\n" + body)
    assert sends == [len(answer) - len(body), len(body)]
    assert lengths == [len(answer)]


def test_a_chunked_answer_sends_its_head_with_its_first_chunk() -> None:
    answer, sends, lengths = _served(_answer(b"first", chunked=True))
    assert answer.endswith(b"\r\n\r\n5\r\nfirst\r\n5\r\n-tail\r\n0\r\n\r\n")
    assert len(sends) == 3 and sum(sends) == len(answer)
    assert lengths == [len(answer)]


def test_the_date_is_pywsgis_own_for_the_second_it_was_written_in() -> None:
    # The server formats each second's `Date` once (`gevent_private.install_date_cache`):
    # what it writes is what pywsgi's own function writes for that moment.
    answer, _, _ = _served(_answer(b"x"))
    after = time.time()
    dates = [
        line.split(b": ", 1)[1]
        for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
        if line.lower().startswith(b"date: ")
    ]
    formatted = pywsgi.format_date_time
    assert isinstance(formatted, _DateCache)
    own = formatted._format  # pywsgi's function, as it was
    assert len(dates) == 1 and dates[0] in {own(after - 1), own(after)}
    for moment in (after, after + 0.25, after + 0.999, after + 1, after + 86_400.5):
        assert formatted(moment) == own(moment)
