"""A TCP proxy that loses answers: what a connection dropped after the server acted looks like
to a client (the idempotency and client tests)."""

from __future__ import annotations

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


class AnswerLosingProxy:
    """A TCP proxy in front of a pushsvc server, one request per connection: it forwards the
    request, waits for the server's whole answer and then, for the first `lose` requests,
    closes the client's connection without sending it - the connection dropped after the
    server logged the batch. Later requests get their answers."""

    def __init__(self, upstream: int, *, lose: int = 1) -> None:
        self.upstream = upstream
        self.lose = lose
        self.heads: list[bytes] = []
        self.lost = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request forwarded, in order."""
        found = (re.search(rb"(?im)^idempotency-key:\s*(\S+)\s*$", h) for h in self.heads)
        return [m[1].decode() if m else "" for m in found]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
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

    def close(self) -> None:
        self._listener.close()
