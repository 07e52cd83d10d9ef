"""`AsyncClient`: `Client`'s methods for asyncio programs (FastAPI services, aiohttp workers,
notebooks), on httpx's AsyncClient. Both run the same plans (calls.py) and stream cursor
(stream.py); see `Client` for what each method does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse

from pushsvc.client import calls
from pushsvc.client.async_batcher import ASYNC_DEFAULTS, AsyncBatcher
from pushsvc.client.batching import BatchSettings
from pushsvc.client.calls import UNSET, Call, GroupChoice, Plan, Publishable, Time
from pushsvc.client.errors import ApiError, ClientError, Unreachable
from pushsvc.client.live_frames import DEFAULT_MAX_ROWS, LiveFrame, interval_seconds
from pushsvc.client.message_streams import AsyncMessageStream
from pushsvc.client.models import StreamMessage, typed_message
from pushsvc.client.published import Published
from pushsvc.client.retry import Backoff, async_retrying
from pushsvc.client.session import Session
from pushsvc.client.stream import MessageOptions, RawMessage, StreamCursor, StreamOptions

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


class AsyncClient:
    """pushsvc for asyncio programs: `Client`'s methods, awaited; streams are async iterators.

    async with AsyncClient("http://127.0.0.1:8000") as client:
        await client.publish("orders", {"value": 12.5})
        async for message in client.subscribe("orders"):
            ...
        async for message in client.messages("orders"):
            ...  # Message(id, type, data) as published, or a Gap
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        backoff: Backoff | None = None,
        timeout: float = 30.0,
        stream_timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        batching: BatchSettings | None = ASYNC_DEFAULTS,
    ) -> None:
        self.session = Session(url, token, timeout=timeout, stream_timeout=stream_timeout)
        self.backoff = backoff or Backoff()
        self._own_http = http is None
        self._http = (
            http
            if http is not None
            # Every subscription holds a connection: no pool limit below what a program
            # subscribes to (httpx's default is 100 connections).
            else httpx.AsyncClient(
                timeout=self.session.timeout, limits=httpx.Limits(max_connections=None)
            )
        )
        self._sleep = sleep
        self._batcher = (
            None
            if batching is None
            else AsyncBatcher(self._run_now, batching, backoff=self.backoff, sleep=sleep)
        )

    async def flush(self) -> None:
        """Send every `publish` call held for its batch and wait for the answers."""
        if self._batcher is not None:
            await self._batcher.flush()

    async def aclose(self) -> None:
        """Sends what `publish` holds and waits for its answers, then closes the HTTP client
        (if made here)."""
        await self.flush()
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Requests ------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        events: Publishable | None = None,
        *,
        data: object = UNSET,
        type: str | None = None,  # the message's type, as Flask-SSE names it
        backoff: Backoff | None = None,
    ) -> Published:
        """`Client.publish`, awaited: the call's `Published` once its batch is answered. The
        calls other tasks make meanwhile share its request (`batching`; by default none
        waits for more to come). With `batching=None`, or a `backoff` for this call, it is
        sent alone."""
        publishable = calls.publishable(events, data, type)
        if self._batcher is None or backoff is not None:
            return await self._run(calls.publish(topic, publishable), backoff)
        return await self._batcher.publish(topic, publishable)

    async def delete_topic(self, topic: str) -> bool:
        try:
            await self._run(calls.delete_topic(topic))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def history(
        self, topic: str, *, since: Time | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        return await self._run(calls.history(topic, since=since, limit=limit))

    async def history_page(
        self, topic: str, *, since: Time | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        return await self._run(calls.history_page(topic, since=since, limit=limit))

    async def series(
        self,
        topic: str,
        *,
        since: Time | None = None,
        until: Time | None = None,
        resolution: str = "auto",
        points: int | None = None,
        group: GroupChoice | None = None,
    ) -> pd.DataFrame:
        return await self._run(
            calls.series(
                topic,
                since=since,
                until=until,
                resolution=resolution,
                points=points,
                group=group,
            )
        )

    async def forecast(self, topic: str, *, group: GroupChoice | None = None) -> pd.DataFrame:
        return await self._run(calls.forecast(topic, group=group))

    async def stats(self, topic: str, *, group: GroupChoice | None = None) -> dict[str, Any]:
        return await self._run(
            calls.get_json(calls.topic_path(topic, "stats"), calls.group_params(group))
        )

    async def topics(self) -> list[dict[str, Any]]:
        return await self._run(calls.topics())

    async def rules(self) -> dict[str, Any]:
        return await self._run(calls.get_json("rules"))

    async def alerts(self) -> list[dict[str, Any]]:
        return await self._run(calls.alerts())

    async def _run(self, plan: Plan[T], backoff: Backoff | None = None) -> T:
        """Run `plan` once what `publish` holds is sent (see `Client._run`)."""
        await self.flush()
        return await self._run_now(plan, backoff)

    async def _run_now(self, plan: Plan[T], backoff: Backoff | None = None) -> T:
        send = async_retrying(backoff or self.backoff, self._sleep)
        try:
            call = next(plan)
            while True:
                call = plan.send(await send(self._send, call))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _send(self, call: Call) -> httpx.Response:
        try:
            response = await self._http.request(
                call.method,
                self.session.url(call.path),
                params=tuple(call.params),
                headers=self.session.headers(call.headers),
                content=call.content,
            )
        except httpx.TransportError as exc:
            raise Unreachable(self.session.base, exc) from None
        if not call.answered(response.status_code):
            raise ApiError.of(response)
        return response

    # Streams -------------------------------------------------------------------------------

    async def subscribe(
        self,
        topics: str | Sequence[str],
        *,
        last_event_id: str | None = None,
        windows: Sequence[str] | None = None,
        stats: Sequence[str] | None = None,
        group: GroupChoice | None = None,
        series: Sequence[str] | None = None,
        max_hz: float | None = None,
        precision: int | None = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[StreamMessage]:
        options = StreamOptions(windows, stats, group, series, max_hz, precision)
        # Closed with this generator, in the same task: see `_stream`.
        async with contextlib.aclosing(
            self.raw_stream(
                topics, last_event_id=last_event_id, options=options, max_retries=max_retries
            )
        ) as raws:
            async for raw in raws:
                message = typed_message(raw.event, raw.id, raw.data)
                if message is not None:
                    yield message

    def messages(
        self,
        topics: str | Sequence[str],
        *,
        last_event_id: str | None = None,
        replay: int | None = None,
        max_retries: int | None = None,
    ) -> AsyncMessageStream:
        """`Client.messages`: `async for message in client.messages("orders")`, and
        `stream.last_event_id`, the id to resume from."""
        cursor = StreamCursor(
            topics, last_event_id=last_event_id, options=MessageOptions(replay),
            backoff=self.backoff, max_retries=max_retries,
        )  # fmt: skip
        return AsyncMessageStream(cursor, self._stream(cursor))

    def raw_stream(
        self,
        topics: str | Sequence[str],
        *,
        last_event_id: str | None = None,
        options: StreamOptions | None = None,
        max_retries: int | None = None,
    ) -> AsyncGenerator[RawMessage, None]:
        cursor = StreamCursor(
            topics, last_event_id=last_event_id, options=options or StreamOptions(),
            backoff=self.backoff, max_retries=max_retries,
        )  # fmt: skip
        return self._stream(cursor)

    async def _stream(self, cursor: StreamCursor) -> AsyncGenerator[RawMessage, None]:
        """Every message of `cursor`'s stream, connecting again as it says."""
        await self.flush()  # what this client published before is in what the stream replays
        while True:
            error: ClientError | None = None
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    self.session.url(cursor.path),
                    params=tuple(cursor.params),
                    headers=self.session.headers(cursor.headers()),
                    timeout=self.session.stream_timeout,
                ) as source:
                    if source.response.status_code != 200:
                        await source.response.aread()
                        raise ApiError.of(source.response)
                    # A reader that breaks out of its loop leaves this generator to be
                    # closed by asyncio (a task the loop starts once it is dropped). Every
                    # generator under it is closed in that same task, in order: left to
                    # the loop too, each got a task of its own, and the loop's shutdown
                    # closed them while the task before was still closing them ("aclose():
                    # asynchronous generator is already running", printed twice).
                    async with contextlib.aclosing(source.aiter_sse()) as events:
                        async for sse in events:
                            message = cursor.receive(sse)
                            if message is not None:
                                yield message
            except httpx.TransportError as exc:
                error = Unreachable(self.session.base, exc)
            except SSEError as exc:  # a 200 that is no event stream: a proxy's page
                error = Unreachable(self.session.base, httpx.RemoteProtocolError(str(exc)))
            except ApiError as exc:
                error = exc
            await self._sleep(cursor.delay_after(error))

    async def frames(
        self,
        topic: str,
        *,
        every: str | float = "1s",
        since: Time | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        forecast: str | None = None,
    ) -> AsyncIterator[pd.DataFrame]:
        interval = interval_seconds(every)
        updates, first, last = await self._run(calls.history_updates(topic, since=since))
        latest = None
        if forecast is not None:
            try:
                latest = await self.forecast(topic)
            except ApiError as exc:
                if exc.status != 404:
                    raise
        live = LiveFrame(
            topic, updates, first, last["resume_id"], max_rows=max_rows, forecast=latest,
            forecasts=forecast is not None,
        )  # fmt: skip
        options = StreamOptions(forecast=[forecast] if forecast is not None else None)
        yield live.frame
        inbox: asyncio.Queue[RawMessage] = asyncio.Queue()

        async def pump() -> None:
            async for message in self.raw_stream(
                topic, last_event_id=last["resume_id"], options=options
            ):
                inbox.put_nowait(message)

        reader = asyncio.create_task(pump())
        loop = asyncio.get_running_loop()
        try:
            due = loop.time() + interval
            while True:
                while not inbox.empty():  # a burst: no waiting, no task per message
                    live.add(inbox.get_nowait())
                left = due - loop.time()
                if left > 0:  # until the frame is due, or sooner a message
                    getting = asyncio.ensure_future(inbox.get())
                    await asyncio.wait({getting, reader}, timeout=left)
                    if getting.done():
                        live.add(getting.result())
                        continue
                    getting.cancel()
                    if reader.done():
                        reader.result()  # raises what ended the subscription
                due = loop.time() + interval
                frame = live.flush()
                if frame is not None:
                    yield frame
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
