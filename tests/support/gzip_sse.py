"""An SSE reader that offers gzip, as a browser does, and decodes the stream as it arrives: a
raw `http.client` connection (chunks taken off, nothing decoded for us), zlib's gzip decoder
fed each piece the moment it comes (when the server chose gzip), and the WHATWG parser behind
it. `wire` counts the bytes of the body as sent (before decoding)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from harness.live import SSEClient


@dataclass
class GzipSSEClient(SSEClient):
    wire: int = 0
    decoded: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.headers = {"Accept-Encoding": "gzip, deflate, br", **self.headers}
        super().__post_init__()
        gzipped = self.response_headers.get("content-encoding") == "gzip"
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None

    def _decoded(self, chunk: bytes) -> bytes:
        self.wire += len(chunk)
        # Every write of the server ends at a byte boundary (a sync flush): what came
        # decodes whole, now.
        plain = chunk if self._inflate is None else self._inflate.decompress(chunk)
        self.decoded += plain
        return plain
