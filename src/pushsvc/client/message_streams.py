"""What `Client.messages()` and `AsyncClient.messages()` return: an iterator of the application's
messages (`Message`) and gaps (`Gap`), and the id to resume from, `last_event_id`.

An object rather than a bare generator, for that id: a program that keeps it across restarts
resumes exactly where it stopped. It is the last id the stream saw, which is also the id of a
messages stream's head (an `id:` with no data, sent before any message): a program stopped
before its first message still resumes with what was published meanwhile. Every message before
that id has been handed on, since the ids of a stream only grow.

The reading itself (connections, `Last-Event-ID`, backoff) is the clients' one stream loop over
a `StreamCursor`; this module only turns its raw messages into typed items.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType

from pushsvc.client.models import Gap, Message, message_item
from pushsvc.client.stream import RawMessage, StreamCursor

MessageItem = Message | Gap


class MessageStream(Iterator[MessageItem]):
    """The messages of a `Client.messages()` subscription, for ever (or until `close()`),
    reconnecting as a browser's EventSource does. Closing it (or leaving its `with`) ends its
    connection."""

    def __init__(
        self, cursor: StreamCursor, raws: Generator[RawMessage | None, None, None]
    ) -> None:
        self._cursor = cursor
        self._items = _items(raws)

    @property
    def last_event_id(self) -> str | None:
        """The id to resume this stream from (`messages(…, last_event_id=…)`): the last one it
        saw; None before it saw any."""
        return self._cursor.last_event_id

    def __iter__(self) -> MessageStream:
        return self

    def __next__(self) -> MessageItem:
        return next(self._items)

    def close(self) -> None:
        self._items.close()

    def __enter__(self) -> MessageStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _items(
    raws: Generator[RawMessage | None, None, None],
) -> Generator[MessageItem, None, None]:
    # Closing this generator closes the stream's, which ends its connection.
    with contextlib.closing(raws) as stream:
        for raw in stream:
            if raw is not None:
                yield message_item(raw.event, raw.id or "", raw.data)


class AsyncMessageStream(AsyncIterator[MessageItem]):
    """`MessageStream` for asyncio: `async for`, `aclose()`, `async with`."""

    def __init__(self, cursor: StreamCursor, raws: AsyncGenerator[RawMessage, None]) -> None:
        self._cursor = cursor
        self._items = _async_items(raws)

    @property
    def last_event_id(self) -> str | None:
        """The id to resume this stream from (see `MessageStream.last_event_id`)."""
        return self._cursor.last_event_id

    def __aiter__(self) -> AsyncMessageStream:
        return self

    async def __anext__(self) -> MessageItem:
        return await anext(self._items)

    async def aclose(self) -> None:
        await self._items.aclose()

    async def __aenter__(self) -> AsyncMessageStream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _async_items(
    raws: AsyncGenerator[RawMessage, None],
) -> AsyncGenerator[MessageItem, None]:
    # Closed with this generator, in the same task: see `AsyncClient._stream`. A program
    # that breaks out of its loop leaves this one to asyncio, which closes it, and the raw
    # stream with it, in one task.
    async with contextlib.aclosing(raws) as stream:
        async for raw in stream:
            yield message_item(raw.event, raw.id or "", raw.data)
