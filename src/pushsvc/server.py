"""Running processes: the gevent WSGI server, and the standalone aggregator, with clean shutdown."""

from __future__ import annotations

import _socket
import contextlib
import errno
import io
import logging
import signal
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import gevent
import gevent.event
from gevent.pywsgi import Input, WSGIServer
from prometheus_client import make_wsgi_app

from pushsvc.app import Role, create_app
from pushsvc.config import Settings
from pushsvc.core.answers import error_json
from pushsvc.gevent_private import (
    ENVIRON_KEY,
    PywsgiHandler,
    PywsgiServer,
    RequestHead,
    body_input,
    is_tls,
    read_now,
    send_now,
)
from pushsvc.http.body_deadline import BodyReader, BodyTooSlow
from pushsvc.http.request_headers import read_headers
from pushsvc.http.tls import server_context
from pushsvc.http.waiting_clients import WaitingClients
from pushsvc.loop_pause import let_others_run
from pushsvc.ops import collector
from pushsvc.ops.listeners import inherited, listen
from pushsvc.ops.open_files import OpenFiles, headroom
from pushsvc.runtime import Runtime

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

# Bursts of thousands of reconnecting EventSources must not overflow the accept queue.


class _HeadTimeout(Exception):
    """A request's line and headers did not arrive within the header timeout."""


class _Lingered(Exception):
    """A refused body's connection lingered its time (`HeadTimeoutHandler.refuse_body`)."""


class _WriteTooSlow(Exception):
    """A response's write waited past the write deadline (`HeadTimeoutHandler.send_all`)."""


class _HeadersTooSlow(ValueError):
    """What pywsgi's handler is told, once the request line is in (a ValueError: a client
    error, answered and not treated as a crash)."""


_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_BODY_TIMEOUT_JSON = error_json(
    "request_timeout", "the request body did not arrive in time (--body-timeout)"
)
_BODY_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BODY_TIMEOUT_JSON), _BODY_TIMEOUT_JSON)
)

# After a refused body's answer (413) the connection lingers, as nginx's does: its sending
# side shut, what the client still sends read and dropped for at most this long and this
# much, so that the answer reaches a client still sending instead of being lost to the reset
# that closing over unread bytes sends. Never longer: a client that keeps sending is cut off.
_LINGER_S = 2.0
_LINGER_BYTES = 1 << 20


class HeadTimeoutHandler(PywsgiHandler):
    """pywsgi's handler with a deadline on every phase in which it waits on its client, as
    nginx has: pywsgi has none, so a client trickling its headers or its body, or an idle
    keep-alive connection, would hold a greenlet and a descriptor for as long as it likes.

    * The request line and headers within a third of `--body-timeout` (nginx's
      `client_header_timeout`); past it the connection is closed, with a 408 once the request
      line is in.
    * The body within `--body-timeout`, and never a wait longer than a third of it for its
      next piece (`pushsvc.http.body_deadline`); past either the connection closes
      after the answer (a 408, when the app was still reading it).
    * While it waits on its client the connection may be shed when descriptors run short
      (`pushsvc.http.waiting_clients`).

    * Every write of a response: a client that takes nothing of it for
      `--body-timeout` is disconnected (`send_all`), as a live stream that takes
      nothing is (`pushsvc.deliver`)."""

    header_timeout_s = 10.0  # set per server by `handler_for`
    write_timeout_s = 30.0  # set per server by `handler_for`
    on_write_timeout: Callable[[], None] | None = None  # a stream's, per response
    max_body_bytes = 1 << 20  # set per server by `handler_for`
    body_timeout_s = 30.0  # set per server by `handler_for`
    body_read_timeout_s = 10.0  # set per server by `handler_for`
    greenlets: Gauge | None = None  # set per server by `handler_for`
    waiting: WaitingClients | None = None  # set per server by `handler_for`
    timeouts: Counter | None = None  # set per server by `handler_for`
    _head_deadline: gevent.Timeout | None = None
    _body: BodyReader | None = None
    _linger = False

    def handle(self) -> None:
        # The connection's whole life in its greenlet: counted here, a leak shows on /metrics.
        if self.greenlets is None:
            super().handle()
            return
        with self.greenlets.track_inprogress():
            super().handle()

    def read_head(self, *args: object) -> RequestHead:
        return read_headers(*args)  # type: ignore[arg-type]

    def handle_one_request(self) -> tuple[str, bytes] | Literal[True] | None:
        try:
            result = super().handle_one_request()
        finally:
            self._end_head_deadline()  # the paths that never reach read_request
            if self._body is not None:
                self._body.detach()
                self._body = None
        if self._linger:
            self._linger_and_close()
            return None
        # A client that pipelines its requests has the next one read from the buffer without
        # a wait, so the loop would serve its whole pipeline before anyone else: past
        # `HOLD_S` in one turn, the others go first (one time comparison when it has not).
        let_others_run()
        return result

    def get_environ(self) -> dict[str, object]:
        environ: dict[str, object] = super().get_environ()
        # The request target as sent, as gunicorn gives it: PATH_INFO is decoded, and a path
        # whose parts hold an encoded `/` (Mercure's subscription URLs) reads only from this.
        environ["RAW_URI"] = self.path
        body = body_input(environ)
        if body is not None:
            # The body's deadlines run from here: the head is in.
            self._body = reader = BodyReader(
                body.rfile,
                timeout_s=self.body_timeout_s,
                read_timeout_s=self.body_read_timeout_s,
                to_close=self._close_after_request,
                on_waiting=self._waiting_on_client,
            )
            body.rfile = reader  # type: ignore[assignment]  # reads as the buffered reader does
        return environ

    def handle_one_response(self) -> None:
        if self._buffer_body():
            super().handle_one_response()

    def send_all(self, data: bytes | bytearray) -> None:
        """Write `data` a piece at a time, each as the socket takes it; a wait for the socket
        to take anything that lasts `write_timeout_s` ends the connection (pywsgi waited for
        ever: a client that asked for a large answer and never read it held it in memory)."""
        sock = self.socket
        view = memoryview(data)
        if not is_tls(sock):
            # Most answers fit the kernel's send buffer: one send that never waits takes them
            # whole, and a send that does not wait needs no deadline (arming one, a timer and
            # an exception object, cost more than the send did). Only what it leaves is
            # written under the deadline. (TLS: gevent's SSL socket cannot be asked not to
            # wait; every piece there is written under it.)
            view = view[send_now(sock, view) :]
        while view:
            deadline = gevent.Timeout.start_new(self.write_timeout_s, _WriteTooSlow)
            try:
                sent: int = sock.send(view)
            except _WriteTooSlow:
                timed_out(self.timeouts, "write", self.client_address)
                self.close_connection = True
                if self.on_write_timeout is not None:
                    self.on_write_timeout()
                raise ConnectionResetError(errno.ECONNRESET, "the client took nothing") from None
            finally:
                deadline.close()
            view = view[sent:]

    def _buffer_body(self) -> bool:
        """Read a body of known length, up to `--max-body`, before the app is called, as
        nginx buffers a body before it passes the request on: a client that never finishes
        its body then costs a greenlet waiting in a read, never the app's work of routing,
        authorizing and answering it. False when it did not arrive: the connection ends
        here (with a 408 past its deadline), and the app never sees the request."""
        wsgi_input = self.wsgi_input
        length = wsgi_input.content_length if wsgi_input is not None else None
        if self._body is None or not length or length > self.max_body_bytes:
            return True  # no body, one of unknown length, or one the app refuses (413)
        assert wsgi_input is not None
        sock = self.socket
        if not is_tls(sock):
            # A small body comes with its head, already in the connection's buffer: read
            # without arming the deadlines' timer or counting the connection as waiting.
            self._body.read_first_with(partial(read_now, sock))
        try:
            data: bytes = wsgi_input.read(length)  # sends `100 Continue` where asked
        except BodyTooSlow:
            timed_out(self.timeouts, "body", self.client_address)
            with contextlib.suppress(OSError):
                self.socket.sendall(_BODY_TIMEOUT)
            return False
        except OSError:  # the client left mid-body ("unexpected end of file")
            self.close_connection = True
            return False
        # pywsgi's reader over the bytes read: the app reads them as it would the socket.
        self.wsgi_input = Input(io.BytesIO(data), length)  # type: ignore[arg-type]
        assert self.environ is not None
        self.environ["wsgi.input"] = self.wsgi_input
        return True

    def refuse_body(self) -> None:
        """Read nothing more of this request's body (it is answered 413): the connection
        lingers briefly once the answer is out, then closes."""
        if self._body is not None:
            self._body.refuse()
            self._linger = True

    def shed(self) -> None:
        """Shut the connection down while it waits on its client (`WaitingClients`): the
        read it waits in ends, and the connection with it."""
        self.close_connection = True
        sock: Any = self.socket  # None once the connection is gone
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _close_after_request(self) -> None:
        self.close_connection = True

    def _waiting_on_client(self, waiting: bool) -> None:
        clients = self.waiting
        if clients is None:
            return
        if waiting:
            clients.started(self, self.client_address[0] if self.client_address else "")
        else:
            clients.ended(self)

    def _linger_and_close(self) -> None:
        sock: Any = self.socket  # None once the connection is gone
        if sock is None:
            return
        with contextlib.suppress(OSError, _Lingered), gevent.Timeout(_LINGER_S, _Lingered):
            sock.shutdown(socket.SHUT_WR)
            dropped = 0
            while dropped < _LINGER_BYTES:
                part = sock.recv(1 << 16)
                if not part:
                    break
                dropped += len(part)

    def continue_head_deadline(self, deadline: gevent.Timeout) -> None:
        """Give the first request's head what is left of `deadline` (started at accept: a TLS
        handshake counts against the header timeout) instead of a deadline of its own."""
        self._head_deadline = deadline

    def read_requestline(self) -> str:
        if self._head_deadline is None:  # else the handshake's, still running
            # A new timer for each request: libev's stopped timer keeps what was left of
            # its time, so one reused would give a keep-alive connection's next request
            # only the rest of the last one's deadline.
            self._head_deadline = gevent.Timeout.start_new(self.header_timeout_s, _HeadTimeout)
        self._waiting_on_client(True)  # until the head is in (`_end_head_deadline`)
        try:
            line: str = super().read_requestline()
        except _HeadTimeout:
            return ""  # no request line: handle_one_request closes the connection quietly
        return line

    def read_request(self, raw_requestline: str) -> RequestHead:
        try:
            return super().read_request(raw_requestline)
        except _HeadTimeout:
            self.close_connection = True
            raise _HeadersTooSlow from None
        finally:
            self._end_head_deadline()

    def client_error(self, ex: Exception) -> tuple[str, bytes]:
        # pywsgi's hook for invalid requests: a slow client is routine (an attack, or a bad
        # network), worth a 408 and an INFO line, not pywsgi's ERROR and 400.
        if isinstance(ex, _HeadersTooSlow):
            timed_out(self.timeouts, "head", self.client_address)
            return ("408", _REQUEST_TIMEOUT)
        return super().client_error(ex)

    def log_request(self) -> None:
        # pywsgi formats an access-log line (a datetime, the request line) for every request
        # even when, as here (`log=None`), nothing writes it (docs/journal/fanout.md).
        return

    def _end_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.close()
            self._head_deadline = None
            self._waiting_on_client(False)


_NO_READER = io.BytesIO()
_NO_READER.close()
"""What a connection reads from once its stream has let go of the request (`StreamingHandler.
let_go_of_request`): closed, so nothing reads from it by mistake; one for every connection."""


def _nothing() -> None:
    return


class StreamingHandler(HeadTimeoutHandler):
    """Also lends itself to the app through the environ so that a stream can write its own
    socket once the head is out (`pushsvc.deliver.stream_socket`; plain TCP only), notice its
    client leaving (`pushsvc.deliver.peer_watch`; TLS too) and let go of its request once
    it runs (`let_go_of_request`)."""

    def get_environ(self) -> dict[str, object]:
        environ = super().get_environ()
        environ[ENVIRON_KEY] = self
        return environ

    def handle_one_response(self) -> None:
        try:
            super().handle_one_response()
        finally:
            # The environ names this handler (`get_environ`): a cycle that only the
            # collector's full passes would free, with the connection's socket, its buffers
            # and the request, once per request. The app is done with it here (a handed-over
            # stream holds what it took of it).
            environ = self.environ
            if environ is not None:
                environ.pop(ENVIRON_KEY, None)
            self.on_write_timeout = None  # the next request's is its own

    def hand_over(self) -> tuple[_socket.socket, bool, Callable[[], None]] | None:
        """Give a stream its connection once the response head is out (plain TCP only): the
        stream writes and closes it from here, with no greenlet (`pushsvc.deliver.
        live_stream`). Returns the OS socket, whether the response is chunked and what to
        call once the stream has closed it (the connection stays counted in
        `pushsvc_greenlets` until then, as it was while its greenlet served it); the response
        then ends with nothing more written (no last chunk: the stream writes its own) and
        pywsgi closes nothing. None where it cannot be had (TLS, no head yet)."""
        sock = self.socket
        if sock is None or not self.headers_sent or getattr(sock, "_sslobj", None) is not None:
            return None
        chunked = bool(self.response_use_chunked)
        # `detach` (a socket's public API) also drops gevent's watchers of the descriptor:
        # the descriptor itself stays open, now the stream's.
        raw = _socket.socket(fileno=sock.detach())  # the OS socket: not gevent's
        raw.setblocking(False)
        self.socket = None  # type: ignore[assignment]  # pywsgi's end of a connection (and the server's close) skip it
        self.response_use_chunked = False
        self.close_connection = True
        if self.greenlets is None:
            return raw, chunked, _nothing
        self.greenlets.inc()
        return raw, chunked, self.greenlets.dec

    def let_go_of_request(self) -> bool:
        """Free what a long response no longer needs of its request: the connection's read
        buffer (8 KB allocated whole when the request line came in, the largest part of an
        idle stream: docs/journal/stream-memory.md, 'The breakdown before'), the WSGI environ
        with the Werkzeug request it carries, and both heads. The connection then closes when
        the response ends, instead of reading a next request.
        A request with a body keeps both (its unread rest is discarded after the response).
        False when nothing was freed."""
        wsgi_input = self.wsgi_input
        if wsgi_input is None or wsgi_input.content_length or wsgi_input.chunked_input:
            return False
        # Anything a client sent after its request (EventSources send nothing) would be lost
        # with the buffer: the connection ends with the response, unread bytes and all.
        self.close_connection = True
        self.rfile = wsgi_input.rfile = _NO_READER  # type: ignore[assignment]
        # pywsgi reads nothing more of the environ once the response runs (access logging
        # is off: `log_request`); the app holds what it read of it (`StreamRequest`).
        if self.environ is not None:
            self.environ.clear()
        # The request's headers and the response's, already sent: read by nothing from here.
        self.headers = self.response_headers = None  # type: ignore[assignment]
        return True


def timed_out(timeouts: Counter | None, phase: str, address: object) -> None:
    """A connection closed in `phase` because its client did not send or take in time:
    counted, and logged at DEBUG only (an attack times out thousands a minute)."""
    if timeouts is not None:
        timeouts.labels(phase).inc()
    log.debug("closed %s: nothing in time (%s)", address, phase)


def handler_for(
    settings: Settings,
    *,
    greenlets: Gauge | None = None,
    waiting: WaitingClients | None = None,
    timeouts: Counter | None = None,
) -> type[HeadTimeoutHandler]:
    fields = {
        "header_timeout_s": settings.header_timeout_us / 1e6,
        "write_timeout_s": settings.slow_client_timeout_us / 1e6,
        "max_body_bytes": settings.max_body_bytes,
        "body_timeout_s": settings.body_timeout_us / 1e6,
        "body_read_timeout_s": settings.body_read_timeout_us / 1e6,
        "greenlets": greenlets,
        "waiting": waiting,
        "timeouts": timeouts,
    }
    return type(StreamingHandler.__name__, (StreamingHandler,), fields)


def waiting_clients_for(
    settings: Settings,
    open_file_limit: int,
    on_shed: Callable[[int], object] = lambda count: None,
) -> WaitingClients:
    """`--max-waiting` connections may wait on their client, and never more than all but half
    the headroom the stream cap keeps (`pushsvc.ops.open_files`): the other half stays free
    for the process's own files, its Redis connections and the requests under way. Each
    client address may hold a sixteenth of them (`Settings.max_waiting_per_ip`), except
    behind a proxy (`--trusted-proxies`), whose one address carries every client's and which
    waits on slow clients itself."""
    cap = max(1, min(settings.max_waiting, open_file_limit - headroom(open_file_limit) // 2))
    per_address = None if settings.trusted_proxies else settings.max_waiting_per_ip
    return WaitingClients(
        cap, per_address=per_address, shed_rate=settings.shed_rate, on_shed=on_shed
    )


# What accept fails with when this process (or the system) is out of descriptors or socket
# memory: it passes as connections close, so accepting pauses instead of failing in a loop.
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE_MIN_S = 0.01
_SHED_AT_ONCE = 16
_SHED_LOG_EVERY_S = 60.0
"""Waiting connections shed each time accepting fails for want of a descriptor."""
_ACCEPT_PAUSE_MAX_S = 1.0


class Server(PywsgiServer):
    """pywsgi's server, with three changes to how it takes connections:

    * Out of descriptors, accepting pauses (10 ms, doubling up to 1 s, until an accept
      succeeds) with one warning line per episode; pending connections wait in the listen
      queue. gevent would log a traceback at every retry.
    * While the connections waiting on their client are strained (`WaitingClients`), one
      just accepted from an address keeping the server waiting is reset at once (`admits`,
      counted in `refused`), and past a burst of the shedding budget's debt accepting
      pauses (`accept_pause_s`).
    * A TLS handshake must end within the header timeout, and what is left of that timeout
      is the first request head's (`HeadTimeoutHandler.continue_head_deadline`); a failed or
      timed-out handshake is one INFO line. gevent waits for a handshake for ever and lets
      a failed one's traceback reach the hub (multi-line text, whatever `--log-format`).
    """

    handler_class: type[HeadTimeoutHandler]
    _out_of_descriptors = False  # since the last accept that succeeded
    _shed_said_until = 0.0  # monotonic: no line about shedding before then
    _pause_s = _ACCEPT_PAUSE_MIN_S
    _paused = False  # by `accepted`, until `_resume_accepting`
    refused: Counter | None = None  # connections `admits` turned away

    def accepted(self) -> None:
        self._out_of_descriptors = False  # the episode is over: the next one gets its line
        waiting = self.handler_class.waiting
        if waiting is None:
            return
        # Checked after each accept: past a burst of debt on the shedding budget, accepting
        # pauses (`WaitingClients.accept_pause_s`; short of it, `admits` refuses or lets in).
        pause_s = waiting.accept_pause_s()
        if pause_s > 0:
            self._paused = True
            self.stop_accepting()
            gevent.spawn_later(max(pause_s, _ACCEPT_PAUSE_MIN_S), self._resume_accepting)

    def accepting_paused(self) -> bool:
        return self._paused

    def admits(self, address: Any) -> bool:
        waiting = self.handler_class.waiting
        if waiting is None or waiting.admits(address[0] if address else ""):
            return True
        if self.refused is not None:
            self.refused.inc()
        return False

    def accept_failed(self, exc: OSError) -> bool:
        if exc.errno not in _OUT_OF_DESCRIPTORS:
            return False
        self.stop_accepting()
        waiting = self.handler_class.waiting
        if waiting is not None and waiting.shed(_SHED_AT_ONCE):
            # Descriptors taken back from clients that keep the server waiting (see
            # `pushsvc.http.waiting_clients`): they free as those greenlets run, next.
            # Accepting then succeeds and fails by turns for as long as the attack lasts:
            # one line per minute of it, not one per turn.
            now = time.monotonic()
            if now >= self._shed_said_until:
                self._shed_said_until = now + _SHED_LOG_EVERY_S
                log.warning(
                    "out of descriptors: closing the connections that waited longest on "
                    "their client to accept new ones (pushsvc_connections_shed_total counts "
                    "them)"
                )
            gevent.spawn_later(_ACCEPT_PAUSE_MIN_S, self._resume_accepting)
            return True
        if not self._out_of_descriptors:
            self._out_of_descriptors = True
            self._pause_s = _ACCEPT_PAUSE_MIN_S
            log.warning(
                "cannot accept connections: %s; they wait in the listen queue, accepting is "
                "retried as descriptors free up (lower --max-streams or raise the open-file "
                "limit)",
                (exc.strerror or str(exc)).lower(),
            )
        else:
            self._pause_s = min(_ACCEPT_PAUSE_MAX_S, self._pause_s * 2)
        gevent.spawn_later(self._pause_s, self._resume_accepting)
        return True

    def _resume_accepting(self) -> None:
        self._paused = False
        if self.started:  # not stopped meanwhile
            self.start_accepting()

    def handle_tls(self, client_socket: Any, address: Any) -> None:
        timeout_s = self.handler_class.header_timeout_s
        deadline = gevent.Timeout.start_new(timeout_s, _HeadTimeout)
        waiting = self.handler_class.waiting
        handshake = _Handshake(client_socket)
        if waiting is not None:
            waiting.started(handshake, address[0] if address else "")  # it waits on its client
        try:
            tls_socket = self.tls_handshake(client_socket)
        except _HeadTimeout:
            timed_out(self.handler_class.timeouts, "handshake", address)
            return
        except OSError as exc:  # ssl.SSLError included: a plain-HTTP client, an old TLS
            deadline.close()
            log.info("TLS handshake with %s failed: %s", address, " ".join(str(exc).split()))
            return
        finally:
            if waiting is not None:
                waiting.ended(handshake)
        try:
            handler = self.handler_class(tls_socket, address, self)
            handler.continue_head_deadline(deadline)
            handler.handle()
        finally:
            deadline.close()
            tls_socket.close()


class _Handshake:
    """A TLS connection before its handshake, as `WaitingClients` sheds it."""

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def shed(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)


def _on_termination(stop: gevent.event.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)


def serve_http(settings: Settings, role: Role, *, listen_fd: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then end every stream and stop within a few seconds.
    `listen_fd`: the listening socket `serve --workers` opened for this worker
    (`ops.listeners`), instead of binding one."""
    tls = server_context(settings)  # first: a bad pair must stop us before anything starts
    open_files = OpenFiles.at_start(settings)
    settings = open_files.settings
    # Bound before anything starts: a port in use stops the process with one line.
    listener = listen(settings.host, settings.port) if listen_fd is None else inherited(listen_fd)
    try:
        app = create_app(settings, role=role)
    except BaseException:
        listener.close()
        raise
    open_files.say_if_lowered()
    runtime: Runtime = app.extensions["pushsvc"]
    handler = handler_for(
        settings,
        greenlets=runtime.metrics.greenlet_gauge(),
        timeouts=runtime.metrics.timeout_counter(),
        waiting=waiting_clients_for(
            settings,
            open_files.limit,
            runtime.metrics.shed_counter().inc,
        ),
    )
    if tls is None:
        server = Server(listener, app, log=None, error_log=log, handler_class=handler)
    else:
        server = Server(
            listener, app, log=None, error_log=log, handler_class=handler, ssl_context=tls
        )
    server.refused = runtime.metrics.refused_counter()
    stop = gevent.event.Event()
    _on_termination(stop)
    collector.tune_for_streams()
    server.start()
    # The bound port, for port 0 (tests and scripts read this line).
    scheme = "http" if tls is None else "https"
    log.info("pushsvc %s listening on %s://%s:%d", role, scheme, settings.host, server.server_port)
    stop.wait()
    log.warning("pushsvc %s stopping", role)
    runtime.hub.close()  # streams end first, so the server's stop does not wait for them
    server.stop(timeout=5)
    runtime.close()


def aggregate(settings: Settings) -> None:
    """Run an aggregator process on Redis until SIGTERM/SIGINT; with --metrics-port, answer
    Prometheus there (the process has no other HTTP)."""
    port = settings.metrics_port
    # Bound first: a port in use stops the process with one line, before it takes partitions.
    listener = None if port is None else listen(settings.host, port)
    try:
        runtime = Runtime.build(settings, web=False, aggregate=True)
    except BaseException:
        if listener is not None:
            listener.close()
        raise
    assert runtime.partitions is not None
    metrics = None
    if listener is not None:
        metrics = WSGIServer(listener, make_wsgi_app(runtime.metrics.registry), log=None)
        metrics.start()
        log.warning(
            "pushsvc aggregator metrics on http://%s:%d/metrics",
            settings.host,
            metrics.server_port,
        )
    stop = gevent.event.Event()
    _on_termination(stop)
    log.info(
        "pushsvc aggregator sharing %d partitions on %s",
        settings.partitions,
        settings.redacted()["redis_url"],
    )
    stop.wait()
    if metrics is not None:
        metrics.stop(timeout=1)
    runtime.close()
