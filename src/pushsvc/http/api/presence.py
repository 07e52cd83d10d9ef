"""GET /topics/{topic}/presence — how many streams watch a topic now, over every web process —
and what a stream's view does for presence: count the stream while it lives, and give it
presence events when it asks (`?presence=1`).

Access is judged as for a stream of that one topic, before anything about the topic is read:
a caller who may not read a private topic gets the answer a topic that never existed gets (the
same 401 or 403), and one who may gets `{"topic", "watching"}`, with `"subs"` (the distinct
token subjects watching) only where the operator keeps them (`--presence-subs`) and the
caller's token has the topic in its presence scope (`pushsvc.security.tokens`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import orjson
from flask import Blueprint, Response, request

from pushsvc.core.presence import Watch
from pushsvc.core.topics import TopicMatcher, validate_readable
from pushsvc.deliver.presence_events import Listener, presence_json
from pushsvc.errors import BadRequest, PresenceNeedsNames
from pushsvc.http.api.context import runtime
from pushsvc.runtime import Runtime
from pushsvc.security.access import ReadAccess

bp = Blueprint("presence", __name__)

_ON = ("1", "true")
_OFF = ("0", "false")


@bp.get("/topics/<anytext:topic>/presence")
def topic_presence(topic: str) -> Response:
    validate_readable(topic)
    rt = runtime()
    # Answered like a stream of that one topic: 401 or 403 where the stream would be.
    reader = rt.gate.reader(request, TopicMatcher([topic]))
    presence = rt.presence.read([topic])[topic]
    body = {"topic": topic, **presence_json(presence, subs_shown(rt, reader)(topic))}
    return Response(
        orjson.dumps(body), mimetype="application/json", headers={"Cache-Control": "no-store"}
    )


def subs_shown(rt: Runtime, reader: ReadAccess) -> Callable[[str], bool]:
    """Which topics' watching subjects this caller may be told."""
    if not rt.settings.presence_subs:
        return _never
    return reader.presence.allows


def _never(topic: str) -> bool:
    return False


def wants_events(value: str | None, names: Iterable[str]) -> bool:
    """`?presence=` of a stream (1 or true, 0 or false); a 400 for anything else, or for a
    stream that names no topic outright (its events are about the topics it names)."""
    if value is None or value.lower() in _OFF:
        return False
    if value.lower() not in _ON:
        raise BadRequest(f"?presence= takes 1 or 0 (true or false); got {value[:64]!r}")
    if not any(True for _ in names):
        raise PresenceNeedsNames(
            "?presence=1 sends the presence of the topics a stream names outright: name at "
            "least one topic (?topic=orders), not only patterns"
        )
    return True


def count_stream(
    rt: Runtime, reader: ReadAccess, listener: Listener | None, release: Callable[[], None]
) -> Callable[[], None]:
    """Count a stream the view accepted; what ends it: `release`, then the stream leaves
    (called once, when the stream is over, whether or not it ever ran)."""
    registry = rt.presence.registry
    scope = None if reader.scope is None else reader.scope.selectors
    watch = Watch.of(reader.matcher, scope, reader.subject)
    registry.join(watch)
    events = rt.presence_events
    if listener is not None and events is not None:
        events.listen(listener)

    def leave() -> None:
        try:
            release()
        finally:
            registry.leave(watch)
            if listener is not None and events is not None:
                events.forget(listener)

    return leave
