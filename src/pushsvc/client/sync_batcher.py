"""`Client.publish`'s batcher: one sender thread per client that gathers calls and sends them
as cross-topic batches (`pushsvc.client.batching` says when and how).

The thread starts with the first call and is a daemon, so it never keeps a program alive; what
it holds is sent by `flush()`, which `Client.close()`, leaving `with Client(...)` and the
interpreter's exit (an `atexit` hook, holding the batcher weakly) all call. A call's
`PublishFuture` is resolved from the thread; a caller that waits for it sends the batch at
once (`hurry`).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable, Sequence

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
from pushsvc.client.published import Published, PublishFuture
from pushsvc.client.retry import Backoff
from pushsvc.core.answers import TopicsAccepted

Run = Callable[[Plan[TopicsAccepted]], TopicsAccepted]
"""How the client runs a plan: its transport and retries."""


class Batcher:
    """Gathers a client's `publish` calls and sends them, one batch at a time."""

    def __init__(
        self,
        run: Run,
        settings: BatchSettings,
        *,
        backoff: Backoff,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._run = run
        self.settings = settings
        self._backoff = backoff
        self._sleep = sleep
        self._queue: list[PendingCall] = []
        self._changed = threading.Condition()
        self._urgent = False
        self._sending = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._at_exit: Callable[[], None] | None = None

    def add(self, topic: str, events: Publishable) -> PublishFuture:
        """Hold one call's events for the next batch; its future. TypeError or ValueError for
        events that cannot be sent (nothing is held)."""
        future = PublishFuture(self.hurry)
        call = pending_call(topic, events, future)
        with self._changed:
            if self._closed:
                raise RuntimeError("the client is closed")
            self._queue.append(call)
            if self._thread is None:
                self._start()
            self._changed.notify_all()
        return future

    def hurry(self) -> None:
        """Send what is held without waiting for the linger (a caller waits for it)."""
        with self._changed:
            self._urgent = True
            self._changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything held and wait for the answers; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self._urgent = True
            self._changed.notify_all()
            while self._queue or self._sending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self) -> None:
        """Flush, then stop the thread; later calls are refused."""
        self.flush()
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
            self._at_exit = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pushsvc-publish", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)

        def flush_at_exit() -> None:
            batcher = ref()
            if batcher is not None:
                batcher.flush()

        self._at_exit = flush_at_exit
        atexit.register(flush_at_exit)

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._urgent = False
                    self._changed.wait()
                if not self._queue:
                    return
                due = self._queue[0].since + self.settings.linger
                while not (self._urgent or self._closed or is_full(self._queue, self.settings)):
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                batch = take_batch(self._queue, self.settings)
                if not self._queue:
                    self._urgent = False
                self._sending = True
            try:
                self._send(batch)
            finally:
                with self._changed:
                    self._sending = False
                    self._changed.notify_all()

    def _send(self, batch: list[PendingCall]) -> None:
        key = new_idempotency_key()
        started = time.monotonic()
        attempt = 0
        while batch:
            try:
                answer = self._run(publish_batch(batch, key))
            except ApiError as exc:
                found_culprit = culprit(batch, exc)
                if found_culprit is None:
                    _fail(batch, exc)
                    return
                number, own = found_culprit
                _settle(batch.pop(number), own)  # its own error; the others go again
                key = new_idempotency_key()  # another body
                continue
            except Exception as exc:  # each caller gets what stopped its batch
                _fail(batch, exc)
                return
            try:
                found: Sequence[Published | ApiError] = outcomes(batch, answer)
            except ValueError as exc:
                _fail(batch, exc)
                return
            wait = again_after(found, self._backoff, attempt, time.monotonic() - started)
            if wait is not None:
                self._sleep(wait)
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
    assert isinstance(future, PublishFuture)
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
