"""A strict, fast event-stream parser for what the servers under test send (pure).

It follows the WHATWG "Parsing an event stream" rules on bytes: a blank line
dispatches; `:` starts a comment; without a colon the whole line is the field
name; one space after the colon is removed; `data` lines join with LF; an
empty data buffer dispatches nothing; `id` persists across events unless it
holds NUL; `retry` takes ASCII digits only; unknown fields are ignored; one
leading BOM is dropped; an unterminated block is never dispatched.

It works on bytes and does not decode UTF-8 (the JSON parser checks that).
Lines ending in CR or CRLF are valid SSE but neither pushsvc nor Flask-SSE
sends them: rather than mis-split them, the parser raises ProtocolError, so a
run never reports counts it did not parse correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.http1 import ProtocolError

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Message:
    """One dispatched event: its type (b"message" by default), data, and last event id."""

    event: bytes
    data: bytes
    id: bytes = b""


class EventStreamParser:
    """Feed the response body as it arrives; each call returns the messages it completed."""

    __slots__ = ("_at_start", "_data", "_event", "_partial", "comments", "last_id", "retry")

    def __init__(self) -> None:
        self._at_start = True
        self._partial = b""
        self._data: list[bytes] = []
        self._event = b""
        self.last_id = b""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[Message]:
        if b"\r" in chunk:
            raise ProtocolError("CR in the event stream (this parser handles LF line ends only)")
        buffer = self._partial + chunk if self._partial else chunk
        if self._at_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._partial = buffer
                return []
            self._at_start = False
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        out: list[Message] = []
        for line in lines:
            if not line:
                if self._data:
                    data = b"\n".join(self._data)
                    out.append(Message(self._event or b"message", data, self.last_id))
                self._data = []
                self._event = b""
            elif line[0] == 0x3A:  # ":" — a comment, e.g. a heartbeat
                self.comments += 1
            else:
                name, colon, value = line.partition(b":")
                if colon and value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    self._data.append(value)
                elif name == b"event":
                    self._event = value
                elif name == b"id":
                    if b"\0" not in value:
                        self.last_id = value
                elif name == b"retry" and value.isdigit() and value.isascii():
                    self.retry = int(value)
        return out
