"""Running processes: the gevent WSGI server, and the standalone aggregator, with clean shutdown."""

from __future__ import annotations

import logging
import signal
import socket

import gevent
from gevent.event import Event as Signal
from gevent.pywsgi import WSGIHandler, WSGIServer

from pushsvc.app import Role, create_app
from pushsvc.config import Settings
from pushsvc.runtime import Runtime
from pushsvc.stream_socket import ENVIRON_KEY
from pushsvc.tls import server_context

log = logging.getLogger(__name__)

# Bursts of thousands of reconnecting EventSources must not overflow the accept queue.
LISTEN_BACKLOG = 2048


class StreamingHandler(WSGIHandler):
    """pywsgi's handler, lending itself to the app through the environ so that a stream can
    write its own socket once the head is out (`pushsvc.stream_socket`)."""

    def get_environ(self) -> dict[str, object]:
        environ: dict[str, object] = super().get_environ()
        environ[ENVIRON_KEY] = self
        return environ


def _on_termination(stop: Signal) -> None:
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
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    return sock


def serve_http(settings: Settings, role: Role, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then end every stream and stop within a few seconds."""
    tls = server_context(settings)  # first: a bad pair must stop us before anything starts
    app = create_app(settings, role=role)
    runtime: Runtime = app.extensions["pushsvc"]
    listener = listen(settings.host, settings.port, reuse_port=reuse_port)
    if tls is None:
        server = WSGIServer(listener, app, log=None, error_log=log, handler_class=StreamingHandler)
    else:
        server = WSGIServer(listener, app, log=None, error_log=log, ssl_context=tls)
    stop = Signal()
    _on_termination(stop)
    server.start()
    # The bound port, for port 0 (tests and scripts read this line).
    scheme = "http" if tls is None else "https"
    log.warning(
        "pushsvc %s listening on %s://%s:%d", role, scheme, settings.host, server.server_port
    )
    stop.wait()
    log.warning("pushsvc %s stopping", role)
    runtime.hub.close()  # streams end first, so the server's stop does not wait for them
    server.stop(timeout=5)
    runtime.close()


def aggregate(settings: Settings) -> None:
    """Run an aggregator process on Redis until SIGTERM/SIGINT."""
    runtime = Runtime.build(settings, web=False, aggregate=True)
    assert runtime.aggregator is not None
    stop = Signal()
    _on_termination(stop)
    log.warning(
        "pushsvc aggregator shard %d/%d on %s",
        *settings.shard,
        settings.redacted()["redis_url"],
    )
    stop.wait()
    runtime.close()
