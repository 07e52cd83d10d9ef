"""Direct writes: the hub writes an update straight to an idle subscriber's socket.

Without this, every delivery wakes the subscriber's greenlet, which takes the update
from its queue and yields it to the WSGI server, which writes it: two greenlet switches
and several Python calls per subscriber per update. With it, the hub's loop writes the
bytes itself with one non-blocking `write(2)` while the subscriber's greenlet stays
parked; only when the socket cannot take everything at once does the update go through
the queue (or, for the rest of a partly written frame, through a blocking `sendall` by
the subscriber's own greenlet).

It is safe because everything runs on one thread: the hub writes only while the
subscriber's greenlet is parked waiting for updates, never while the WSGI server is in
the middle of writing for it. The framing matches the server's (HTTP/1.1 chunked, or
raw for HTTP/1.0), and the response headers were written before the stream parks.

Only gevent's own WSGI server (`pushsvc serve` / `pushsvc web`) provides the socket;
under another server (gunicorn) streams simply use the queue.
"""

from __future__ import annotations

import os
from typing import Any

ENVIRON_KEY = "pushsvc.direct_writer"


class ClientGone(Exception):
    """The subscriber's connection is closed."""


class DirectWriter:
    """Non-blocking writes to one response's socket, framed as its WSGI handler frames them."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Any) -> None:
        # The gevent WSGIHandler: its socket, and whether it chose chunked encoding,
        # which it knows once the response headers are out.
        self._handler = handler

    def _framed(self, block: bytes) -> bytes:
        if self._handler.response_use_chunked:
            return b"%x\r\n%b\r\n" % (len(block), block)
        return block

    def send_now(self, block: bytes) -> bytes | None:
        """Write what the socket takes now. None: nothing was written (use the queue);
        otherwise the framed bytes still to write (b"" when all went out).

        Raises ClientGone when the connection is closed."""
        data = self._framed(block)
        sock = self._handler.socket
        if sock is None:
            raise ClientGone
        try:
            written = os.write(sock.fileno(), data)
        except BlockingIOError:
            return None
        except OSError:
            raise ClientGone from None
        return data[written:]

    def send_all(self, data: bytes) -> None:
        """Write already framed bytes, waiting cooperatively as long as it takes.

        Socket errors propagate as they do from the server's own writes, so that the
        server closes the connection (quietly, for a reset or broken pipe)."""
        sock = self._handler.socket
        if sock is None:
            raise ClientGone
        sock.sendall(data)
