"""A strict, incremental event-stream parser: what a browser's EventSource sees.

It follows the WHATWG HTML standard, "Parsing an event stream" and
"Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html), step by
step, so tests judge pushsvc's bytes by the standard rather than by the
encoder that produced them:

* bytes are decoded as UTF-8 with replacement characters, and one leading
  BOM is dropped;
* lines end with CRLF, LF or CR, even when a chunk ends between CR and LF;
* a blank line dispatches; a line starting with `:` is a comment; without a
  colon the whole line is the field name and the value is empty; one space
  after the colon is removed;
* `data` values are joined with LF; `event` sets the type (empty: "message");
  `id` sets the last event ID unless it contains NUL, and that ID persists
  across events; `retry` takes ASCII digits only; other fields are ignored;
* a block whose data buffer is empty fires nothing, and a block not ended by
  a blank line is never dispatched.

Beyond the standard (for tests and tools): `comments` keeps every comment line's text
and `retry` the reconnection time last set.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """A dispatched MessageEvent."""

    data: str
    event: str = "message"
    id: str = ""
    """The event's lastEventId: the last `id` seen on the stream so far."""
    retry: int | None = None
    """The stream's reconnection time (ms) when the event fired; None if never set."""


class EventStreamParser:
    """Feed bytes as they arrive; each call returns the messages they completed."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True
        self._partial = ""
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._id_buffer = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf and text:
            # The previous chunk ended with CR: an LF now belongs to that CRLF.
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._partial + text if self._partial else text
        out: list[SSEMessage] = []
        if "\r" not in buffer:
            # The common case (LF line ends only): one split, not a regex match per line.
            lines = buffer.split("\n")
            self._partial = lines.pop()
            line_done = self._line
            for line in lines:
                line_done(line, out)
            return out
        start = 0
        for match in _EOL.finditer(buffer):
            self._line(buffer[start : match.start()], out)
            start = match.end()
            if match.group() == "\r" and start == len(buffer):
                self._skip_lf = True
        self._partial = buffer[start:]
        return out

    @property
    def idle(self) -> bool:
        """True between messages: no partial line and no field waiting for a blank line."""
        return not self._partial and not self._data and not self._event

    def _line(self, line: str, out: list[SSEMessage]) -> None:
        if not line:
            self._dispatch(out)
            return
        name, colon, value = line.partition(":")
        if not name and colon:
            self.comments.append(value)
            return
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and _DIGITS.fullmatch(value):
            self.retry = int(value)

    def _dispatch(self, out: list[SSEMessage]) -> None:
        self.last_event_id = self._id_buffer
        if not self._data:
            self._event = ""
            return
        # Each data line appended value + LF; the final LF is then removed.
        data = "\n".join(self._data)
        out.append(SSEMessage(data, self._event or "message", self.last_event_id, self.retry))
        self._data = []
        self._event = ""


def parse(stream: bytes) -> list[SSEMessage]:
    """Every message a complete stream dispatches."""
    return EventStreamParser().feed(stream)
