"""The OpenAPI document's fixed schemas: the shapes of events, updates, points, alerts,
listings, readiness and errors, which no setting changes. `openapi.py` builds the rest from the
settings.

The shapes that subscribers and API callers receive, and the event a producer posts, are
msgspec classes (`SHAPES`, `pushsvc.ingest.event_shape`), which the client decodes into (and
the server encodes a POST's answer and every error from): their schemas are generated from
them (`shape_schemas`). What no such class defines is still written here: readiness (the
server's alone), the rules (`GET /rules`, read by the client as JSON) and the SSE frames
(`Message`, `SSE`), which are no JSON bodies."""

from __future__ import annotations

from typing import Any

from pushsvc.core import shape_schema
from pushsvc.core.alert_shape import AlertChangeMessage
from pushsvc.core.answers import ANSWERS
from pushsvc.core.listing_shapes import Alerts, Anomalies, History, Series, TopicPresence, Topics
from pushsvc.core.point_shape import Forecast, PointMessage
from pushsvc.core.rules_shape import RulesView
from pushsvc.core.snapshot_shape import SnapshotMessage
from pushsvc.core.topics import TOPIC_PATTERN
from pushsvc.core.update_shape import StreamUpdate
from pushsvc.core.window_stats import FunnelStep, MessageRate, TopValue
from pushsvc.http.api.readiness_shape import Readiness
from pushsvc.ingest.event_shape import event_schema

SHAPES = (
    *ANSWERS,
    StreamUpdate,
    SnapshotMessage,
    PointMessage,
    Forecast,
    AlertChangeMessage,
    History,
    Series,
    Anomalies,
    Topics,
    Alerts,
    TopicPresence,
    Readiness,
    RulesView,
    # Named by the keyed objects' schemas (`shape_schema.keyed_schema`), which msgspec does
    # not follow.
    TopValue,
    FunnelStep,
    MessageRate,
)
"""The classes `/openapi.json` describes (with the classes they hold)."""


def shape_schemas() -> dict[str, Any]:
    """The component schemas generated from the classes that define them (one per class, by
    its name, with the classes it holds), `Event` and `TopicEvent` among them."""
    return {
        **shape_schema.components(SHAPES),
        "Event": event_schema(),
        "TopicEvent": topic_event_schema(),
    }


def topic_event_schema() -> dict[str, Any]:
    """An item of `POST /events`: an `Event` naming its `topic`."""
    schema = event_schema()
    return {
        **schema,
        "description": "an event (see Event) naming its topic: an item of a batch of many topics",
        "properties": {
            **schema["properties"],
            "topic": {"type": "string", "pattern": f"^{TOPIC_PATTERN}$"},
        },
        "required": ["topic"],
    }


SCHEMAS: dict[str, Any] = {
    "Message": {
        "description": "one server-sent event of a messages stream: `event` the message's type, "
        "`data` its data as published (compact JSON, one line), `id` its update's id (or the "
        'stream\'s cursor); `event: gap` (data `{"topics": [...]}`) where a resume could not be '
        "exact; a first `id` alone (no data) marks where the stream started",
        "type": "object",
        "properties": {
            "event": {"type": "string"},
            "id": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "retry": {"type": "integer"},
        },
    },
    "SSE": {
        "description": "one server-sent event: a `snapshot` first (or a replay of `stats` "
        "events), then a `stats` event per update (and, with `?presence=1`, a `presence` "
        "event, no `id`, when the presence of the topics it names changed); `data` is one "
        "line of JSON",
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": ["snapshot", "stats", "presence"]},
            "id": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "retry": {"type": "integer"},
        },
    },
    **shape_schemas(),
}
