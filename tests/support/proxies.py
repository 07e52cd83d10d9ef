"""TCP proxies for faults a client meets on its way to a server: answers lost after the server
acted (the idempotency and client tests), and the connections of a browser cut, refused or
sent to a restarted process (the browser tests on a Redis Cluster)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from typing import NamedTuple


def _read_message(sock: socket.socket) -> bytes:
    """One HTTP message (head and a Content-Length body) from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the connection closed mid-message")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    size = int(length[1]) if length else 0
    while len(body) < size:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the connection closed mid-body")
        body += chunk
    return head + b"\r\n\r\n" + body


class _Listener:
    """A proxy's listening socket on a free port, each accepted connection handed to
    `_serve` in a thread of its own, until `close`."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()


class AnswerLosingProxy(_Listener):
    """A TCP proxy in front of a pushsvc server, one request per connection: it forwards the
    request, waits for the server's whole answer and then, for the first `lose` requests,
    closes the client's connection without sending it - the connection dropped after the
    server logged the batch. Later requests get their answers."""

    def __init__(self, upstream: int, *, lose: int = 1) -> None:
        self.lose = lose
        self.heads: list[bytes] = []
        self.lost = 0
        super().__init__(upstream)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request forwarded, in order."""
        found = (re.search(rb"(?im)^idempotency-key:\s*(\S+)\s*$", h) for h in self.heads)
        return [m[1].decode() if m else "" for m in found]

    def _serve(self, client: socket.socket) -> None:
        threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        # A client may open a connection and close it unused (a pool closing): nothing to do.
        with contextlib.suppress(EOFError, OSError):
            self._pass_one(client)

    def _pass_one(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as server:
            message = _read_message(client)
            server.sendall(message)
            answer = _read_message(server)
            with self._lock:
                self.heads.append(message.partition(b"\r\n\r\n")[0])
                losing = self.lost < self.lose
                self.lost += losing
            if not losing:
                client.sendall(answer)


class RedisAnswerLosingProxy(_Listener):
    """A TCP proxy in front of a redis-server: bytes pass both ways as they come, until
    `lose_answer_to(marker)`; then the first command sent with `marker` in it (a script's
    sha1) reaches Redis, which runs it, and its connection is closed instead of getting the
    answer - a connection lost while the answer was on its way."""

    def __init__(self, upstream: int) -> None:
        self.lost = 0
        self._marker: bytes | None = None
        self._doomed: set[socket.socket] = set()
        super().__init__(upstream)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_answer_to(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream))
        threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
        threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while chunk := client.recv(65536):
                with self._lock:
                    if self._marker is not None and self._marker in chunk:
                        self._marker = None
                        self._doomed.add(client)
                server.sendall(chunk)
        except OSError:
            pass
        finally:
            server.close()

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := server.recv(65536):
                with self._lock:
                    doomed = client in self._doomed
                    self.lost += doomed
                if doomed:
                    return  # the command ran; its answer goes nowhere
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the other thread's recv
                sock.close()


class ProxiedRequest(NamedTuple):
    """The head of one request a `StreamProxy` forwarded: its target and its Last-Event-ID."""

    path: str
    last_event_id: str | None


class StreamProxy(_Listener):
    """A TCP proxy in front of a pushsvc web process, for a browser whose streams a test cuts:
    bytes pass both ways as they come, to the port `upstream` (a test points it at a process
    started anew). A connection whose upstream refuses is closed unanswered, as is every new
    one while `hold()` lasts (a network that is down; `release()` ends it); `drop()` closes
    every open connection at once (a network cut: both ends see it). `requests` keeps the head
    of every request forwarded, in order, its Last-Event-ID with it."""

    def __init__(self, upstream: int) -> None:
        self.requests: list[ProxiedRequest] = []
        self._held = False
        self._open: set[socket.socket] = set()
        super().__init__(upstream)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def streams(self, path: str) -> list[ProxiedRequest]:
        """The requests forwarded for `path` (with its query), in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def hold(self) -> None:
        with self._lock:
            self._held = True
        self.drop()

    def release(self) -> None:
        with self._lock:
            self._held = False

    def drop(self) -> None:
        with self._lock:
            doomed = list(self._open)
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes both of the pair's threads

    def close(self) -> None:
        super().close()
        self.hold()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            held, upstream = self._held, self.upstream
        try:
            if held:
                raise ConnectionRefusedError("held")
            server = socket.create_connection(("127.0.0.1", upstream))
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.update((client, server))
        threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
        threading.Thread(target=self._pass, args=(server, client), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server, noting each request's head (GETs: heads only, no bodies)."""
        pending = b""

        def note(chunk: bytes) -> None:
            nonlocal pending
            pending += chunk
            while b"\r\n\r\n" in pending:
                head, _, pending = pending.partition(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")
                found = re.search(rb"(?im)^last-event-id:[ \t]*([^\r\n]*?)[ \t]*\r?$", head)
                path = target[1].decode() if len(target) > 1 else ""
                with self._lock:
                    self.requests.append(ProxiedRequest(path, found[1].decode() if found else None))

        self._pass(client, server, note)

    def _pass(
        self,
        source: socket.socket,
        sink: socket.socket,
        note: Callable[[bytes], None] = lambda chunk: None,
    ) -> None:
        try:
            while chunk := source.recv(65536):
                note(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, sink))
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the other thread's recv
                sock.close()
