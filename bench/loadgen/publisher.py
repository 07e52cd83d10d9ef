"""The producer side: M events POSTed one by one on a keep-alive HTTP/1.1 connection.

One connection and one request at a time keep publication order equal to value
order, so out-of-order deliveries are the server's doing. At rate `None` ("max")
the next request goes out as soon as the previous one is answered.

With `persist`, an event whose POST fails (refused, reset, a 5xx) is posted again after a
short pause until it is accepted or the deadline passes, under an `Idempotency-Key` of its
own: the server logs it once however many tries it took, so that a run through a server's
restart still publishes every value exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Collection, Sequence

from bench.loadgen.dechunk import Dechunker
from bench.loadgen.http1 import ProtocolError, parse_head
from bench.loadgen.kinds import publish_body
from bench.posting import Published

_PERSIST_PAUSE_S = 0.1
"""With `persist`: the pause before an event is posted again (a restarting server)."""


class Publisher:
    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        ok_status: int | Collection[int],
        *,
        quickack: bool = False,
        body: Callable[[int, float], bytes] = publish_body,
        persist: bool = False,
        content_type: str = "application/json",
        headers: Sequence[str] = (),
    ) -> None:
        """`headers`: more `Name: value` lines sent with every POST (a publisher's token)."""
        self._host, self._port, self._path = host, port, path
        self._body = body
        self._head_fields = b"Content-Type: %s\r\n%s" % (
            content_type.encode(),
            b"".join(b"%s\r\n" % header.encode() for header in headers),
        )
        self._ok = frozenset({ok_status} if isinstance(ok_status, int) else ok_status)
        self._quickack = quickack
        self._persist = persist
        self._run_id = uuid.uuid4().hex[:12]  # the idempotency keys of this run's events
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, events: int, rate: float | None, deadline: float) -> Published:
        """Publish values 0..events-1, paced at `rate`/s, stopping at loop time `deadline`."""
        result = Published()
        loop = asyncio.get_running_loop()
        start = loop.time()
        result.first_sent = time.time()
        try:
            for value in range(events):
                if rate is not None:
                    delay = start + value / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if not await self._publish(value, deadline, result):
                    result.errors["deadline"] = events - value
                    break
        finally:
            await self.disconnect()
        return result

    async def _publish(self, value: int, deadline: float, result: Published) -> bool:
        """Post one event (until it is accepted, with `persist`); False once `deadline` passed
        before an answer."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                status = await asyncio.wait_for(self._post(value), remaining)
            except (OSError, ProtocolError, asyncio.IncompleteReadError, TimeoutError) as exc:
                key = type(exc).__name__
                await self.disconnect()
            else:
                if status in self._ok:
                    result.accepted += 1
                    result.last_accepted = time.time()
                    return True
                key = f"status {status}"
                if not self._persist or status < 500:
                    result.errors[key] = result.errors.get(key, 0) + 1
                    return True
            result.errors[key] = result.errors.get(key, 0) + 1
            if not self._persist:
                return True
            await asyncio.sleep(_PERSIST_PAUSE_S)
        return False

    async def _post(self, value: int) -> int:
        key = f"{self._run_id}-{value}" if self._persist else None
        return await self.post(self._path, self._body(value, time.time()), idempotency_key=key)

    async def post(self, path: str, body: bytes, *, idempotency_key: str | None = None) -> int:
        """POST `body` (JSON unless the publisher was given another content type) to `path` on
        the keep-alive connection; the response's status.
        Raises OSError, ProtocolError or asyncio.IncompleteReadError (then `disconnect`)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        key = b"Idempotency-Key: %s\r\n" % idempotency_key.encode() if idempotency_key else b""
        self._writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\n%s%sContent-Length: %d\r\n\r\n%s"
            % (
                path.encode(),
                self._host.encode(),
                self._port,
                self._head_fields,
                key,
                len(body),
                body,
            )
        )
        if self._quickack:
            # A server that writes its response head and body in two sends, with Nagle on,
            # holds the body until our delayed ACK (~40 ms) releases it; ACK at once instead.
            sock = self._writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        head = parse_head((await self._reader.readuntil(b"\r\n\r\n"))[:-4])
        if head.chunked:
            decoder = Dechunker()
            while not decoder.done:
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise ProtocolError("connection closed inside a chunked response")
                decoder.feed(chunk)
        else:
            length = head.content_length
            if length is None:
                raise ProtocolError("a response with neither Content-Length nor chunks")
            await self._reader.readexactly(length)
        if head.headers.get("connection", "").lower() == "close" or head.version == "1.0":
            await self.disconnect()
        return head.status

    async def disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
