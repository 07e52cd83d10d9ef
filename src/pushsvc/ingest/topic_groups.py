"""A request that publishes to many topics, cut into one group per topic (pure).

Two shapes come in: a cross-topic batch (`POST /events`: a JSON array, or NDJSON, of events
each naming its `topic`) and a broadcast (`POST /broadcast`: one event and the list of its
`topics`). Each becomes `TopicGroup`s, one per topic in the order topics first appear, holding
the positions of its items in the request and its events as the body a one-topic POST would
carry (a JSON array, the `topic` key taken out). Each group is then taken in exactly as such a
POST (`pushsvc.ingest.accept.ingest`), so every event is judged by the same parser, the same
bounds and the same lateness rule, with the same words.

Only the request's shape is judged here, and a fault in it refuses the request whole: a body
that is no JSON (or a line that is not), no array or object where one is due, an item that is
no object or names no topic as a string, an empty request, more items than `MAX_BATCH`
(413, as a one-topic batch), a broadcast naming a topic twice. What an item says as an event
(its value, time, tags, message) and whether its topic is a valid name are its group's
affair.

Re-encoding: the items are read by orjson and the groups written back by it, compactly, so a
group's body is never longer than the items' share of the request, but for number literals
written shorter than orjson writes them (`1e2` becomes `100.0`): the request's bytes are
bounded at read (`--max-body`), and the groups are taken in under no body bound of their own.
orjson reads an integer beyond 64 bits as the nearest double, and refuses `NaN`; a body with
a run of 19 digits or more, or one orjson refuses, is read and written by the standard
library instead, which keeps such integers exact and `NaN` as written, so that the group's
parser names them as a one-topic POST does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from pushsvc.errors import BadRequest, InvalidEvent, MalformedJson, PayloadTooLarge
from pushsvc.ingest.input_limits import MAX_BATCH, InputLimits
from pushsvc.ingest.parse import JSON, NDJSON, media_type

_LONG_DIGITS = re.compile(rb"[0-9]{19}")
TOPIC_KEY = "topic"
TOPICS_KEY = "topics"


@dataclass(frozen=True, slots=True)
class TopicGroup:
    """The items of one topic: `topic` as the request named it (checked when the group is
    taken in), `items` their positions in the request, in order, and `body` their events as
    a JSON array."""

    topic: str
    items: tuple[int, ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Codec:
    loads: Callable[[bytes], object]
    dumps: Callable[[object], bytes]


_ORJSON = _Codec(orjson.loads, orjson.dumps)
_STDLIB = _Codec(
    lambda text: json.loads(text.decode("utf-8")),
    lambda doc: json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
)


def batch_groups(body: bytes, content_type: str | None, limits: InputLimits) -> list[TopicGroup]:
    """The groups of a cross-topic batch (JSON array or NDJSON, each item an event with its
    `topic`), or the RequestError of its shape."""
    kind = media_type(content_type)
    _bound_body(body, limits)
    codec = _codec(body)
    if kind == NDJSON:
        items, codec = _ndjson_items(body, codec, limits)
    else:
        doc, codec = _load(body, codec, lineno=None)
        if not isinstance(doc, list):
            raise BadRequest(
                "a batch of many topics is a JSON array of events, each naming its topic "
                '({"topic": "u1", "data": …}), or NDJSON of them'
            )
        items = doc
    if not items:
        raise BadRequest("the batch is empty")
    if len(items) > MAX_BATCH:
        raise PayloadTooLarge(f"the batch has {len(items)} events; the limit is {MAX_BATCH}")
    grouped: dict[str, tuple[list[int], list[object]]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidEvent(
                "each item of a batch is an event (a JSON object) naming its topic", index=index
            )
        topic = item.pop(TOPIC_KEY, None)
        if not isinstance(topic, str):
            raise InvalidEvent(
                'each item of a batch names its topic as a string ("topic": "u1")',
                index=index,
            )
        positions, events = grouped.setdefault(topic, ([], []))
        positions.append(index)
        events.append(item)
    return [
        TopicGroup(topic, tuple(positions), codec.dumps(events))
        for topic, (positions, events) in grouped.items()
    ]


def broadcast_groups(
    body: bytes, content_type: str | None, limits: InputLimits
) -> list[TopicGroup]:
    """The groups of a broadcast (`{"topics": [...], …the event}`: one event to each topic,
    the topics in the order given), or the RequestError of its shape."""
    if media_type(content_type) != JSON:
        raise BadRequest("a broadcast is one JSON object: its topics and its event")
    _bound_body(body, limits)
    doc, codec = _load(body, _codec(body), lineno=None)
    if not isinstance(doc, dict):
        raise BadRequest(
            'a broadcast is a JSON object: {"topics": ["u1", "u2"], "type": …, "data": …}'
        )
    topics = doc.pop(TOPICS_KEY, None)
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise BadRequest('a broadcast names its topics as an array of strings ("topics")')
    if not topics:
        raise BadRequest("the broadcast names no topic")
    if len(topics) > MAX_BATCH:
        raise PayloadTooLarge(f"the broadcast names {len(topics)} topics; the limit is {MAX_BATCH}")
    if len(set(topics)) != len(topics):
        twice = next(t for i, t in enumerate(topics) if t in topics[:i])
        raise BadRequest(f"the broadcast names topic {twice[:130]!r} more than once")
    events = codec.dumps([doc])  # written once, shared by every group
    return [TopicGroup(topic, (index,), events) for index, topic in enumerate(topics)]


def _bound_body(body: bytes, limits: InputLimits) -> None:
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"the body has {len(body)} bytes; the limit is {limits.max_body_bytes}"
        )


def _codec(body: bytes) -> _Codec:
    return _STDLIB if _LONG_DIGITS.search(body) is not None else _ORJSON


def _load(text: bytes, codec: _Codec, *, lineno: int | None) -> tuple[object, _Codec]:
    """The document `text` holds, and the codec that read it (and is to write it back)."""
    try:
        return codec.loads(text), codec
    except (ValueError, RecursionError) as exc:
        if codec is _ORJSON:
            try:  # NaN, Infinity, numbers beyond a double: the group's parser names them
                return _STDLIB.loads(text), _STDLIB
            except (ValueError, RecursionError):
                pass
        where = "" if lineno is None else f" on line {lineno}"
        raise MalformedJson(f"malformed JSON{where}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _ndjson_items(body: bytes, codec: _Codec, limits: InputLimits) -> tuple[list[object], _Codec]:
    """The items of an NDJSON body, and the codec to write them back with (the standard
    library's when it had to read any line)."""
    items: list[object] = []
    used = codec
    for lineno, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        if len(items) == MAX_BATCH:
            raise PayloadTooLarge(f"the batch has more than {MAX_BATCH} events")
        item, reader = _load(line, codec, lineno=lineno)
        items.append(item)
        if reader is _STDLIB:
            used = _STDLIB
    return items, used
