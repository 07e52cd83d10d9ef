"""Every private or undocumented gevent / pywsgi API pushsvc relies on, in one room.

The hot path writes a stream's socket itself and bends pywsgi's request-head handling; both
need gevent internals. Nothing else in pushsvc touches them: other modules call through the
names below. Each touchpoint, and the test that fails when a gevent release changes it:

* `socket._sock` — the non-blocking OS socket inside a gevent socket, which a stream sends
  on directly (`os_socket`). Pinned by tests/unit/test_hub.py (the direct-write tests build a
  `StreamSocket` on a gevent socket pair) and by
  tests/system/test_metrics.py::test_stream_connects_disconnects_and_delivery_latency
  (`pushsvc_direct_writes_total` moves under `pushsvc serve`).
* `socket._sslobj` — present on a gevent SSL socket: a TLS stream keeps pywsgi's writes
  (`handed_over`). Pinned by tests/system/test_tls.py::test_https_post_reaches_an_sse_stream.
* `WSGIHandler.socket`, `.headers_sent`, `.response_use_chunked` — undocumented handler
  state read once the response head is out (`handed_over`, `connection_of`). Pinned by the
  same two tests and by tests/system/test_stream_release.py.
* `socket._sock` on a TLS socket too, and the loop's `io` / `timer` watchers with `ref` —
  a stream noticing its client leave without a greenlet (`connection_of`, `os_socket`,
  `loop_watcher`; `pushsvc.deliver.peer_watch`). Pinned by
  tests/system/test_stream_release.py (plain TCP, TLS and gunicorn).
* `WSGIHandler.MessageClass` — pywsgi's factory for a request's headers, given a public name
  here (`PywsgiHandler.read_head`), and `pywsgi.OldMessage`, the type it returns
  (`RequestHead`). Pinned by tests/unit/test_request_headers.py (ours against pywsgi's
  `headers_factory`) and tests/system/test_slow_headers.py.
* `WSGIHandler._handle_client_error` — pywsgi's answer to an invalid request
  (`PywsgiHandler.client_error`). Pinned by
  tests/system/test_slow_headers.py::test_headers_that_never_end_get_a_408_at_the_deadline.
* `WSGIHandler._sendall`, `.status`, `.code`, `.response_length` — every write of a response,
  given a deadline (`PywsgiHandler.send_all`). Pinned by
  tests/system/hostile/test_unfinished_bodies.py::test_a_response_never_read_is_cut_off.
* `WSGIHandler._write_with_headers` — a response's head and first write, which pywsgi sends
  apart; a small first write goes in one send with the head (`PywsgiHandler`, `JOIN_AT_MOST`).
  Pinned by tests/unit/test_one_send_answers.py.
* A gevent socket's `send(data, flags, timeout)` with a timeout of 0.0, and its timeout set
  to 0.0 around a read (`send_now`, `read_now`): gevent then raises EWOULDBLOCK instead of
  waiting, and gevent's SSL socket ignores the first and returns partial lines for the second,
  so neither is tried on TLS. Pinned by tests/unit/test_body_reader.py and
  tests/system/hostile/test_unfinished_bodies.py::test_a_response_never_read_is_cut_off.
* `pywsgi.Input.rfile`, `.content_length`, `.chunked_input` — the raw reader of a request
  that has neither `Content-Length` nor chunked framing, whose body pywsgi reads as empty
  (`unframed_input`; a POST's body is then read up to the connection's end). Pinned by
  tests/system/test_ingest_search.py::test_a_close_delimited_body_over_the_limit_is_a_json_413.
  `Input.rfile` is also replaced by a reader with deadlines (`body_input`; every read of a
  body, pywsgi's discard included, goes through it), and a body of known length, read
  before the app runs, is handed to it as `Input(io.BytesIO(body), length)` with
  `WSGIHandler.wsgi_input` (`pushsvc.server.HeadTimeoutHandler`). Pinned by
  tests/system/hostile/test_unfinished_bodies.py and tests/system/test_ingest_search.py.
* `WSGIHandler.get_environ`, `read_requestline`, `read_request`, `handle_one_request`,
  `log_request` — public names but not a documented extension interface; overridden by
  `pushsvc.server`'s handlers and pinned by tests/system/test_slow_headers.py.
* `pywsgi.format_date_time`, the module function pywsgi's `finalize_headers` calls for every
  response's `Date` (a `time.gmtime` and a format each time): replaced by one that formats
  each second once (`install_date_cache`). Pinned by tests/unit/test_one_send_answers.py
  (the `Date` of an answer as pywsgi's own function writes it).
* `StreamServer.do_read` (one accept; gevent's `_do_read` loop reports what it raises
  through the hub, a traceback each time) and `stop_accepting` / `start_accepting` — the
  accept loop paused while the process is out of descriptors (`PywsgiServer.accept_failed`,
  `accepted`).
  Pinned by tests/system/test_open_files.py::test_out_of_descriptors_pauses_accepting_with_one_line.
* `StreamServer.wrap_socket_and_handle`, `wrap_socket`, `ssl_args` — a TLS connection before
  its handshake (`PywsgiServer.handle_tls`, `tls_handshake`): gevent handshakes with no
  deadline and lets a failed handshake's traceback reach the hub. Pinned by
  tests/system/test_tls.py (the handshake tests).

pyproject.toml bounds gevent below its next major release for these.
"""

from __future__ import annotations

import _socket
import contextlib
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gevent
from gevent import pywsgi
from gevent.pywsgi import Input, OldMessage, WSGIHandler, WSGIServer
from gevent.ssl import SSLSocket

RequestHead = OldMessage
"""What `PywsgiHandler.read_head` returns: pywsgi's header message type."""

ENVIRON_KEY = "pushsvc.stream_handler"
"""Where `pushsvc.server.StreamingHandler` puts itself in the WSGI environ."""


class _Handler(Protocol):
    socket: Any
    response_use_chunked: bool
    headers_sent: bool


def os_socket(gevent_socket: Any) -> socket.socket:
    """The non-blocking OS socket inside a gevent socket, TLS or not (on TLS, MSG_PEEK on it
    reads the kernel's buffer without going through, or disturbing, the TLS layer). An OS
    socket is returned as it is. (`_socket`: monkey-patching makes `socket.socket` gevent's.)"""
    raw = getattr(gevent_socket, "_sock", gevent_socket)
    assert isinstance(raw, _socket.socket)
    return raw  # type: ignore[return-value]


def connection_of(environ: Mapping[str, object]) -> Any | None:
    """The gevent socket a response goes out on: pywsgi's under `pushsvc serve`/`web` (TLS
    included), or gunicorn's gevent worker's (`gunicorn.socket`); None where the WSGI server
    does not say."""
    handler = environ.get(ENVIRON_KEY)
    sock = getattr(handler, "socket", None) if handler is not None else None
    if sock is None:
        sock = environ.get("gunicorn.socket")
    if sock is None or not hasattr(sock, "fileno"):
        return None
    return sock


def loop_watcher(kind: str, *args: Any) -> Any:
    """An unreferenced watcher of the hub's loop (`loop.io(fd, events)`, `loop.timer(after,
    repeat)`): it never keeps a process's loop running. Any: gevent's typing of watchers
    leaves out `ref`."""
    loop: Any = gevent.get_hub().loop
    watcher: Any = getattr(loop, kind)(*args)
    watcher.ref = False
    return watcher


def handed_over(environ: Mapping[str, object]) -> tuple[Any, bool] | None:
    """A stream's gevent socket and whether its response is chunked, once pywsgi has sent
    the head; None where the socket cannot be written directly (not our handler, head not
    out yet, TLS: the SSL layer must do every write)."""
    handler: _Handler | None = environ.get(ENVIRON_KEY)  # type: ignore[assignment]
    if handler is None or not handler.headers_sent:
        return None
    sock = handler.socket
    if getattr(sock, "_sslobj", None) is not None or not hasattr(sock, "_sock"):
        return None
    return sock, handler.response_use_chunked


def body_input(environ: Mapping[str, object]) -> Input | None:
    """pywsgi's reader of the request body (`Input`, whose `rfile` is the connection's
    buffered reader, replaceable by one with deadlines); None under another WSGI server."""
    wsgi_input = environ.get("wsgi.input")
    return wsgi_input if isinstance(wsgi_input, Input) else None


def unframed_input(environ: Mapping[str, object]) -> Any | None:
    """pywsgi's raw reader of the request, when the request has neither `Content-Length` nor
    chunked framing (pywsgi then reads its body as empty, whatever follows the head); None
    for any other request, or under another WSGI server."""
    wsgi_input = environ.get("wsgi.input")
    if not isinstance(wsgi_input, Input):
        return None
    unframed = wsgi_input.content_length is None and not wsgi_input.chunked_input
    return wsgi_input.rfile if unframed else None


_REFUSED_PER_TURN = 64
"""Connections refused at once in one turn of the accept loop before it lets others run."""

_RESET = struct.pack("ii", 1, 0)


def refuse_at_once(sock: Any) -> None:
    """Close a connection just accepted with a reset: no TIME_WAIT left, nothing read."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


def is_tls(sock: Any) -> bool:
    """Whether a gevent socket is gevent's SSL socket."""
    return isinstance(sock, SSLSocket)


def send_now(sock: Any, data: memoryview) -> int:
    """How much of `data` one send on the plain gevent socket `sock` takes without waiting
    for the kernel's send buffer: 0 when it is full."""
    try:
        sent: int = sock.send(data, 0, 0.0)  # gevent's timeout: 0.0 never waits
    except BlockingIOError:
        return 0
    return sent


def read_now(sock: Any, read: Callable[[int], bytes], size: int) -> bytes:
    """`read(size)` (a buffered reader's `read1` over the plain gevent socket `sock`) with no
    wait for the client: what the reader's buffer or one recv holds, b"" when neither holds
    anything (or at the end of the stream, which a read that may wait then finds again).
    Never a `readline`: a line cut short by a recv with nothing more would come back as if
    whole."""
    previous = sock.gettimeout()
    sock.settimeout(0.0)  # gevent then raises EWOULDBLOCK, which the reader turns into b""
    try:
        return read(size)
    finally:
        sock.settimeout(previous)


class _DateCache:
    """pywsgi's `format_date_time`, the formatted second kept: a response's `Date` names its
    second, and every answer within one second has the same."""

    def __init__(self, format_date: Callable[[float], bytes]) -> None:
        self._format = format_date
        self._second = -1
        self._value = b""

    def __call__(self, timestamp: float) -> bytes:
        second = int(timestamp)
        if second != self._second:
            # Formatted from the whole second: what pywsgi's function gives for any moment
            # within it (it drops the fraction).
            self._value = self._format(second)
            self._second = second
        return self._value


def install_date_cache() -> None:
    """Have pywsgi format each second's `Date` once (idempotent)."""
    module: Any = pywsgi  # the stubs leave the function out
    if not isinstance(module.format_date_time, _DateCache):
        module.format_date_time = _DateCache(module.format_date_time)


JOIN_AT_MOST = 16 << 10
"""The largest first write sent in one send with its response's head (copied once into it)."""


class PywsgiHandler(WSGIHandler):
    """pywsgi's handler with its private hooks under public names: override `read_head`,
    `client_error` and `send_all`, never `MessageClass`, `_handle_client_error` or
    `_sendall`."""

    def MessageClass(self, *args: object) -> RequestHead:  # pywsgi's hook, by its name
        return self.read_head(*args)

    def read_head(self, *args: object) -> RequestHead:
        """The headers that follow the request line (pywsgi: `MessageClass(rfile, 0)`)."""
        return OldMessage(*args)

    def _handle_client_error(self, ex: Exception) -> tuple[str, bytes]:
        return self.client_error(ex)

    def client_error(self, ex: Exception) -> tuple[str, bytes]:
        """The status and the bytes to answer an invalid request with."""
        answer: tuple[str, bytes] = super()._handle_client_error(ex)  # type: ignore[misc]
        return answer

    _joining: bytearray | None = None
    """While `_write_with_headers` runs for a small first write: what it would send."""

    def _write_with_headers(self, data: bytes) -> None:  # pywsgi's, by its name
        # pywsgi sends a response's head and its first write apart, two sends where one
        # does: for a small answer (a POST's 202, a JSON read, a stream's first block) the
        # second send is a second wake-up of the client and a second syscall, which cost
        # as much as the rest of a POST's answer. The head and a first write of at most
        # `JOIN_AT_MOST` bytes go in one send.
        if len(data) > JOIN_AT_MOST:
            super()._write_with_headers(data)  # type: ignore[misc]
            return
        self._joining = bytearray()
        try:
            super()._write_with_headers(data)  # type: ignore[misc]
            joined = self._joining
        finally:
            self._joining = None
        self._send_counted(joined, counted=True)

    def _sendall(self, data: bytes) -> None:  # pywsgi's hook, by its name (its bookkeeping)
        if self._joining is not None:
            self._joining += data
            self.response_length += len(data)
            return
        self._send_counted(data)

    def _send_counted(self, data: bytes | bytearray, *, counted: bool = False) -> None:
        try:
            self.send_all(data)
        except OSError as ex:
            self.status = f"socket error: {ex}"
            code = self.code
            if code is not None and code > 0:
                self.code = -code
            raise
        if not counted:
            self.response_length += len(data)

    def send_all(self, data: bytes | bytearray) -> None:
        """Write all of `data` to the connection (every write of a response goes here)."""
        self.socket.sendall(data)


class PywsgiServer(WSGIServer):
    """pywsgi's server with its undocumented hooks under public names: override `accepted`,
    `accept_failed`, `accepting_paused`, `admits` and `handle_tls`, never `do_read` or
    `wrap_socket_and_handle`. A connection `admits` turns away is reset at once, up to
    `_REFUSED_PER_TURN` in one turn of the loop, without a greenlet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install_date_cache()

    def do_read(self) -> tuple[Any, Any] | None:  # type: ignore[override]  # gevent's hook
        for _ in range(_REFUSED_PER_TURN):
            if self.accepting_paused():
                # gevent accepts up to `max_accept` at a time and goes on after
                # `stop_accepting` within them: nothing accepted ends that turn.
                return None
            try:
                accepted: tuple[Any, Any] | None = super().do_read()
            except OSError as exc:
                if self.accept_failed(exc):
                    return None  # nothing accepted: gevent's loop waits for the next readiness
                raise
            if accepted is None:
                return None
            self.accepted()
            if self.admits(accepted[1]):
                return accepted
            refuse_at_once(accepted[0])
        return None

    def admits(self, address: Any) -> bool:
        """Whether a connection just accepted from `address` is handled (else it is reset)."""
        return True

    def accepted(self) -> None:
        """An accept succeeded."""

    def accepting_paused(self) -> bool:
        """Whether accepting is paused (`stop_accepting` until a timer starts it again)."""
        return False

    def accept_failed(self, exc: OSError) -> bool:
        """An accept failed with `exc`: True when handled here (then accepting must have been
        paused with `stop_accepting`, or the loop would spin on the listening socket); False
        for gevent's handling (a traceback, then a retry with backoff)."""
        return False

    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> None:  # gevent's hook
        self.handle_tls(client_socket, address)

    def handle_tls(self, client_socket: Any, address: Any) -> None:
        """A TLS connection, accepted and not yet handshaken; the caller closes
        `client_socket` afterwards. (gevent: `tls_handshake`, then `handle`.)"""
        tls_socket = self.tls_handshake(client_socket)
        try:
            self.handle(tls_socket, address)
        finally:
            tls_socket.close()

    def tls_handshake(self, client_socket: Any) -> Any:
        """The TLS socket over `client_socket`, its handshake done (blocks this greenlet)."""
        # gevent's stubs type `wrap_socket` as ssl.wrap_socket; it is the context's method.
        wrap: Callable[..., Any] = self.wrap_socket  # type: ignore[misc]
        return wrap(client_socket, **(self.ssl_args or {}))
