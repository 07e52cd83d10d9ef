"""The OpenAPI document's fixed schemas: the shapes of events, updates, topics, readiness and
errors, which no setting changes. `openapi.py` builds the rest from the settings."""

from __future__ import annotations

from typing import Any

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_WINDOWS = {
    "type": "object",
    "description": "statistics by window label; null where undefined (an empty window)",
    "additionalProperties": {
        "type": "object",
        "additionalProperties": _NUMBER_OR_NULL,
    },
}

READINESS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ready", "unavailable", "redis_evicts", "redis_full", "no_aggregator"]},
        "broker": {"type": "string", "description": "why the broker is unavailable"},
        "reason": {
            "type": "string",
            "description": "redis_evicts: the maxmemory-policy and the fix; redis_full: memory "
            "used of maxmemory, and how many log entries the aggregators are behind",
        },
        "shards": {"type": "object"},
    },
}

SCHEMAS: dict[str, Any] = {
    "History": {
        "type": "object",
        "required": ["topic", "resume_id", "more", "gap", "windows", "stats", "updates"],
        "properties": {
            "topic": {"type": "string"},
            "resume_id": {"type": ["string", "null"]},
            "more": {"type": "boolean"},
            "gap": {"type": "boolean"},
            "windows": {"type": "array", "items": {"type": "string"}},
            "stats": {"type": "array", "items": {"type": "string"}},
            "updates": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Update"},
                "description": "the updates exactly as streamed",
            },
        },
    },
    "Event": {
        "type": "object",
        "required": ["value"],
        "additionalProperties": False,
        "properties": {
            "value": {"type": "number", "description": "finite"},
            "ts": {"oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Update": {
        "type": "object",
        "required": ["id", "topic", "ts", "reason", "event", "windows"],
        "properties": {
            "id": {"type": "string"},
            "topic": {"type": "string"},
            "ts": {"type": "number"},
            "reason": {"type": "string"},
            "event": {"type": ["object", "null"]},
            "windows": _WINDOWS,
        },
    },
    "Topics": {
        "type": "object",
        "required": ["topics"],
        "properties": {
            "topics": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["topic", "last_id", "last_ts", "subscribers"],
                    "properties": {
                        "topic": {"type": "string"},
                        "last_id": {"type": "string"},
                        "last_ts": {"type": "number"},
                        "subscribers": {"type": "integer", "minimum": 0},
                    },
                },
            }
        },
    },
    "SSE": {
        "description": "one server-sent event: a `snapshot` first (or a replay of `stats` "
        "events), then a `stats` event per update; `data` is one line of JSON",
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": ["snapshot", "stats"]},
            "id": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "retry": {"type": "integer"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "index": {"type": "integer"},
                },
            }
        },
    },
}
