"""A TCP proxy that loses answers: what a connection dropped after the server acted looks like
to a client (the idempotency and client tests)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading


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
