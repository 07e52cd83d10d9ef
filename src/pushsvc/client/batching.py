"""Publish calls gathered into cross-topic batches, free of I/O and threads: what both clients'
batchers (`sync_batcher`, `async_batcher`) share.

Like Kafka's producer (`linger.ms`, `batch.size`), a client holds each `publish` call for at
most `BatchSettings.linger` seconds, or until the calls held reach `max_events` events or
`max_bytes` bytes, and sends them as one `POST /events` (items naming their topics, in call
order; the server logs each topic's events of a request together, in that order). One batch
is in flight at a time, so that a topic's events reach the server in the order they were
published; the calls made meanwhile gather for the next.

Each call's outcome is read from the answer (`outcomes`): the result of its topic, whose
`items` are positions in the request. A refusal of the whole request that names an event
(`index`: an event the server finds invalid) belongs to the call that published it; the
batcher fails that call and sends the others again (`culprit`). Any other refusal, or no
answer, is every call's.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import orjson

from pushsvc.client.calls import (
    IDEMPOTENCY_KEY,
    Call,
    Plan,
    Publishable,
    check_sendable,
    event_batch,
    new_idempotency_key,
)
from pushsvc.client.errors import ApiError
from pushsvc.client.published import Published
from pushsvc.client.retry import Backoff
from pushsvc.core.answers import ErrorDetail, TopicResult, TopicsAccepted

MULTI_STATUS = 207


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How a client batches `publish` calls. `linger`: the longest a call waits for others
    (seconds; a caller waiting for its outcome sends the batch at once); `max_events` and
    `max_bytes`: a batch is sent as soon as it holds this many events or bytes of JSON (a
    call larger than either is sent alone; keep `max_bytes` under the server's `--max-body`,
    1 MiB by default, and `max_events` at most 10,000, its largest batch)."""

    linger: float = 0.005
    max_events: int = 100
    max_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.linger < 0 or self.max_events < 1 or self.max_bytes < 64:
            raise ValueError("linger must be >= 0, max_events >= 1 and max_bytes >= 64")


@dataclass(slots=True)
class PendingCall:
    """One `publish` call waiting for its batch: its topic, its events as JSON items (each
    with its topic), their bytes, and the caller's handle (a future of `Published`)."""

    topic: str
    items: list[bytes]
    waiter: object
    times: list[float] = field(default_factory=list)
    """Each event's `ts` in epoch seconds (infinity where the server stamps it): which of a
    topic's events were late is estimated from them when calls share a topic (`outcomes`)."""
    since: float = field(default_factory=time.monotonic)
    """When the call was made (`time.monotonic`): its linger counts from then."""
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = sum(len(item) + 1 for item in self.items)


def pending_call(topic: str, events: Publishable, waiter: object) -> PendingCall:
    """A call's events checked and encoded as they will be sent, or TypeError / ValueError
    (raised to the caller of `publish`, before anything is held)."""
    batch = event_batch(events)
    check_sendable(batch)
    try:
        items = [orjson.dumps({**event, "topic": topic}) for event in batch]
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"the events cannot be sent as JSON: {exc}") from None
    return PendingCall(topic, items, waiter, [_seconds(event.get("ts")) for event in batch])


def _seconds(ts: object) -> float:
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return float(ts)
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    return math.inf


def take_batch(queue: list[PendingCall], settings: BatchSettings) -> list[PendingCall]:
    """The calls at the head of `queue` that make the next batch (at least one), removed from
    it."""
    events = size = 0
    taken = 0
    for call in queue:
        if taken and (
            events + len(call.items) > settings.max_events or size + call.size > settings.max_bytes
        ):
            break
        events += len(call.items)
        size += call.size
        taken += 1
    batch = queue[:taken]
    del queue[:taken]
    return batch


def is_full(queue: Sequence[PendingCall], settings: BatchSettings) -> bool:
    """Whether the calls held make a batch that need not wait any longer."""
    events = sum(len(call.items) for call in queue)
    return events >= settings.max_events or sum(c.size for c in queue) >= settings.max_bytes


def publish_batch(calls: Sequence[PendingCall], key: str | None = None) -> Plan[TopicsAccepted]:
    """POST the calls' events as one cross-topic batch with the Idempotency-Key `key` (a new
    one by default; the same for every attempt); the server's per-topic answer (202, or 207
    where a topic's were refused)."""
    body = b"[" + b",".join(item for call in calls for item in call.items) + b"]"
    answer = yield Call(
        "POST",
        "events",
        headers={
            "Content-Type": "application/json",
            IDEMPOTENCY_KEY: key if key is not None else new_idempotency_key(),
        },
        content=body,
        expect=202,
        also=(MULTI_STATUS,),
    )
    return msgspec.json.decode(answer.content, type=TopicsAccepted)


def outcomes(calls: Sequence[PendingCall], answer: TopicsAccepted) -> list[Published | ApiError]:
    """Each call's outcome, in order, from the answer to the batch of `calls`."""
    owner: list[int] = []
    starts: list[int] = []
    for number, call in enumerate(calls):
        starts.append(len(owner))
        owner.extend([number] * len(call.items))
    per_call: list[Published | ApiError | None] = [None] * len(calls)
    for result in answer.results:
        numbers = sorted({owner[i] for i in result.items})
        if result.error is not msgspec.UNSET:
            found = _refused(result, result.error, numbers, owner, starts)
        else:
            found = _accepted(calls, result, numbers)
        for number, outcome in found.items():
            per_call[number] = outcome
    missing = [n for n, outcome in enumerate(per_call) if outcome is None]
    if missing:
        raise ValueError(f"the server's answer says nothing of the events of calls {missing}")
    return [outcome for outcome in per_call if outcome is not None]


def _refused(
    result: TopicResult,
    error: ErrorDetail,
    numbers: Sequence[int],
    owner: Sequence[int],
    starts: Sequence[int],
) -> dict[int, Published | ApiError]:
    """The outcome of each call of a topic whose events were refused (`owner`: the call of
    each event of the batch; `starts`: each call's first event in it)."""
    status = result.status if result.status is not msgspec.UNSET else 400
    at = None if error.index is msgspec.UNSET else error.index
    found: dict[int, Published | ApiError] = {}
    for number in numbers:
        # `index` as the caller counts: the place of the event at fault in its own call
        # (none for the other calls of the topic, refused with it).
        mine = at - starts[number] if at is not None and owner[at] == number else None
        found[number] = ApiError(status, error.code, error.message, index=mine)
    return found


def _accepted(
    calls: Sequence[PendingCall], result: TopicResult, numbers: Sequence[int]
) -> dict[int, Published | ApiError]:
    """The outcome of each call of a topic whose events were logged, on the topic or its late
    stream: where calls shared the topic and only some of its events were late, `_shares`."""
    accepted = 0 if result.accepted is msgspec.UNSET else result.accepted
    late = 0 if result.late is msgspec.UNSET else result.late
    found: dict[int, Published | ApiError] = {}
    if len(numbers) == 1 or not late or not accepted:
        for number in numbers:
            count = len(calls[number].items)
            counts = (count, 0) if not late else (0, count) if not accepted else (accepted, late)
            found[number] = Published(*counts, topic=result.topic)
    else:
        for number, counts in _shares(calls, numbers, late).items():
            found[number] = Published(*counts, topic=result.topic, shared=True)
    return found


def _shares(
    calls: Sequence[PendingCall], numbers: Sequence[int], late: int
) -> dict[int, tuple[int, int]]:
    """Each call's (accepted, late) where calls shared a topic and only some of its events
    were late: the server says how many, not which, so the `late` oldest events (by `ts`) are
    taken for the late ones, which they are unless a newer event arrived past a clock that an
    event after it in the batch moved."""
    times = sorted((t, number) for number in numbers for t in calls[number].times)
    late_of = dict.fromkeys(numbers, 0)
    for _, number in times[:late]:
        late_of[number] += 1
    return {n: (len(calls[n].items) - late_of[n], late_of[n]) for n in numbers}


def again_after(
    found: Sequence[Published | ApiError], backoff: Backoff, attempt: int, elapsed: float
) -> float | None:
    """How long to wait before sending a batch again, the same body with the same key, where
    some topic's events were refused for a while only (a topic's 503: its partition's Redis
    unreachable, or replicas not confirming): the topics logged are answered as before, the
    others logged now. None: not again (no such refusal, or the backoff's time or tries are
    spent), and the calls keep their outcomes."""
    passing = [o for o in found if isinstance(o, ApiError) and o.status == 503]
    if not passing or (backoff.retries is not None and attempt >= backoff.retries):
        return None
    wait = backoff.delay(attempt, passing[0])
    if backoff.give_up_after is not None and elapsed + wait > backoff.give_up_after:
        return None
    return wait


def culprit(calls: Sequence[PendingCall], error: ApiError) -> tuple[int, ApiError] | None:
    """Which call published the event a refusal of the whole batch names, and the error as
    that call's caller counts its events (None: none named, or a refusal that is not about
    one event)."""
    if error.index is None or error.status not in (400, 413):
        return None
    position = error.index
    for number, call in enumerate(calls):
        if position < len(call.items):
            status = error.status if error.status is not None else 400
            return number, ApiError(status, error.code, error.message, index=position)
        position -= len(call.items)
    return None
