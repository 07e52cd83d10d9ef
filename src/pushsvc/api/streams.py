"""GET /topics/{topic}/stream and GET /stream?topic=… — the SSE endpoints.

One streaming loop with named exits (see docs/architecture.md):
* `shutdown` — the server is stopping (hub.close);
* `slow`     — the client took nothing for the slow-client timeout while its queue overflowed;
* client gone — the WSGI server raises in the generator's `yield` or closes it (GeneratorExit);
* otherwise: wait for updates, or send a heartbeat when `heartbeat` passes with none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import gevent
import orjson
from flask import Blueprint, Response, request

from pushsvc.api.context import runtime
from pushsvc.broker.base import Broker, Update
from pushsvc.errors import BadRequest
from pushsvc.hub import Client, Hub
from pushsvc.ids import parse_id
from pushsvc.sse import HEADERS, HEARTBEAT, encode_message, encode_update, retry_line
from pushsvc.topics import TopicMatcher, validate_topic

bp = Blueprint("streams", __name__)


@bp.get("/topics/<anytext:topic>/stream")
def topic_stream(topic: str) -> Response:
    validate_topic(topic)
    return _stream([topic])


@bp.get("/stream")
def multi_stream() -> Response:
    selectors = request.args.getlist("topic")
    if not selectors:
        raise BadRequest("give at least one ?topic= (a name, or a prefix pattern like sensors.*)")
    return _stream(selectors)


def _stream(selectors: Sequence[str]) -> Response:
    # Read everything from the request here: the generator runs after the view returns.
    rt = runtime()
    matcher = TopicMatcher(selectors)
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    exact = None if any("*" in s for s in selectors) else frozenset(selectors)
    client = rt.hub.subscribe(matcher, exact)
    body = _events(
        rt.broker,
        rt.hub,
        client,
        matcher,
        last_event_id,
        heartbeat_s=rt.settings.heartbeat / 1_000_000,
        retry_ms=rt.settings.retry // 1000,
    )
    return Response(body, headers=HEADERS)


def _events(
    broker: Broker,
    hub: Hub,
    client: Client,
    matcher: TopicMatcher,
    last_event_id: str | None,
    *,
    heartbeat_s: float,
    retry_ms: int,
) -> Iterator[bytes]:
    # The client is subscribed before history and snapshot are read, so nothing emitted
    # in between is missed; `floor` then drops what the replay or snapshot already covered.
    try:
        yield retry_line(retry_ms)
        replay = broker.replay(last_event_id, matcher) if last_event_id else None
        if replay is None:
            snapshot, floor = _snapshot(broker, matcher, gap=last_event_id is not None)
            yield snapshot
        else:
            yield b"".join(encode_update(u.id, u.data) for u in replay)
            floor = parse_id(replay[-1].id if replay else last_event_id or "")
        while client.closed_reason is None:
            client.writer = None
            deliveries = client.take(heartbeat_s)
            client.writer = gevent.getcurrent()
            if not deliveries:
                if client.closed_reason is None:
                    yield HEARTBEAT
                continue
            if floor is not None:
                fresh = [d for d in deliveries if _is_after(d.update.id, floor)]
                if len(fresh) == len(deliveries):
                    floor = None  # ids only grow from here: stop comparing
                deliveries = fresh
            if deliveries:
                yield b"".join(d.frame for d in deliveries)
    finally:
        hub.unsubscribe(client)


def _is_after(update_id: str, floor: tuple[str, int, int]) -> bool:
    parsed = parse_id(update_id)
    # An id of another epoch comes from a history reset after the floor was taken: it is new.
    return parsed is None or parsed[0] != floor[0] or parsed[1:] > floor[1:]


def _snapshot(
    broker: Broker, matcher: TopicMatcher, *, gap: bool
) -> tuple[bytes, tuple[str, int, int] | None]:
    latest: dict[str, Update] = broker.latest(matcher)
    topics = {}
    newest: Update | None = None
    for topic, update in sorted(latest.items()):
        state = orjson.loads(update.data)
        topics[topic] = {"id": update.id, "ts": state["ts"], "windows": state["windows"]}
        if newest is None or _is_after(update.id, parse_id(newest.id) or ("", 0, 0)):
            newest = update
    data = orjson.dumps({"gap": gap, "topics": topics})
    message = encode_message(data, event="snapshot", id=newest.id if newest else None)
    return message, parse_id(newest.id) if newest else None
