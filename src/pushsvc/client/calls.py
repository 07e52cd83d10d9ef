"""What each client operation asks the server, free of I/O, so that `Client` and `AsyncClient`
share one implementation and differ only in how they send a request.

An operation is a *plan*: a generator that yields the `Call`s it needs, one at a time, is sent
each answer (an `httpx.Response`, read, with the status the call expects) and returns the
operation's result. History pages follow each other this way, each asked for with the
previous page's `resume_id`. A client drives a plan with its own transport and retry loop:

    call = next(plan)
    while True:
        call = plan.send(send(call))      # until StopIteration carries the result
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
import orjson

from pushsvc.client.models import forecast_dataframe, history_dataframe, series_dataframe
from pushsvc.client.published import Published
from pushsvc.core.answers import Accepted
from pushsvc.core.listing_shapes import Series
from pushsvc.core.point_shape import Forecast

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
Plan = Generator["Call", httpx.Response, T]

IDEMPOTENCY_KEY = "Idempotency-Key"
HISTORY_PAGE = 10_000  # the server's largest ?limit=
LISTING_PAGE = 1000  # the largest ?limit= of GET /topics and GET /alerts

Time = str | float | datetime
"""A point in time as the API takes it: epoch seconds, an RFC 3339 string or an aware
datetime (`since` of a history may also be an update id)."""
Events = Mapping[str, object] | Sequence[Mapping[str, object]]
Publishable = Events | float | Sequence[Mapping[str, object] | float]
"""What `publish` takes: one event (`{"value": 12.5, "ts": …, "tags": {…}}`, a message
`{"type": "shipped", "data": {…}}`, or a bare number, its value) or a list of them."""
EVENTS_ACCEPTED = (
    "an event is a number or a mapping like {'value': 12.5, 'ts': …, 'tags': {…}} or "
    "{'type': 'shipped', 'data': {…}}; publish takes one event or a list of them"
)


class Unset(Enum):
    """The absence of an argument where None is a value: a message's `data` may be null."""

    UNSET = "unset"


UNSET = Unset.UNSET

_INT_RANGE = (-(2**63), 2**64 - 1)
"""The integers a message's data may hold: 64 bits, signed or not (the server's range)."""
_DEEPEST = 256  # past orjson's recursion limit


@dataclass(frozen=True)
class Call:
    """One request: relative to the client's base URL; answered `expect` or an error."""

    method: str
    path: str
    params: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    expect: int = 200
    also: tuple[int, ...] = ()
    """Other statuses that are an answer, not an error (a many-topic POST's 207)."""

    def answered(self, status: int) -> bool:
        return status == self.expect or status in self.also


def new_idempotency_key() -> str:
    """A fresh key for one batch: a random UUID, as the IETF draft and Stripe suggest."""
    return str(uuid.uuid4())


def topic_path(topic: str, leaf: str) -> str:
    return f"topics/{quote(topic, safe='')}/{leaf}"


def publish(topic: str, events: Publishable) -> Plan[Published]:
    """POST one event or a batch (accepted whole or rejected whole); how many were accepted
    onto the topic on time, and how many were past its grace (kept on its late stream,
    `<topic>.late`, a message among them pushed on the topic all the same).
    One body and one key for every attempt: a repeat is the same request, logged once.
    ValueError, before anything is sent, for a NaN or infinite value or time, or data that
    JSON or the server cannot carry exactly; TypeError for what is no event."""
    batch = event_batch(events)
    check_sendable(batch)
    try:
        body = orjson.dumps(batch)
    except orjson.JSONEncodeError as exc:  # a set, a non-string key, an object of a class
        raise TypeError(f"the events cannot be sent as JSON: {exc}") from None
    answer = yield Call(
        "POST",
        topic_path(topic, "events"),
        headers={"Content-Type": "application/json", IDEMPOTENCY_KEY: new_idempotency_key()},
        content=body,
        expect=202,
    )
    accepted = msgspec.json.decode(answer.content, type=Accepted)
    late = 0 if accepted.late is msgspec.UNSET else accepted.late
    return Published(accepted.accepted, late, topic=topic)


def publishable(events: Publishable | None, data: object, kind: str | None) -> Publishable:
    """What `publish(topic, events, data=…, type=…)` sends: `events`, or else one message of
    `data` (UNSET: none given, so null) and `type` (None: the server's `message`)."""
    is_message = data is not UNSET or kind is not None
    if is_message and events is not None:
        raise TypeError("publish takes events, or a message's data= and type=: not both")
    if not is_message:
        if events is None:
            raise TypeError(f"{EVENTS_ACCEPTED} (or one message: data=…, type=…), not None")
        return events
    message: dict[str, object] = {}
    if kind is not None:
        message["type"] = kind
    if data is not UNSET:
        message["data"] = data
    return message


def delete_topic(topic: str) -> Plan[None]:
    """DELETE the topic (its windows, history, series, groups, alerts and clock); a topic the
    server does not keep answers 404 (`ApiError`, code `not_found`)."""
    yield Call("DELETE", f"topics/{quote(topic, safe='')}")


def event_batch(events: Publishable) -> list[dict[str, object]]:
    """The events as the JSON array to POST: a number is an event with that value."""
    if _is_event(events):
        return [_event(events, None)]
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise TypeError(f"{EVENTS_ACCEPTED}, not a {type(events).__name__}")
    return [_event(event, index) for index, event in enumerate(events)]


def _is_event(item: object) -> bool:
    return isinstance(item, Mapping) or (
        isinstance(item, (int, float)) and not isinstance(item, bool)
    )


def _event(item: object, index: int | None) -> dict[str, object]:
    if isinstance(item, Mapping):
        return dict(item)
    if _is_event(item):
        return {"value": item}
    where = "" if index is None else f"event {index}: "
    raise TypeError(f"{where}{EVENTS_ACCEPTED}, not a {type(item).__name__}")


def get_json(path: str, params: Sequence[tuple[str, str]] = ()) -> Plan[dict[str, Any]]:
    answer = yield Call("GET", path, params, headers={"Accept": "application/json"})
    body: dict[str, Any] = orjson.loads(answer.content)
    return body


def history_page(
    topic: str, *, since: Time | None = None, limit: int | None = None
) -> Plan[dict[str, Any]]:
    """One answer of `GET /topics/{topic}/history`, parsed."""
    params = []
    if since is not None:
        params.append(("since", time_param(since)))
    if limit is not None:
        params.append(("limit", str(limit)))
    return (yield from get_json(topic_path(topic, "history"), params))


def history_updates(
    topic: str, *, since: Time | None = None, limit: int | None = None
) -> Plan[tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]]:
    """The updates a history asks for, paging on with `resume_id` while `more` (only with
    `since`: without it the history answers the newest `limit`), and the first and last
    pages (their `windows`, `stats`, `gap` and `resume_id`)."""
    first = yield from history_page(topic, since=since, limit=limit)
    last = first
    updates: list[dict[str, Any]] = list(first["updates"])
    wanted = limit if limit is not None else float("inf")
    while since is not None and last["more"] and len(updates) < wanted:
        size = HISTORY_PAGE if limit is None else min(HISTORY_PAGE, limit - len(updates))
        last = yield from history_page(topic, since=last["resume_id"], limit=size)
        updates.extend(last["updates"])
    return updates, first, last


def topics(page: int = LISTING_PAGE) -> Plan[list[dict[str, Any]]]:
    """Every topic the client may read (`Client.topics`), following `GET /topics`' pages
    (`next`) to the last, `page` topics at a time."""
    return (yield from every_page("topics", "topics", page))


def alerts(page: int = LISTING_PAGE) -> Plan[list[dict[str, Any]]]:
    """Every active alert instance the client may read (`Client.alerts`), following
    `GET /alerts`' pages (`next`) to the last."""
    return (yield from every_page("alerts", "alerts", page))


def every_page(path: str, member: str, page: int) -> Plan[list[dict[str, Any]]]:
    """A listing's `member` over all its pages: each asked with the previous one's `next`, to
    the last (`next` null, or absent from a server without pages)."""
    listed: list[dict[str, Any]] = []
    params = [("limit", str(page))]
    while True:
        answer = yield from get_json(path, params)
        listed += answer[member]
        following = answer.get("next")
        if following is None:
            return listed
        params = [("limit", str(page)), ("after", following)]


def history(
    topic: str, *, since: Time | None = None, limit: int | None = None
) -> Plan[pd.DataFrame]:
    """The topic's updates as a DataFrame (`Client.history`). None at all: the topic's stats
    say whether it exists — an unknown topic (never published to, or forgotten) raises their
    404, as `stats` does, rather than passing for a quiet one."""
    updates, first, last = yield from history_updates(topic, since=since, limit=limit)
    if not updates and not topic.startswith("_"):  # `_alerts` has no stats
        yield from get_json(topic_path(topic, "stats"))
    frame = history_dataframe(updates, first["windows"], first["stats"])
    frame.attrs["resume_id"] = last["resume_id"]
    frame.attrs["gap"] = first["gap"]
    return frame


def series(
    topic: str,
    *,
    since: Time | None = None,
    until: Time | None = None,
    resolution: str = "auto",
    points: int | None = None,
    group: GroupChoice | None = None,
) -> Plan[pd.DataFrame]:
    """The topic's (or a group's) closed buckets as a DataFrame (`Client.series`)."""
    params = [("resolution", resolution)]
    if since is not None:
        params.append(("since", time_param(since)))
    if until is not None:
        params.append(("until", time_param(until)))
    if points is not None:
        params.append(("points", str(points)))
    params += group_params(group)
    answer = yield Call("GET", topic_path(topic, "series"), params, {"Accept": "application/json"})
    page = msgspec.json.decode(answer.content, type=Series)
    frame = series_dataframe(page.points)
    frame.attrs.update(resolution=page.resolution, more=page.more)
    frame.attrs["segments"] = msgspec.to_builtins(page.segments)
    return frame


def forecast(topic: str, *, group: GroupChoice | None = None) -> Plan[pd.DataFrame]:
    """The topic's (or a group's) latest forecast as a DataFrame (`Client.forecast`)."""
    answer = yield Call(
        "GET", topic_path(topic, "forecast"), group_params(group), {"Accept": "application/json"}
    )
    return forecast_dataframe(msgspec.json.decode(answer.content, type=Forecast))


def check_sendable(events: Sequence[Mapping[str, object]]) -> None:
    """ValueError naming the first event whose `value` or `ts` is NaN or infinite — JSON has
    no such numbers, so it would reach the server as `null` and be refused as "not a number" —
    or whose message `data` holds one (it would be delivered as `null`, not as published) or
    an integer beyond 64 bits (which the server refuses)."""
    for index, event in enumerate(events):
        for name in ("value", "ts"):
            number = event.get(name)
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(
                    f"event {index}: {name} is {number!r}; pushsvc takes finite numbers only"
                )
        if "data" in event:
            problem = _unsendable(event["data"])
            if problem is not None:
                raise ValueError(f"event {index}: data holds {problem}")


def _unsendable(data: object) -> str | None:
    """What in a message's data JSON cannot carry exactly (None: nothing); walked without
    recursion, and no deeper than orjson encodes (it refuses what nests deeper, a cycle too)."""
    pending: list[tuple[object, int]] = [(data, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return f"{node!r}, which JSON has no number for"
        if isinstance(node, int) and not isinstance(node, bool):
            if not _INT_RANGE[0] <= node <= _INT_RANGE[1]:
                return "an integer beyond 64 bits: send it as a string"
        elif depth < _DEEPEST:
            if isinstance(node, Mapping):
                pending.extend((child, depth + 1) for child in node.values())
            elif isinstance(node, (list, tuple)):
                pending.extend((child, depth + 1) for child in node)
    return None


GroupChoice = Mapping[str, str] | str | Sequence[str]
"""One group: `{"station": "grill"}`, or as the HTTP API takes it, `"station:grill"` (or a
list of such pairs, all of which must match)."""


def group_params(group: GroupChoice | None) -> list[tuple[str, str]]:
    """`?group=tag:value` parameters; ValueError for a pair without a colon."""
    if group is None:
        return []
    if isinstance(group, Mapping):
        return [("group", f"{tag}:{value}") for tag, value in group.items()]
    pairs = [group] if isinstance(group, str) else list(group)
    for pair in pairs:
        if not isinstance(pair, str) or ":" not in pair:
            raise ValueError(f"a group is {{tag: value}} or 'tag:value'; got {pair!r}")
    return [("group", pair) for pair in pairs]


def time_param(when: Time) -> str:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("give times as aware datetimes (a naive one has no time zone)")
        return repr(when.timestamp())
    if isinstance(when, bool):
        raise TypeError("a time is epoch seconds, an RFC 3339 string or an aware datetime")
    return when if isinstance(when, str) else repr(float(when))


def batches(events: Sequence[dict[str, object]], size: int) -> Iterator[list[dict[str, object]]]:
    """`events` in order, `size` at a time: one POST each (`pushsvc publish`, `pushsvc
    replay`)."""
    for start in range(0, len(events), size):
        yield list(events[start : start + size])
