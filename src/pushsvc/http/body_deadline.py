"""A request body's deadlines, as nginx's `client_body_timeout` gives them, and its refusal.

pywsgi reads a body with no deadline at all: a client that sends its head, then a
`Content-Length` it never fulfils (or a body a byte every few seconds: R.U.D.Y.), held a
greenlet and a descriptor for as long as it liked, and a few hundred such connections took
every descriptor from the producers. `BodyReader` stands between a request's `wsgi.input`
and the connection's buffered reader, and bounds every read of the body, the app's and the
one pywsgi makes after the answer to discard what the app left unread:

* the whole body must arrive within `--body-timeout` of the head;
* no wait for its next piece may last longer than a third of that (a read of many
  bytes is a series of pieces, each as the socket gives it: a body that keeps coming, however
  large, is never cut off while it is within the total deadline), and a quarter more at
  most, drawn once per body: an attack opens its connections in waves (each time the server
  lets go of the last), and without the spread a wave's hundreds of bodies all time out in
  one turn of the server's loop, which holds it while a producer waits (measured:
  docs/performance.md, 'Hostile clients').

A piece already at hand (in the connection's buffer, or what one recv that does not wait
gives: a small body sent with its head) is read with no timer armed and without counting the
connection as waiting on its client (`read_first_with`): nothing waits, so no deadline can
pass during it, and both deadlines are checked before it as before any piece.

Past either, the read raises `BodyTooSlow` (an OSError, which pywsgi's discard takes for a
client that went away) and the connection is marked to close. `refuse` ends a body the app
will not take (413): nothing more of it is read, without end or otherwise.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import NoReturn, Protocol

import gevent

SPREAD = 0.25
"""How much longer than the read timeout a body's reads may wait, at most (a share of it,
drawn once per body): see the module docstring."""


def _nothing() -> None:
    return


def _nothing_waits(waiting: bool) -> None:
    return


class BodyTooSlow(TimeoutError):
    """A request's body did not arrive within its deadline."""


class BodyRefused(ConnectionAbortedError):
    """What a read of a refused body raises: the app answered without it, and the connection
    closes after the answer."""


ReadNow = Callable[[Callable[[int], bytes], int], bytes]
"""`read_now(read1, size)`: `read1(size)` that never waits on the client; b"" when nothing is at
hand (`pushsvc.gevent_private.read_now`)."""


class _Reader(Protocol):
    def read1(self, size: int = ..., /) -> bytes: ...

    def readline(self, size: int | None = ..., /) -> bytes: ...


class BodyReader:
    """The reader a request's body is read through; see the module docstring."""

    __slots__ = (
        "_deadline",
        "_ended",
        "_on_waiting",
        "_raw",
        "_read_now",
        "_read_timeout_s",
        "_to_close",
    )

    def __init__(
        self,
        raw: _Reader,
        *,
        timeout_s: float,
        read_timeout_s: float,
        to_close: Callable[[], None],
        on_waiting: Callable[[bool], None],
    ) -> None:
        self._raw = raw
        self._deadline = time.monotonic() + timeout_s
        self._read_timeout_s = read_timeout_s * (1 + SPREAD * random.random())
        self._to_close = to_close
        """Marks the connection to close after this request."""
        self._on_waiting = on_waiting
        """Told True before a read waits on the client, False after."""
        self._ended: type[OSError] | None = None
        """What every read raises, once the body was refused or ran out of time."""
        self._read_now: ReadNow | None = None
        """Reads a piece with no wait, b"" when none is at hand (`read_first_with`)."""

    @property
    def read_timeout_s(self) -> float:
        """The longest wait for a piece of this body: the read timeout and up to `SPREAD`
        more, drawn for this body."""
        return self._read_timeout_s

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all, up to the body's end, for None or a negative size),
        fewer only at the end of the body."""
        parts: list[bytes] = []
        left = -1 if size is None or size < 0 else size
        while left != 0:
            part = self._piece(self._raw.read1, 1 << 16 if left < 0 else left, now=True)
            if not part:
                break
            parts.append(part)
            if left > 0:
                left -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        # Chunked framing's size lines: short, each read whole within one wait.
        return self._piece(self._raw.readline, -1 if size is None else size)

    def read_first_with(self, read_now: ReadNow) -> None:
        """Try each piece `read` reads with `read_now(read1, size)` first, which must never
        wait on the client and returns b"" when nothing is at hand; the piece is read under
        the deadlines only then. (`readline` never: a line may be cut short by such a read.)"""
        self._read_now = read_now

    def detach(self) -> None:
        """Let go of the connection's handler (its callbacks) once the request is done: the
        environ holds this reader, and the handler the environ, a cycle otherwise."""
        self._to_close = _nothing
        self._on_waiting = _nothing_waits
        self._read_now = None

    def refuse(self) -> None:
        """Read nothing more of this body (it was answered 413); the connection closes after
        the answer."""
        self._ended = BodyRefused
        self._to_close()

    def _piece(self, read: Callable[[int], bytes], size: int, *, now: bool = False) -> bytes:
        if self._ended is not None:
            raise self._ended("the request body was refused, or did not arrive in time")
        wait = min(self._read_timeout_s, self._deadline - time.monotonic())
        if wait <= 0:
            self._expire()
        if now and self._read_now is not None:
            part = self._read_now(read, size)
            if part:
                return part  # nothing waited: no deadline could pass, nobody waited on
        timer = gevent.Timeout.start_new(wait)
        self._on_waiting(True)
        try:
            return read(size)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            # The timer is the exception, and its traceback holds this frame, which holds
            # the timer: a cycle through every frame of the connection's greenlet and its
            # handler, socket and buffers, that only a full pass of the collector would free
            # (under an attack, a long one: docs/performance.md, 'Hostile clients'). Cut, they
            # go when the connection does.
            exc.__traceback__ = None
            self._expire()
        finally:
            timer.close()
            self._on_waiting(False)

    def _expire(self) -> NoReturn:
        self._ended = BodyTooSlow  # pywsgi's discard after the answer waits no more
        self._to_close()
        raise BodyTooSlow("the request body did not arrive in time")
