"""The one adapter for streams whose connection pushsvc cannot write itself: TLS (the SSL layer
must do every write), gunicorn and any other WSGI server. The stream is the same
`LiveStream` as on plain TCP; only its sink differs: what it sends is yielded to the WSGI
server from the response's greenlet, which otherwise sleeps.

As a sink it behaves as a socket whose every send would block: `send` hands the bytes to the
response's greenlet and says all of them are left, so that the stream counts them in flight
(its byte bound, the process's budget, the sweeper's look at a stream that takes nothing)
until the server has written them; then `progressed(0)`, from that greenlet, and the stream
sends what waits next. While the server writes, the greenlet is the subscriber's writer
(`Subscriber.writing`): a stream closed then (slow, gone) has `ECONNRESET` raised in it,
the only way out of a write to a peer that reads nothing.

The stream's end ends the response: quietly (the server writes its last chunk) or, when the
client is gone, with `ConnectionResetError`, as a failed write ends it (no last chunk).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator

import gevent.event

from pushsvc.deliver.hub import Subscriber


class ServerWrites:
    """A live stream's sink (`pushsvc.deliver.live_stream.StreamSink`) that the WSGI server
    writes: iterate it in the response (`yield from`)."""

    __slots__ = ("_client", "_data", "_ended", "_gone", "_progressed", "_wakeup")

    chunked = False  # the server frames what it is given

    def __init__(self, client: Subscriber) -> None:
        self._client = client
        self._data: bytes | memoryview | None = None
        self._progressed: Callable[[int], None] | None = None
        self._ended = False
        self._gone = False
        self._wakeup = gevent.event.Event()

    def send(self, data: bytes | memoryview) -> int:
        """Hand `data` to the response's greenlet; all of it is left until the server wrote
        it (`flush`)."""
        assert self._data is None, "a live stream sends again only once all went out"
        self._data = data
        self._wakeup.set()
        return len(data)

    def flush(self, progressed: Callable[[int], None], failed: Callable[[], None]) -> None:
        """`progressed(0)` once the server has written what `send` was given. (`failed` is
        never called: a failed write ends the response, and the stream with it.)"""
        self._progressed = progressed

    def end(self, quiet: bool) -> None:
        """End the response once what was sent is written: quietly, or as a failed write."""
        self._ended = True
        self._gone = not quiet
        self._wakeup.set()

    def __iter__(self) -> Iterator[bytes]:
        """The response's blocks, in the response's greenlet, until the stream ends."""
        client, wakeup = self._client, self._wakeup
        while True:
            data = self._data
            if data is not None:
                client.writing()  # stuck in the server's write: `Subscriber.close` gets it out
                yield bytes(data)
                client.writing(False)
                self._data = None
                progressed, self._progressed = self._progressed, None
                if progressed is not None:
                    progressed(0)  # the stream may send again, here and now
                continue
            if self._ended:
                break
            wakeup.clear()
            wakeup.wait()
        if self._gone:
            # Not the end of a response (its last chunk, on TLS a write that fails loudly) but
            # the end of a connection whose peer left, as for a failed write.
            raise ConnectionResetError(errno.ECONNRESET, "stream closed: the client went away")
