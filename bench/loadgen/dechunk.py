"""`Transfer-Encoding: chunked` decoding (RFC 9112 §7.1) that passes payload bytes through
uncopied (pure).

At hundreds of megabytes per second of SSE, copying every byte into and out of a buffer is
a cost the server under test would pay for in CPU on a shared machine. Here a read that
falls inside one chunk is returned as the very same bytes object, and only reads that
straddle a chunk boundary are sliced. Anything malformed raises ProtocolError.
"""

from __future__ import annotations

import re

from bench.loadgen.http1 import MAX_SIZE_LINE, ProtocolError

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_SIZE, _DATA, _CRLF, _TRAILER, _END = range(5)


class Dechunker:
    """Feed the body as it arrives; each call returns the payload pieces it completed, in order."""

    __slots__ = ("_line", "_remaining", "_state")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""  # a size or trailer line (or the CRLF after data) split across reads

    @property
    def done(self) -> bool:
        """The last chunk and its trailer were read."""
        return self._state == _END

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, size - pos)
                out.append(data if take == size else data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _CRLF
            elif state == _END:
                raise ProtocolError("bytes after the last chunk")
            else:
                end = data.find(b"\n", pos)
                if end < 0:
                    self._line += data[pos:]
                    if len(self._line) > MAX_SIZE_LINE:
                        raise ProtocolError("chunk size line too long")
                    break
                line, self._line = self._line + data[pos : end + 1], b""
                pos = end + 1
                if not line.endswith(b"\r\n"):
                    raise ProtocolError(f"a chunk line not ended by CRLF: {line[:80]!r}")
                self._line_done(line[:-2])
        return out

    def _line_done(self, line: bytes) -> None:
        if self._state == _CRLF:
            if line:
                raise ProtocolError("chunk not followed by CRLF")
            self._state = _SIZE
        elif self._state == _SIZE:
            size = line.split(b";", 1)[0].rstrip(b" \t")
            if not _HEX.fullmatch(size):
                raise ProtocolError(f"bad chunk size line {line[:80]!r}")
            self._remaining = int(size, 16)
            self._state = _DATA if self._remaining else _TRAILER
        elif not line:  # _TRAILER: a blank line ends the trailer section
            self._state = _END
