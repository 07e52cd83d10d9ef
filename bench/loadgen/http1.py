"""The HTTP/1.x response head, decoded strictly (pure); the chunked body is `dechunk.py`'s.

Only what an SSE client needs: a status line, headers, and a body that is either
chunked, of known length, or read until the server closes (HTTP/1.0 streams).
Anything malformed raises ProtocolError: a benchmark must not count bytes it
could not frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?")
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
