"""Answers read off one keep-alive HTTP/1.1 connection, in order: what a client that
pipelines its requests (sends several before reading) reads back, without http.client's cost
per answer. For answers framed by Content-Length (every answer to a POST here)."""

from __future__ import annotations

import socket


class Answers:
    """The answers on `conn`, in order: status and body each."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.buffer = conn, b""

    def next(self) -> tuple[int, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._read()
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = dict(line.lower().split(":", 1) for line in head[1:])
        length = int(fields.get("content-length", "0"))
        while len(self.buffer) < end + 4 + length:
            self._read()
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        return status, body

    def _read(self) -> None:
        chunk = self.conn.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk
