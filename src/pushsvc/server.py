"""Running processes: the gevent WSGI server, and the standalone aggregator, with clean shutdown."""

from __future__ import annotations

import logging
import signal
import socket
from typing import TYPE_CHECKING, Literal

import gevent
import gevent.event
from gevent.pywsgi import WSGIServer
from prometheus_client import make_wsgi_app

from pushsvc.app import Role, create_app
from pushsvc.config import Settings
from pushsvc.errors import CannotListen
from pushsvc.gevent_private import ENVIRON_KEY, PywsgiHandler, RequestHead
from pushsvc.http.request_headers import read_headers
from pushsvc.http.tls import server_context
from pushsvc.runtime import Runtime

if TYPE_CHECKING:
    from prometheus_client import Gauge

log = logging.getLogger(__name__)

# Bursts of thousands of reconnecting EventSources must not overflow the accept queue.
LISTEN_BACKLOG = 2048


class _HeadTimeout(Exception):
    """A request's line and headers did not arrive within the header timeout."""


class _HeadersTooSlow(ValueError):
    """What pywsgi's handler is told, once the request line is in (a ValueError: a client
    error, answered and not treated as a crash)."""


_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class HeadTimeoutHandler(PywsgiHandler):
    """pywsgi's handler with a deadline for each request's line and headers (`--header-timeout`,
    like nginx's `client_header_timeout`): pywsgi has none, so a client trickling its headers,
    or an idle keep-alive connection, would hold a greenlet and a descriptor for as long as it
    likes. Past the deadline the connection is closed (with a 408 once the request line is in).
    The body and the response, a stream's included, have no such deadline."""

    header_timeout_s = 10.0  # set per server by `handler_for`
    greenlets: Gauge | None = None  # set per server by `handler_for`
    _head_deadline: gevent.Timeout | None = None

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
            return super().handle_one_request()
        finally:
            self._end_head_deadline()  # the paths that never reach read_request

    def read_requestline(self) -> str:
        self._end_head_deadline()
        self._head_deadline = gevent.Timeout.start_new(self.header_timeout_s, _HeadTimeout)
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
            log.info(
                "closed %s: headers not received within %g s",
                self.client_address,
                self.header_timeout_s,
            )
            return ("408", _REQUEST_TIMEOUT)
        return super().client_error(ex)

    def log_request(self) -> None:
        # pywsgi formats an access-log line (a datetime, the request line) for every request
        # even when, as here (`log=None`), nothing writes it: ~3 % of a POST's CPU.
        return

    def _end_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.close()
            self._head_deadline = None


class StreamingHandler(HeadTimeoutHandler):
    """Also lends itself to the app through the environ so that a stream can write its own
    socket once the head is out (`pushsvc.deliver.stream_socket`; plain TCP only) and notice its
    client leaving (`pushsvc.deliver.peer_watch`; TLS too)."""

    def get_environ(self) -> dict[str, object]:
        environ: dict[str, object] = super().get_environ()
        environ[ENVIRON_KEY] = self
        return environ


def handler_for(settings: Settings, *, greenlets: Gauge | None = None) -> type[HeadTimeoutHandler]:
    fields = {"header_timeout_s": settings.header_timeout_us / 1e6, "greenlets": greenlets}
    return type(StreamingHandler.__name__, (StreamingHandler,), fields)


def _on_termination(stop: gevent.event.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket. `reuse_port`: several processes share the port, the kernel
    spreading connections over them (`serve --workers`)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted sockets inherit this: without it Nagle's algorithm holds back small SSE
    # frames and the second write of every response by ~40 ms (delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListen.on(host, port, exc) from None
    sock.listen(LISTEN_BACKLOG)
    return sock


def serve_http(settings: Settings, role: Role, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then end every stream and stop within a few seconds."""
    tls = server_context(settings)  # first: a bad pair must stop us before anything starts
    # Bound before anything starts: a port in use stops the process with one line.
    listener = listen(settings.host, settings.port, reuse_port=reuse_port)
    try:
        app = create_app(settings, role=role)
    except BaseException:
        listener.close()
        raise
    runtime: Runtime = app.extensions["pushsvc"]
    handler = handler_for(settings, greenlets=runtime.metrics.greenlet_gauge())
    if tls is None:
        server = WSGIServer(listener, app, log=None, error_log=log, handler_class=handler)
    else:
        server = WSGIServer(
            listener, app, log=None, error_log=log, handler_class=handler, ssl_context=tls
        )
    stop = gevent.event.Event()
    _on_termination(stop)
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
