"""What differs between the servers under test: the published body and the delivered message.

Every kind publishes `{"value": i, "tags": {"sent": "<time.time() repr>"}}` and reads `i`
and `sent` back from each delivery:

* `pushsvc` — deliveries are `event: stats` updates whose data holds the event under
  `event`; the stream opens with `event: snapshot` (the subscription is live from then on);
  updates without an `event` (window ticks) are not deliveries.
* `flask-sse` — deliveries are unnamed `data:` messages holding exactly what was published;
  the server sends nothing until the first message, so readiness is checked elsewhere
  (Redis `PUBSUB NUMSUB`, by bench/fanout.py).
* `nchan` — the same unnamed `data:` messages (each with an `id:`), after a `: hi` comment;
  readiness is checked elsewhere (nchan's channel info, by bench/fanout.py). Its publisher
  answers 201 when the channel has subscribers, 202 when it has none.
* `sse-starlette` — the same unnamed `data:` messages (bench/peers/sse_starlette_app.py).
* `pushsvc-messages` — pushsvc's messages stream (`/topics/T/messages`): what is published is
  sent as a message's `data` (`{"type": "message", "data": ...}`), and each delivery is an
  `event: message` whose data is exactly that; the subscription is primed before the response
  head, so a subscriber is live once it has it. A message without data (the head's bare `id:`)
  is not a delivery.
* `pushsvc-mercure` — pushsvc's Mercure hub (`/.well-known/mercure`, `--mercure anonymous`):
  what is published is POSTed as a Mercure update's `data` form field (`topic=MERCURE_TOPIC`,
  with a publisher's token, answered 200), and each delivery is an unnamed message whose
  `data:` line is exactly that, after its `id:` (the update's `urn:uuid:`). A subscriber is
  live once it has the head, as on the messages stream (the same priming).

The `message` payload (`--payload message`) is the relay benchmark's: the same object padded
to exactly `MESSAGE_BYTES` bytes of compact JSON, which every server passes on as it is.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from harness.sse_parser import SSEMessage as Message

from bench.loadgen.http1 import ProtocolError

READY = "ready"
"""Returned by a decoder for the message that shows the subscription is live."""

Decoded = tuple[float, float] | str | None
"""(value, sent time) for a delivery, READY, or None for a message that is neither."""

Loads = Callable[[str], Any]
"""How a subscriber parses a message's data: `orjson.loads` (counting), or `browser_loads`."""


def browser_loads(data: str) -> Any:
    """What a browser's `JSON.parse(event.data)` does with an update: the whole document into
    objects, then every statistic read once (a dashboard draws them). The stdlib parser, whose
    cost per byte is nearer a browser's than orjson's."""
    document = json.loads(data)
    windows = document.get("windows") if isinstance(document, dict) else None
    if isinstance(windows, dict):
        for stats in windows.values():
            if isinstance(stats, dict):
                for value in stats.values():
                    _ = value
    return document


def publish_body(value: int, sent: float) -> bytes:
    return b'{"value":%d,"tags":{"sent":"%s"}}' % (value, repr(sent).encode())


def stats_body(value: int, sent: float) -> bytes:
    """The event plus what a pushsvc update carries besides it: three windows of eleven
    statistics (`--payload stats`, for a peer). The same client then parses and reads as much
    per delivery from every server, so that what a peer's latency shows is the server's."""
    n = value + 1
    total = n * (n - 1) / 2
    mean = total / n
    var = (n * n - 1) / 12 if n > 1 else None
    stats = {
        "count": n, "sum": total * 1.000001, "mean": mean / 3, "min": 0.0,
        "max": float(value), "var": var, "stddev": None if var is None else var**0.5,
        "p50": mean * 0.999, "p90": value * 0.9001, "p99": value * 0.99001,
    }  # fmt: skip
    windows = {window: dict(stats) for window in ("10s", "1m", "5m")}
    return orjson.dumps(
        {"value": value, "ts": sent, "tags": {"sent": repr(sent)}, "windows": windows}
    )


MESSAGE_BYTES = 100
"""The relayed message's size (`--payload message`)."""


def message_body(value: int, sent: float) -> bytes:
    """The event padded to `MESSAGE_BYTES` of compact JSON: the same bytes on every server."""
    head = b'{"value":%d,"tags":{"sent":"%s"},"pad":"' % (value, repr(sent).encode())
    return head + b"x" * max(0, MESSAGE_BYTES - len(head) - 2) + b'"}'


PAYLOADS: dict[str, Callable[[int, float], bytes]] = {
    "plain": publish_body,
    "stats": stats_body,
    "message": message_body,
}
"""`--payload`: what the publisher POSTs."""


def _delivery(payload: object) -> tuple[float, float]:
    try:
        return payload["value"], float(payload["tags"]["sent"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"delivery without value/tags.sent: {payload!r:.200}") from None


def decode_pushsvc(message: Message, loads: Loads = orjson.loads) -> Decoded:
    if message.event == "stats":
        update = loads(message.data)
        event = update.get("event")
        return None if event is None else _delivery(event)
    if message.event == "snapshot":
        return READY
    raise ProtocolError(f"unexpected event type {message.event!r}")


def decode_message(message: Message, loads: Loads = orjson.loads) -> Decoded:
    """pushsvc's messages stream: every message with data is a delivery of what was published."""
    if message.event == "gap":
        raise ProtocolError(f"a gap: {message.data[:200]}")
    return _delivery(loads(message.data)) if message.data else None


def decode_unnamed(message: Message, loads: Loads = orjson.loads) -> Decoded:
    """Flask-SSE and nchan: every unnamed message is a delivery of what was published."""
    if message.event == "message":
        return _delivery(loads(message.data))
    raise ProtocolError(f"unexpected event type {message.event!r}")


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    decode: Callable[[Message, Loads], Decoded]
    ready_on_snapshot: bool
    """True: a subscriber is ready at READY; False: once its request is written."""
    publish_statuses: frozenset[int]
    """The statuses of an accepted publish."""
    envelope: Callable[[bytes], bytes] | None = None
    """What is POSTed for a payload, when not the payload itself (as a pushsvc message)."""
    content_type: str = "application/json"
    """The published body's media type."""


def as_message(payload: bytes) -> bytes:
    return b'{"type":"message","data":%s}' % payload


MERCURE_TOPIC = "https://bench.example/topics/bench"
"""The topic IRI a Mercure benchmark publishes to and its subscribers match."""
_MERCURE_FORM_HEAD = b"topic=%s&data=" % urllib.parse.quote(MERCURE_TOPIC, safe="").encode()


def as_mercure_update(payload: bytes) -> bytes:
    """A Mercure publication's form body: the topic, and the payload as the update's data."""
    return _MERCURE_FORM_HEAD + urllib.parse.quote_from_bytes(payload, safe="").encode()


KINDS = {
    "pushsvc": Kind("pushsvc", decode_pushsvc, True, frozenset({202})),
    "flask-sse": Kind("flask-sse", decode_unnamed, False, frozenset({202})),
    "nchan": Kind("nchan", decode_unnamed, False, frozenset({201, 202})),
    "sse-starlette": Kind("sse-starlette", decode_unnamed, False, frozenset({202})),
    "pushsvc-messages": Kind(
        "pushsvc-messages", decode_message, False, frozenset({202}), envelope=as_message
    ),
    "pushsvc-mercure": Kind(
        "pushsvc-mercure",
        decode_message,
        False,
        frozenset({200}),
        envelope=as_mercure_update,
        content_type="application/x-www-form-urlencoded",
    ),
}
