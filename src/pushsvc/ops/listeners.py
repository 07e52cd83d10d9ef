"""A server's listening sockets: bound before anything starts, so that an address in use stops
the process with one line, and shared by one server's own workers only.

`serve --workers N` (and `serve --data-dir`) runs its web workers on one port, the kernel
spreading connections over their sockets (SO_REUSEPORT). The kernel lets any process of the
same user add a socket to such a port, and a second server that did would take a share of
the first one's connections. So a server never joins a port blindly:

* `exclusive_port` first binds the address without SO_REUSEPORT, which any socket listening
  there refuses (SO_REUSEADDR all the same: a server stopped a moment ago leaves its closed
  connections in TIME-WAIT, which is no server listening);
* the supervisor then opens every worker's socket itself, listening from the start
  (`shared_listeners`), and hands each to its worker as an inherited file descriptor
  (`inherited`). Between the check and the first socket listening lie a few system calls, not
  a worker's start; a worker restarted gets its socket back, with the connections that came
  meanwhile still queued on it.

A plain `serve`, `web` or `aggregate --metrics-port` binds without SO_REUSEPORT (`listen`): a
port anyone listens on refuses it, and no one can join it.
"""

from __future__ import annotations

import socket

from pushsvc.errors import CannotListen

LISTEN_BACKLOG = 2048


def _socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket on (host, port), or CannotListen. `reuse_port`: one of a server's
    workers' sockets on a port they share (`shared_listeners`)."""
    sock = _socket(host)
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


def exclusive_port(host: str, port: int) -> None:
    """CannotListen when a socket listens on (host, port) already, whoever's it is (a port
    0 is always free)."""
    if port == 0:
        return
    probe = _socket(host)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise CannotListen.on(host, port, exc) from None
    finally:
        probe.close()


def shared_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (port 0: one the kernel picks), the kernel
    spreading connections over them; CannotListen when another server listens there."""
    exclusive_port(host, port)
    first = listen(host, port, reuse_port=True)
    sockets = [first]
    try:
        bound = int(first.getsockname()[1])
        sockets += [listen(host, bound, reuse_port=True) for _ in range(count - 1)]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def inherited(fd: int) -> socket.socket:
    """The listening socket a supervisor handed this worker (`--listen-fd`)."""
    return socket.socket(fileno=fd)
