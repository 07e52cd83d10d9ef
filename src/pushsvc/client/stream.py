"""A subscription's state between connections, free of I/O: what to ask for (`/stream` or
`/messages` with the topics and options, `Last-Event-ID` once an id was seen), which messages to
hand on, and how long to wait before the next connection — what a browser's EventSource does,
for both clients and both kinds of stream.

The events themselves are read by `httpx-sse`; this module only judges them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import orjson
from httpx_sse import ServerSentEvent

from pushsvc.client.calls import GroupChoice, group_params
from pushsvc.client.errors import ApiError, ClientError
from pushsvc.client.retry import Backoff, is_retryable

STREAM_PATH = "stream"
MESSAGES_PATH = "messages"

log = logging.getLogger("pushsvc.client")


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message of a stream as the server sent it: its event name (`snapshot`, `stats`,
    `point`, `alert`), its id (None where it had none) and its data (one line of JSON)."""

    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return orjson.loads(self.data)


class StreamRequest(Protocol):
    """What a kind of stream asks beside its topics: its path and its parameters."""

    path: ClassVar[str]

    def params(self) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class StreamOptions:
    """What `/stream` takes beside the topics (see docs/design.md, "Stream options")."""

    path: ClassVar[str] = STREAM_PATH

    windows: Sequence[str] | None = None
    stats: Sequence[str] | None = None
    group: GroupChoice | None = None
    series: Sequence[str] | None = None
    max_hz: float | None = None
    precision: int | None = None
    forecast: Sequence[str] | None = None

    def params(self) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        if self.windows:
            params.append(("windows", ",".join(self.windows)))
        if self.stats:
            params.append(("stats", ",".join(self.stats)))
        if self.series:
            params.append(("series", ",".join(self.series)))
        if self.forecast:
            params.append(("forecast", ",".join(self.forecast)))
        if self.max_hz is not None:
            params.append(("max_hz", repr(self.max_hz)))
        if self.precision is not None:
            params.append(("precision", str(self.precision)))
        return params + group_params(self.group)


@dataclass(frozen=True)
class MessageOptions:
    """What `/messages` takes beside the topics: `replay`, to start with the last that many
    messages of its topics (the server ignores it once the stream resumes from an id)."""

    path: ClassVar[str] = MESSAGES_PATH
    replay: int | None = None

    def __post_init__(self) -> None:
        replay = self.replay
        if replay is not None and (not isinstance(replay, int) or isinstance(replay, bool)):
            raise TypeError(f"replay is a number of messages, not {replay!r}")
        if replay is not None and replay < 1:
            raise ValueError(f"replay is 1 or more messages (None: start live), not {replay}")

    def params(self) -> list[tuple[str, str]]:
        return [] if self.replay is None else [("replay", str(self.replay))]


class StreamCursor:
    """Where a subscription stands: the last id seen, the server's `retry:` and how many
    connections in a row have failed. `max_retries`: how many failed connections in a row
    are retried before the last one's error is raised (None: for ever, as a browser does)."""

    def __init__(
        self,
        topics: str | Sequence[str],
        *,
        last_event_id: str | None,
        options: StreamRequest,
        backoff: Backoff,
        max_retries: int | None = None,
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries is 0 or more (None: for ever), not {max_retries}")
        selectors = [topics] if isinstance(topics, str) else list(topics)
        if not selectors:
            raise ValueError("subscribe to at least one topic or pattern")
        self.path = options.path
        self.params = [("topic", s) for s in selectors] + options.params()
        self.last_event_id = last_event_id or None
        self.retry_s: float | None = None
        self._backoff = backoff
        self._max_retries = max_retries
        self._failures = 0

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}

    def receive(self, sse: ServerSentEvent) -> RawMessage | None:
        """The message to hand on, or None (a `retry:` alone, a heartbeat, a messages
        stream's head: an `id:` alone, which is kept as the id to resume from)."""
        if sse.retry is not None:
            self.retry_s = sse.retry / 1000
        if sse.id:  # the standard takes the id before it looks at the data
            self.last_event_id = sse.id
        if sse.id or sse.data:
            # The stream delivers (a messages stream may send nothing but its head's `id:`
            # for long): this connection did not fail.
            self._failures = 0
        if not sse.data:
            # What the standard dispatches nothing for: httpx-sse yields an empty event after
            # a comment (the heartbeat) once an id has been seen, and for an `id:` alone.
            return None
        return RawMessage(sse.event, sse.id or None, sse.data)

    def _out_of_retries(self) -> bool:
        return self._max_retries is not None and self._failures >= self._max_retries

    def delay_after(self, error: ClientError | None) -> float:
        """How long to wait before connecting again after the stream ended (`error` None) or
        failed; raises `error` when another try would be refused again, or when `max_retries`
        failed in a row. Each failure is a warning: a wrong port must not look like a quiet
        topic."""
        if error is not None and (not is_retryable(error) or self._out_of_retries()):
            raise error
        attempt, self._failures = self._failures, self._failures + 1
        delay = self._backoff.delay(attempt, error)
        if self.retry_s is not None and not isinstance(error, ApiError):
            # As EventSource does: the server's reconnection time after a lost connection.
            delay = max(delay, self.retry_s)
        if error is not None:
            log.warning("%s; retrying in %.1f s", error, delay)
        return delay
