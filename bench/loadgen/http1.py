"""The HTTP/1.x response head and chunked transfer-coding, decoded strictly (pure).

Only what an SSE client needs: a status line, headers, and a body that is either
chunked, of known length, or read until the server closes (HTTP/1.0 streams).
Anything malformed raises ProtocolError: a benchmark must not count bytes it
could not frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
MAX_HEAD = 64 * 1024
MAX_SIZE_LINE = 1024


class ProtocolError(Exception):
    """The server sent bytes that are not valid HTTP/1.x or SSE framing."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    version: str
    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        codings = self.headers.get("transfer-encoding", "")
        return codings.replace(" ", "").lower().split(",")[-1:] == ["chunked"]

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        if not raw.isdigit():
            raise ProtocolError(f"bad Content-Length {raw!r}")
        return int(raw)


def split_head(buffer: bytes | bytearray) -> tuple[ResponseHead, bytes] | None:
    """(head, the body bytes after it) once `buffer` holds the whole head, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ProtocolError("response head too large")
        return None
    return parse_head(bytes(buffer[:end])), bytes(buffer[end + 4 :])


def parse_head(head: bytes) -> ResponseHead:
    """The status line and headers, without the blank line that ends them."""
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b"\n" in line:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return ResponseHead(f"1.{match[1].decode()}", int(match[2]), headers)


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoding (RFC 9112 §7.1); `done` after the last."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0
        self._state = "size"
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The payload bytes completed by `data` (chunk boundaries removed)."""
        buffer = self._buffer
        buffer += data
        out = bytearray()
        while buffer:
            if self._state == "data":
                take = min(self._remaining, len(buffer))
                out += buffer[:take]
                del buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "crlf"
            elif self._state == "crlf":
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                del buffer[:2]
                self._state = "size"
            elif self._state in ("size", "trailer"):
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_SIZE_LINE:
                        raise ProtocolError("chunk size line too long")
                    break
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                if self._state == "size":
                    self._size_line(line)
                elif not line:
                    self._state = "end"
                    self.done = True
            else:
                raise ProtocolError("bytes after the last chunk")
        return bytes(out)

    def _size_line(self, line: bytes) -> None:
        size = line.split(b";", 1)[0].rstrip(b" \t")
        if not _HEX.fullmatch(size):
            raise ProtocolError(f"bad chunk size line {line[:80]!r}")
        self._remaining = int(size, 16)
        self._state = "data" if self._remaining else "trailer"
