"""Producer bodies: JSON (one event or a batch) and NDJSON, validated whole (pure).

`parse_body` turns a POST body into events or raises the first error, so a batch is
accepted whole or rejected whole. What an event may hold is defined once, by
`pushsvc.ingest.event_shape.EventBody`: msgspec decodes a body into it, checking each field as
it reads, and `_accepted` checks what the definition marks as beyond its fields. A body refused
either way is read again by `_explain`, which names the first error in the words a producer
relies on (the `error.message` of docs/api.md); that second reading runs on refusals only, and
`tests/unit/test_event_schema.py` holds the two readings to the same verdicts.

Decisions the contract leaves open:

* An error about one event names its position as `index`: the position in the array or
  among the non-empty NDJSON lines, 0 for a body with one object.
* A batch longer than `MAX_BATCH` is a 413, like an oversized body: both ask the
  producer to send smaller requests.
* Empty `tags` are stored as None; `event_json` echoes no tags as `{}`.
* A `ts` more than `InputLimits.max_future_us` ahead of `now_us` is a `future_event`: the
  topic's clock never goes back, so one such event would make every later event late.
* An event with `type` or `data` is a message (`value` then optional). Its data is kept as
  compact JSON (what every stream sends as its `data:` line); over
  `InputLimits.max_message_bytes` the batch is a 413 like an oversized body. Integers in it
  must fit in 64 bits (send larger ones as strings: a browser's `JSON.parse` would round them
  anyway), and it may nest at most `MAX_DATA_DEPTH` levels.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable

import msgspec
import orjson
from msgspec import UNSET

from pushsvc.core.durations import duration_label
from pushsvc.core.event import (
    DEFAULT_MESSAGE_TYPE,
    MESSAGE_TYPE,
    RESERVED_TYPES,
    US_PER_S,
    Event,
    Message,
)
from pushsvc.errors import (
    BadRequest,
    FutureEvent,
    InvalidEvent,
    LoneSurrogate,
    MalformedJson,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
    WideInteger,
)
from pushsvc.ingest.event_shape import (
    EVENTS,
    MAX_DATA_DEPTH,
    MAX_TAG_KEY_LEN,
    MAX_TAG_VALUE_LEN,
    MAX_TAGS,
    ONE_EVENT,
    EventBody,
)
from pushsvc.ingest.input_limits import DEFAULT_LIMITS, MAX_BATCH, InputLimits
from pushsvc.ingest.timestamps import (
    MAX_TS_US,
    MIN_EVENT_TS_TEXT,
    MIN_EVENT_TS_US,
    parse_rfc3339,
    seconds_to_us,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"

_KEYS = frozenset(EventBody.__struct_fields__)
_REFUSED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError, RequestError)
"""What a body the definition refuses raises (msgspec's ValidationError is a DecodeError)."""


def parse_body(
    body: bytes, content_type: str | None, *, now_us: int, limits: InputLimits = DEFAULT_LIMITS
) -> list[Event]:
    """Validate a POST body and return its events, or raise the first error.

    `now_us` is the receive time given to events without `ts`. Raises
    UnsupportedMediaType, PayloadTooLarge, MalformedJson, InvalidEvent, FutureEvent or
    BadRequest (empty batch).
    """
    kind = media_type(content_type)
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"the body has {len(body)} bytes; the limit is {limits.max_body_bytes}"
        )
    if kind == NDJSON:
        return _parse_ndjson(body, now_us, limits)
    return _parse_json(body, now_us, limits)


def media_type(content_type: str | None) -> str:
    """The media type a body is parsed as (JSON or NDJSON), or UnsupportedMediaType."""
    expected = f"Content-Type must be {JSON} or {NDJSON}"
    if content_type is None:
        raise UnsupportedMediaType(expected)
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type not in (JSON, NDJSON):
        raise UnsupportedMediaType(f"{expected}, not {media_type[:100]!r}")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        # JSON is UTF-8 (RFC 8259); other parameters carry nothing we use.
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise UnsupportedMediaType(f"only UTF-8 is accepted, not {charset[:40]!r}")
    return media_type


def _parse_json(body: bytes, now_us: int, limits: InputLimits) -> list[Event]:
    try:
        doc = EVENTS.decode(body)
        if isinstance(doc, EventBody):
            return [_accepted(doc, 0, now_us, limits)]
        items = doc
        if not items:
            raise BadRequest("the batch is empty")
        if len(items) > MAX_BATCH:
            raise PayloadTooLarge(f"the batch has {len(items)} events; the limit is {MAX_BATCH}")
        return [_accepted(item, index, now_us, limits) for index, item in enumerate(items)]
    except _REFUSED as refused:
        raise _explain(body, refused, now_us, limits, first_index=0, lineno=None) from None


def _accepted(item: EventBody, index: int, now_us: int, limits: InputLimits) -> Event:
    """The event of an `EventBody` msgspec decoded, checked for what its fields cannot say."""
    message = None
    value = None if item.value is UNSET else item.value
    if item.type is not UNSET or item.data is not UNSET:
        kind = DEFAULT_MESSAGE_TYPE if item.type is UNSET else item.type
        message = _message_of(kind, None if item.data is UNSET else item.data, index, limits)
    elif value is None:
        raise InvalidEvent("value is required (or type and data, for a message)", index=index)
    ts_us = now_us if item.ts is UNSET else _ts_us(item.ts, index)
    if ts_us > now_us + limits.max_future_us:
        raise _future(ts_us, now_us, limits, index)
    return Event(value, ts_us, item.tags or None, message)


def _read_field_by_field(
    doc: object, now_us: int, limits: InputLimits, *, first_index: int, lineno: int | None
) -> None:
    """Read a parsed body (`lineno` None) or NDJSON line field by field: the RequestError of
    its first fault, if it has one."""
    if lineno is None:
        _events_of_document(doc, now_us, limits)
    else:
        _event(doc, first_index, now_us, limits)


def _explain(
    text: bytes,
    refused: Exception,
    now_us: int,
    limits: InputLimits,
    *,
    first_index: int,
    lineno: int | None,
) -> RequestError:
    """The first error of a body (or of one NDJSON line) the definition refused, as a
    producer is told it: the same body read again, without the definition, field by field."""
    try:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return _diagnose(text, exc, now_us, limits, first_index=first_index, lineno=lineno)
        if _LONG_DIGITS.search(text) is not None:
            _refuse_wide_integers(text, first_index)
        _read_field_by_field(doc, now_us, limits, first_index=first_index, lineno=lineno)
    except RequestError as found:
        return found
    if isinstance(refused, RequestError):
        return refused
    # The two readings disagree: the definition's verdict stands, in msgspec's words.
    return InvalidEvent(str(refused), index=_index_of(str(refused), first_index))


_MIN_EVENT_S = MIN_EVENT_TS_US // US_PER_S
_PATH_INDEX = re.compile(r"at `\$\[(\d+)\]")


def _index_of(msgspec_error: str, first_index: int) -> int:
    found = _PATH_INDEX.search(msgspec_error)
    return first_index + (int(found.group(1)) if found is not None else 0)


# orjson reads an integer beyond 64 bits as the nearest double, silently. Only a run of 19
# digits or more can be one, so only a body with such a run is read again exactly.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1


def _refuse_wide_integers(text: bytes, first_index: int) -> None:
    """InvalidEvent naming the first event whose message data holds an integer orjson would
    have rounded: a message is delivered as published, or refused."""
    try:
        doc = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError):
        return  # orjson read it: what the standard library refuses is no integer of ours
    items = doc if isinstance(doc, list) else [doc]
    for offset, item in enumerate(items):
        if isinstance(item, dict) and _has_wide_integer(item.get("data")):
            raise WideInteger(
                "data holds an integer beyond 64 bits: send it as a string",
                index=first_index + offset,
            )


def _has_wide_integer(data: object) -> bool:
    return _holds(data, lambda node: isinstance(node, int) and not _I64_MIN <= node <= _U64_MAX)


def _has_too_large(data: object) -> bool:
    return _holds(data, lambda node: isinstance(node, _TooLarge))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(data: object) -> bool:
    """Whether a string or an object key in `data` holds a surrogate code point: a JSON reader
    joins a well-formed pair into one character, so any left is alone."""
    return _holds(data, lambda node: isinstance(node, str) and _SURROGATE.search(node) is not None)


def _holds(data: object, found: Callable[[object], bool]) -> bool:
    """Whether any node of `data` (arrays and objects walked, keys included, booleans skipped)
    is `found`."""
    pending = [data]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif not isinstance(node, bool) and found(node):
            return True
    return False


def _events_of_document(doc: object, now_us: int, limits: InputLimits) -> list[Event]:
    if isinstance(doc, dict):
        return [_event(doc, 0, now_us, limits)]
    if not isinstance(doc, list):
        raise InvalidEvent("the body must be a JSON object (one event) or an array (a batch)")
    if not doc:
        raise BadRequest("the batch is empty")
    if len(doc) > MAX_BATCH:
        raise PayloadTooLarge(f"the batch has {len(doc)} events; the limit is {MAX_BATCH}")
    return [_event(item, index, now_us, limits) for index, item in enumerate(doc)]


def _parse_ndjson(body: bytes, now_us: int, limits: InputLimits) -> list[Event]:
    events: list[Event] = []
    for lineno, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        index = len(events)
        if index == MAX_BATCH:
            raise PayloadTooLarge(f"the batch has more than {MAX_BATCH} events")
        # Validated line by line so that the error raised is the first one.
        try:
            events.append(_accepted(ONE_EVENT.decode(line), index, now_us, limits))
        except _REFUSED as refused:
            raise _explain(
                line, refused, now_us, limits, first_index=index, lineno=lineno
            ) from None
    if not events:
        raise BadRequest("the batch is empty")
    return events


def _diagnose(
    text: bytes,
    exc: orjson.JSONDecodeError,
    now_us: int,
    limits: InputLimits,
    *,
    first_index: int,
    lineno: int | None,
) -> RequestError:
    """Explain a document orjson rejected.

    orjson refuses NaN, Infinity and numbers beyond a double at parse time,
    with messages that do not say why that matters. The standard library
    parses those, so its result, validated, names the event and the field;
    anything it finds acceptable is reported with orjson's message.
    """
    try:
        doc = json.loads(text.decode("utf-8"), parse_int=_lenient_int, parse_float=_lenient_float)
    except (ValueError, RecursionError):
        doc = None
    if doc is not None:
        try:
            _read_field_by_field(doc, now_us, limits, first_index=first_index, lineno=lineno)
        except RequestError as found:
            return found
    if lineno is None:
        return MalformedJson(f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    return MalformedJson(
        f"malformed JSON on line {lineno}: {exc.msg} at column {exc.colno}", index=first_index
    )


class _TooLarge:
    """A number literal beyond the range of a double."""


def _lenient_int(digits: str) -> int | _TooLarge:
    # Only a number with hundreds of digits overflows a double; refuse the
    # quadratic conversion of thousands (Python's int_max_str_digits).
    return int(digits) if len(digits) <= 400 else _TooLarge()


def _lenient_float(literal: str) -> float | _TooLarge:
    number = float(literal)
    return _TooLarge() if math.isinf(number) else number


def _event(item: object, index: int, now_us: int, limits: InputLimits) -> Event:
    if not isinstance(item, dict):
        raise InvalidEvent(f"an event must be a JSON object, not {_describe(item)}", index=index)
    if not _KEYS.issuperset(item):
        unknown = sorted(item.keys() - _KEYS)[0]
        raise InvalidEvent(
            f"unknown field {unknown[:64]!r}; an event has value, ts, tags, type and data",
            index=index,
        )
    message = None
    if "type" in item or "data" in item:
        message = _message(item, index, limits)
        value = _value(item["value"], index) if "value" in item else None
    elif "value" not in item:
        raise InvalidEvent("value is required (or type and data, for a message)", index=index)
    else:
        value = _value(item["value"], index)
    ts_us = _ts_us(item["ts"], index) if "ts" in item else now_us
    if ts_us > now_us + limits.max_future_us:
        raise _future(ts_us, now_us, limits, index)
    tags = _tags(item["tags"], index) if "tags" in item else None
    return Event(value, ts_us, tags, message)


def _future(ts_us: int, now_us: int, limits: InputLimits, index: int) -> FutureEvent:
    return FutureEvent(
        f"ts is {(ts_us - now_us) / US_PER_S:g} s ahead of the server's clock; at most "
        f"{duration_label(limits.max_future_us)} is allowed (--max-future)",
        index=index,
    )


def _message(item: dict[str, object], index: int, limits: InputLimits) -> Message:
    """The message of an event with `type` or `data`: its type (default `message`) and its
    data as compact JSON (default `null`)."""
    kind = item.get("type", DEFAULT_MESSAGE_TYPE)
    if not isinstance(kind, str) or MESSAGE_TYPE.fullmatch(kind) is None:
        shown = kind[:64] if isinstance(kind, str) else _describe(kind)
        raise InvalidEvent(
            f"type must be 1 to 64 ASCII letters, digits or ._:- (an SSE event name), not "
            f"{shown!r}",
            index=index,
        )
    return _message_of(kind, item.get("data"), index, limits)


def _message_of(kind: str, data: object, index: int, limits: InputLimits) -> Message:
    """A message of a valid `type`: checked for what `EventBody` marks beyond its fields."""
    if kind in RESERVED_TYPES:
        raise InvalidEvent(
            f"type {kind!r} is reserved: a messages stream sends it itself", index=index
        )
    if _depth(data) > MAX_DATA_DEPTH:
        raise InvalidEvent(f"data nests deeper than {MAX_DATA_DEPTH} levels", index=index)
    try:
        text = orjson.dumps(data)
    except orjson.JSONEncodeError:
        if _has_too_large(data):
            raise InvalidEvent("data holds a number too large for a double", index=index) from None
        if _has_lone_surrogate(data):
            raise LoneSurrogate(
                "data holds a lone UTF-16 surrogate (\\ud800 to \\udfff without its pair): text "
                "must be valid Unicode",
                index=index,
            ) from None
        raise WideInteger(
            "data holds an integer beyond 64 bits: send it as a string", index=index
        ) from None
    if len(text) > limits.max_message_bytes:
        raise PayloadTooLarge(
            f"the message's data has {len(text)} bytes as compact JSON; the limit is "
            f"{limits.max_message_bytes} (a sixteenth of --max-body)",
            index=index,
        )
    return Message(kind, text)


def _depth(data: object) -> int:
    """How deep `data` nests: 0 for a scalar, 1 for a flat array or object, and so on;
    counted without recursion, and no further than one level past `MAX_DATA_DEPTH`."""
    deepest = 0
    pending: list[tuple[object, int]] = [(data, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children: Iterable[object] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DATA_DEPTH:
                return deepest
        pending.extend((child, depth) for child in children)
    return deepest


def _value(value: object, index: int) -> float:
    # bool is an int subclass, and JSON true is not a number.
    if isinstance(value, float):
        if math.isfinite(value):
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise InvalidEvent("value is too large for a double", index=index) from None
    elif isinstance(value, _TooLarge):
        raise InvalidEvent("value is too large for a double", index=index)
    raise InvalidEvent(f"value must be a finite number, not {_describe(value)}", index=index)


def _ts_us(ts: object, index: int) -> int:
    if isinstance(ts, str):
        try:
            ts_us = parse_rfc3339(ts)
        except ValueError as exc:
            raise InvalidEvent(f"ts: {exc}", index=index) from None
    elif isinstance(ts, float):
        if not math.isfinite(ts):
            raise InvalidEvent(f"ts must be a finite number, not {_describe(ts)}", index=index)
        # Judged in seconds, as `EventBody` bounds them, before rounding to µs.
        ts_us = seconds_to_us(ts) if ts >= _MIN_EVENT_S else MIN_EVENT_TS_US - 1
    elif isinstance(ts, int) and not isinstance(ts, bool):
        ts_us = ts * US_PER_S
    elif isinstance(ts, _TooLarge):
        ts_us = MAX_TS_US + 1
    else:
        raise InvalidEvent(
            f"ts must be epoch seconds or an RFC 3339 string, not {_describe(ts)}", index=index
        )
    if ts_us > MAX_TS_US:
        raise InvalidEvent(
            "ts must be before year 10000 (epoch seconds, not milliseconds)", index=index
        )
    if ts_us < MIN_EVENT_TS_US:
        raise InvalidEvent(
            f"ts must be {MIN_EVENT_TS_TEXT} or later (epoch seconds; 0 or year 1 is "
            "usually a time left unset)",
            index=index,
        )
    return ts_us


def _tags(tags: object, index: int) -> dict[str, str] | None:
    if not isinstance(tags, dict):
        raise InvalidEvent(f"tags must be an object of strings, not {_describe(tags)}", index=index)
    if not tags:
        return None
    if len(tags) > MAX_TAGS:
        raise InvalidEvent(f"at most {MAX_TAGS} tags are allowed", index=index)
    for key, value in tags.items():
        if not isinstance(value, str):
            raise InvalidEvent(
                f"tag {key[:64]!r} must be a string, not {_describe(value)}", index=index
            )
        if not 0 < len(key) <= MAX_TAG_KEY_LEN:
            raise InvalidEvent(
                f"tag names must have 1 to {MAX_TAG_KEY_LEN} characters", index=index
            )
        if len(value) > MAX_TAG_VALUE_LEN:
            raise InvalidEvent(
                f"tag {key!r} is longer than {MAX_TAG_VALUE_LEN} characters", index=index
            )
    return tags


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a number"
