"""GET /openapi.json — the HTTP API described as OpenAPI 3.1."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from pushsvc import __version__
from pushsvc.topics import TOPIC_PATTERN

bp = Blueprint("openapi", __name__)

_TOPIC = {
    "name": "topic",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{TOPIC_PATTERN}$"},
}
_ERROR = {"$ref": "#/components/schemas/Error"}
_STREAM_PARAMS: list[dict[str, Any]] = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "schema": {"type": "string"},
        "description": "Resume after this update id.",
    },
    {
        "name": "lastEventId",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Resume after this id on a first connect (EventSource cannot set headers).",
    },
    {
        "name": "windows",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Comma-separated windows to send, e.g. 1m,5m.",
    },
    {
        "name": "stats",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Comma-separated statistics to send, e.g. mean,p99.",
    },
    {
        "name": "max_hz",
        "in": "query",
        "schema": {"type": "number", "exclusiveMinimum": 0},
        "description": "At most this many updates per second per topic, always the latest.",
    },
]


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
        for s in statuses
    }


def _sse(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters + _STREAM_PARAMS,
            "responses": {
                "200": {
                    "description": "snapshot (or replay), then one `stats` event per update",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(400),
            },
        }
    }


def _json_get(
    summary: str,
    schema: dict[str, Any],
    *,
    parameters: list[Any] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": schema}}},
                **_errors(*errors),
            },
        }
    }


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "pushsvc", "version": __version__},
    "paths": {
        "/topics/{topic}/events": {
            "post": {
                "summary": "Publish one event, a batch (array) or NDJSON",
                "parameters": [_TOPIC],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Event"},
                                    {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": {"$ref": "#/components/schemas/Event"},
                                    },
                                ]
                            }
                        },
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "202": {
                        "description": "accepted",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"accepted": {"type": "integer"}},
                                }
                            }
                        },
                    },
                    **_errors(400, 413, 415, 503),
                },
            }
        },
        "/topics/{topic}/stream": _sse("SSE stream of one topic", [_TOPIC]),
        "/stream": _sse(
            "SSE stream of several topics",
            [
                {
                    "name": "topic",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "description": "a topic name, a prefix pattern like sensors.*, or *",
                }
            ],
        ),
        "/topics/{topic}/stats": _json_get(
            "Latest update of a topic", {"type": "object"}, parameters=[_TOPIC], errors=(400, 404)
        ),
        "/topics": _json_get("Topics, last update, subscribers", {"type": "object"}),
        "/healthz": _json_get("Liveness", {"type": "object"}),
        "/readyz": _json_get("Readiness (checks the broker)", {"type": "object"}, errors=(503,)),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": _json_get("This document", {"type": "object"}),
        "/": {
            "get": {
                "summary": "Live dashboard (an HTML page; its assets are under /dashboard/)",
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Event": {
                "type": "object",
                "required": ["value"],
                "additionalProperties": False,
                "properties": {
                    "value": {"type": "number", "description": "finite"},
                    "ts": {
                        "oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]
                    },
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "Error": {
                "type": "object",
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
    },
}


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return SPEC
