"""What `publish` gives its caller: `Published`, the server's answer for that call's events, and
`PublishFuture`, which `Client.publish` returns at once while the call's batch is gathered and
sent (`pushsvc.client.batching`).

`Published` is an `int`, the number of events accepted onto the topic, as `publish` returned
before it batched: `client.publish(...) == 1` and `sent += client.publish(...)` keep working.
Beside it, `late` (events past the topic's grace, kept on its late stream `late_topic`).

`PublishFuture` is a `concurrent.futures.Future` of a `Published`: `result()` waits for the
answer (raising the call's `ApiError` or `Unreachable`), and a caller that waits sends the
batch at once rather than after its linger. It also behaves as the number it will be (`==`,
`int()`, `+`, `sum()`), each waiting for the answer, so that code written for the `int` that
`publish` returned reads the same. An error nobody asked for is logged as a warning on the
`pushsvc.client` logger when the future is dropped, as asyncio does for a task's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("pushsvc.client")


class Published(int):
    """The events of one `publish` call that the server accepted onto `topic` (this int), and
    `late`, those past the topic's grace, logged on `late_topic` (`<topic>.late`).

    `shared`: this call's events were answered together with other calls' to the same topic
    in one batch, some late and some not: the server says how many of the topic's events were
    late, not which, so this call's counts are an estimate (its oldest events taken for the
    late ones); the counts of all such calls add up to the server's."""

    topic: str
    late: int
    shared: bool

    def __new__(
        cls, accepted: int, late: int = 0, *, topic: str = "", shared: bool = False
    ) -> Published:
        made = super().__new__(cls, accepted)
        made.topic = topic
        made.late = late
        made.shared = shared
        return made

    @property
    def accepted(self) -> int:
        return int(self)

    @property
    def late_topic(self) -> str:
        return f"{self.topic}.late"

    def __repr__(self) -> str:
        shared = ", shared=True" if self.shared else ""
        return f"Published(accepted={int(self)}, late={self.late}, topic={self.topic!r}{shared})"


def summary(answers: Sequence[Published]) -> str:
    """What the server said of the events of `answers`: `accepted 5`, or `accepted 0, late 1
    (on shop.orders.late)` (what `pushsvc publish` prints)."""
    accepted = sum(answer.accepted for answer in answers)
    late = sum(answer.late for answer in answers)
    text = f"accepted {accepted}"
    if late:
        streams = sorted({answer.late_topic for answer in answers if answer.late})
        shown = ", ".join(streams[:5])
        if len(streams) > 5:
            shown += f" and {len(streams) - 5} more"
        text += f", late {late} (on {shown})"
    return text


class PublishFuture(Future[Published]):
    """The outcome of one `Client.publish` call, once its batch is answered (see the module)."""

    def __init__(self, hurry: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._hurry = hurry
        self._retrieved = False

    def result(self, timeout: float | None = None) -> Published:
        self._retrieved = True
        if not self.done() and self._hurry is not None:
            self._hurry()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._retrieved = True
        if not self.done() and self._hurry is not None:
            self._hurry()
        return super().exception(timeout)

    @property
    def accepted(self) -> int:
        return int(self.result())

    @property
    def late(self) -> int:
        return self.result().late

    def __int__(self) -> int:
        return int(self.result())

    def __index__(self) -> int:
        return int(self.result())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (int, float)):
            return self.result() == other
        return self is other

    __hash__ = Future.__hash__

    def __add__(self, other: Any) -> Any:
        return self.result() + other

    def __radd__(self, other: Any) -> Any:
        return other + self.result()

    def __repr__(self) -> str:
        if self.done() and not self.cancelled() and super().exception(0) is None:
            return f"PublishFuture({super().result(0)!r})"
        return super().__repr__()

    def __del__(self) -> None:
        if self._retrieved or not self.done() or self.cancelled():
            return
        error = super().exception(0)
        if error is not None:
            with contextlib.suppress(Exception):  # at the interpreter's exit, logging may be gone
                log.warning("a publish whose outcome nobody asked for failed: %s", error)
