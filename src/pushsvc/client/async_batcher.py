"""`AsyncClient.publish`'s batcher: one sender task per client, on the loop of the calls, that
gathers calls and sends them as cross-topic batches (`pushsvc.client.batching`).

`publish` is awaited as before: it holds its call and waits for the batch's answer. The calls
that other tasks make while the sender waits for its turn on the loop, or while a batch is in
flight, gather in the next batch: `asyncio.gather` of many `publish` calls, or many request
handlers publishing at once, send few requests. The default linger is 0 (a call never waits
for more to come), so that a task awaiting its calls one by one is as quick as without
batching; a longer `linger` gathers more where a program does not await each call at once.
What is held is sent by `flush()`, which `aclose()` and leaving `async with` call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pushsvc.client.batching import (
    BatchSettings,
    PendingCall,
    again_after,
    culprit,
    is_full,
    outcomes,
    pending_call,
    publish_batch,
    take_batch,
)
from pushsvc.client.calls import Plan, Publishable, new_idempotency_key
from pushsvc.client.errors import ApiError
from pushsvc.client.published import Published
from pushsvc.client.retry import Backoff
from pushsvc.core.answers import TopicsAccepted

Run = Callable[[Plan[TopicsAccepted]], Awaitable[TopicsAccepted]]

ASYNC_DEFAULTS = BatchSettings(linger=0.0)


class AsyncBatcher:
    """Gathers an async client's `publish` calls and sends them, one batch at a time."""

    def __init__(
        self,
        run: Run,
        settings: BatchSettings,
        *,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._run = run
        self.settings = settings
        self._backoff = backoff
        self._sleep = sleep
        self._queue: list[PendingCall] = []
        self._changed: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        self._loop_of: asyncio.AbstractEventLoop | None = None

    async def publish(self, topic: str, events: Publishable) -> Published:
        """Hold one call's events for the next batch and wait for its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Published] = loop.create_future()
        self._queue.append(pending_call(topic, events, future))
        self._wake()
        return await future

    async def flush(self) -> None:
        """Send everything held and wait for the answers."""
        while self._queue or (self._idle is not None and not self._idle.is_set()):
            self._wake()
            assert self._idle is not None
            await self._idle.wait()

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sender is None or self._sender.done() or self._loop_of is not loop:
            # (A client used by a later loop than the last: a sender of its own there.)
            self._changed = asyncio.Event()
            self._idle = asyncio.Event()
            self._loop_of = loop
            self._sender = loop.create_task(self._loop())
        assert self._changed is not None and self._idle is not None
        self._idle.clear()
        self._changed.set()

    async def _loop(self) -> None:
        assert self._changed is not None and self._idle is not None
        while True:
            if not self._queue:
                self._idle.set()
                self._changed.clear()
                await self._changed.wait()
                continue
            await asyncio.sleep(0)  # the calls ready now join the batch
            due = self._queue[0].since + self.settings.linger
            while not is_full(self._queue, self.settings):
                left = due - time.monotonic()
                if left <= 0:
                    break
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    break
            await self._send(take_batch(self._queue, self.settings))

    async def _send(self, batch: list[PendingCall]) -> None:
        key = new_idempotency_key()
        started = time.monotonic()
        attempt = 0
        while batch:
            try:
                answer = await self._run(publish_batch(batch, key))
            except ApiError as exc:
                found_culprit = culprit(batch, exc)
                if found_culprit is None:
                    _fail(batch, exc)
                    return
                number, own = found_culprit
                _settle(batch.pop(number), own)
                key = new_idempotency_key()  # another body
                continue
            except Exception as exc:  # each caller gets what stopped its batch
                _fail(batch, exc)
                return
            try:
                found = outcomes(batch, answer)
            except ValueError as exc:
                _fail(batch, exc)
                return
            wait = again_after(found, self._backoff, attempt, time.monotonic() - started)
            if wait is not None:
                await self._sleep(wait)
                attempt += 1
                continue
            for call, outcome in zip(batch, found, strict=True):
                _settle(call, outcome)
            return


def _fail(batch: list[PendingCall], error: BaseException) -> None:
    for call in batch:
        _settle(call, error)


def _settle(call: PendingCall, outcome: Published | BaseException) -> None:
    future = call.waiter
    assert isinstance(future, asyncio.Future)
    if future.done():  # its caller was cancelled
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
