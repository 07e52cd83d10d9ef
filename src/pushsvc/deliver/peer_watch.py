"""Noticing, without writing, that a stream's client has gone.

A stream writes only when there is an update or a heartbeat is due, so a client that left an
idle stream (a proxy restart, a phone changing networks) would hold its stream slot, its hub
subscriber and its node subscription until a write to it failed, up to `--heartbeat` later. While
a stream is open its client has nothing to send (an EventSource never does), so its connection
turning readable means the client closed it (FIN), reset it (RST) or, rarely, sent something.
One io watcher per stream on the socket's descriptor tells: no greenlet, no timer, nothing at
all to do until the kernel says it is readable.

When it is readable:
* `recv(MSG_PEEK)` says end of stream (FIN) or fails (RST): the client is gone;
* bytes are waiting instead: on TLS a close_notify alert ahead of the FIN, else bytes a client
  sent on its stream. They stay unread (they may be its next request). A watcher would fire
  for as long as they wait, so it gives way to a look at the TCP state (`TCP_INFO`: it leaves
  ESTABLISHED once the FIN or a reset is in) every `POLL_S`, for this rare stream only; where
  the system has no `TCP_INFO` the stream is left to its next write.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from pushsvc.gevent_private import connection_of, loop_watcher, os_socket

POLL_S = 0.25
"""How often a stream with unread bytes looks at its TCP state (well within the one second in
which a stream must end after its client goes)."""

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_READ = 1  # libev's EV_READ
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_TCP_ESTABLISHED = 1  # tcpi_state, the first byte of struct tcp_info (Linux)


class PeerWatch:
    """Calls `on_gone` once, from the event loop, when the peer of `sock` closes or resets the
    connection. `stop()` it before the socket is closed (its descriptor may be reused)."""

    __slots__ = ("_io", "_on_gone", "_sock", "_timer")

    def __init__(self, sock: Any, on_gone: Callable[[], None]) -> None:
        self._sock = os_socket(sock)
        self._on_gone = on_gone
        self._timer: Any = None
        self._io: Any = loop_watcher("io", self._sock.fileno(), _READ)
        self._io.start(self._readable)

    def stop(self) -> None:
        for watcher in (self._io, self._timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._io = self._timer = None

    def _readable(self) -> None:
        try:
            waiting = self._sock.recv(1, _PEEK)
        except BlockingIOError:
            return  # a spurious wake-up: nothing there after all
        except OSError:  # ECONNRESET, or ETIMEDOUT from keep-alive probes
            self._gone()
            return
        if not waiting or self._closing():  # b"": the FIN
            self._gone()
        else:
            self._io.stop()
            if _TCP_INFO is not None:
                self._timer = loop_watcher("timer", POLL_S, POLL_S)
                self._timer.start(self._poll)

    def _poll(self) -> None:
        if self._closing():
            self._gone()

    def _closing(self) -> bool:
        """Whether the connection has left ESTABLISHED: a FIN (behind unread bytes) or a
        reset came in."""
        if _TCP_INFO is None:
            return False
        try:
            info = self._sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)
        except OSError:
            return True
        return info[0] != _TCP_ESTABLISHED

    def _gone(self) -> None:
        self.stop()
        self._on_gone()


def watch_stream(environ: Mapping[str, object], on_gone: Callable[[], None]) -> PeerWatch | None:
    """Watch the connection a stream's response goes out on: pywsgi's (`pushsvc serve`/`web`,
    TLS included) or gunicorn's gevent worker's. None where the WSGI server does not say."""
    sock = connection_of(environ)
    return None if sock is None else PeerWatch(sock, on_gone)
