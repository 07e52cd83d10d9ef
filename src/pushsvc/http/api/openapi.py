"""GET /openapi.json — the HTTP API described as OpenAPI 3.1, as this server runs it.

The description is built from the settings, so that it says what the server really does
(`tests/system/test_openapi_fuzz.py` holds it to that with schemathesis): security requirements only
with auth on, the query token only when enabled, anonymous reading only for configured
selectors, and the windows, statistics and selector limit in force — those of the rules the
caller may see (`pushsvc.security.visible_rules.visible_names`), as its requests are judged.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, request

from pushsvc import __version__
from pushsvc.config import Settings
from pushsvc.core.durations import duration_label
from pushsvc.core.idempotency import HEADER, IDEMPOTENCY_WINDOW_US, KEY_PATTERN, REPLAYED_HEADER
from pushsvc.core.topics import MAX_SELECTORS, TOPIC_PATTERN
from pushsvc.deliver.message_replay import MAX_REPLAY
from pushsvc.errors import AuthUnavailable, TooManyRequests, Unauthorized
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import EPOCH_SECONDS
from pushsvc.http.api.openapi_parts import (
    BACKEND,
    ERROR,
    ERROR_HEADERS,
    GROUP_PARAM,
    LIMIT,
    POST_BAD_REQUEST,
    POST_TOO_LARGE,
    POST_UNAVAILABLE,
    READINESS,
    SELECTOR_PATTERN,
    TOPIC,
    Security,
    auth_errors,
    backend_errors,
    choice_list,
    error_responses,
    series_param,
    time_param,
    topic_group_param,
)
from pushsvc.http.api.openapi_schemas import SCHEMAS
from pushsvc.http.api.topics import ALERTS_CURSOR_PATTERN
from pushsvc.ingest.input_limits import MAX_BATCH
from pushsvc.rules.analytics import Rules
from pushsvc.security.backend_auth import FORWARDED_HEADERS
from pushsvc.security.visible_rules import visible_names

bp = Blueprint("openapi", __name__)


def _series(rules: Rules, reading: Security | None) -> dict[str, Any]:
    resolutions = ["auto", *rules.series_labels]
    return {
        "get": {
            "summary": "Closed buckets of a topic (or group) at a resolution, over any range kept",
            "description": (
                "Points in ascending `t` (bucket start). `resolution=auto&points=N`: among "
                "the tiers keeping the whole range, the coarsest still giving N/2 points over "
                "it, the most recent part from finer tiers (`segments`). CSV columns: "
                "resolution, time, then the point's "
                "statistics."
            ),
            "parameters": [
                TOPIC,
                {
                    "name": "resolution",
                    "in": "query",
                    "schema": {"type": "string", "enum": resolutions, "default": "auto"},
                    "description": "a tier of the topic's rule, or auto",
                },
                {
                    "name": "points",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 2, "maximum": 10_000, "default": 300},
                    "description": "with resolution=auto: about how many points the chart wants",
                },
                time_param("since", "bucket starts at or after (epoch s or RFC 3339)"),
                time_param("until", "bucket starts before (epoch s or RFC 3339)"),
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100_000},
                },
                topic_group_param(
                    rules, "tag:value for every tag the topic groups by: that group's series"
                ),
                {
                    "name": "format",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["json", "csv"]},
                    "description": "overrides the Accept header (application/json or text/csv)",
                },
            ],
            **({"security": reading} if reading is not None else {}),
            "responses": {
                "200": {
                    "description": "the points",
                    "headers": {
                        "Pushsvc-More": {"schema": {"type": "string", "enum": ["true", "false"]}},
                        "Pushsvc-Resolution": {"schema": {"type": "string"}},
                    },
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Series"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **error_responses(400, *auth_errors(reading), 503),
            },
        }
    }


def _anomalies(reading: Security | None) -> dict[str, Any]:
    return {
        "get": {
            "summary": "Topics and groups ranked by anomaly rate over a range",
            "description": (
                "Of the topics the caller may read whose rule scores anomalies: the topic's "
                "series and each live group's, the points of the rule's `every` tier whose "
                "bucket starts in [since, until), anomalous / scored, with the most anomalous "
                "points."
            ),
            "parameters": [
                time_param("since", "bucket starts at or after (epoch s or RFC 3339)"),
                time_param("until", "bucket starts before (epoch s or RFC 3339)"),
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
                    "description": "the most entries to answer",
                },
            ],
            **({"security": reading} if reading is not None else {}),
            "responses": {
                "200": {
                    "description": "the ranking",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Anomalies"}}
                    },
                },
                **error_responses(400, *auth_errors(reading), 503),
            },
        }
    }


_RESUME_PARAMS: list[dict[str, Any]] = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "schema": {"type": "string"},
        "description": "Resume after this stream id, the last `id:` the stream wrote (an "
        "opaque cursor; one that cannot be resumed: a gap).",
    },
    {
        "name": "lastEventId",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Resume after this id on a first connect (EventSource cannot set headers).",
    },
]


def _stream_params(rules: Rules, group: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *_RESUME_PARAMS,
        {
            "name": "windows",
            "in": "query",
            "schema": choice_list(rules.labels),
            "description": "Comma-separated windows to send, e.g. 1m,5m.",
        },
        {
            "name": "stats",
            "in": "query",
            "schema": choice_list(rules.stats),
            "description": "Comma-separated statistics to send, e.g. mean,p99.",
        },
        group,
        series_param(rules),
        {
            **series_param(rules),
            "name": "forecast",
            "description": "a series resolution, repeatable: also send the forecast made as "
            "each bucket of that tier closes (a rule's `forecast`) as an `event: point` "
            "message whose `forecast` is a `Forecast`",
        },
        {
            "name": "precision",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 17},
            "description": "Significant digits of every statistic that is not a whole count, "
            "e.g. 4 sends 12.35 for 12.3456789 (17, or none, sends every digit). The event "
            "and ts are never rounded.",
        },
        {
            "name": "max_hz",
            "in": "query",
            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
            "description": "At most this many updates per second per topic, always the latest.",
        },
        {
            "name": "presence",
            "in": "query",
            "schema": {"type": "string", "enum": ["1", "0", "true", "false"]},
            "description": "1: also send `event: presence` (no id), the presence of the "
            "topics the stream names outright, at most once a second and only when it changed "
            "(a stream of patterns only: 400).",
        },
    ]


def _sse(
    summary: str,
    parameters: list[dict[str, Any]],
    rules: Rules,
    security: Security | None,
    group: dict[str, Any],
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters + _stream_params(rules, group),
            **({"security": security} if security is not None else {}),
            "responses": {
                "200": {
                    "description": "snapshot (or replay), then one `stats` event per update; "
                    "the schema is that of each event",
                    "content": {
                        "text/event-stream": {"schema": {"$ref": "#/components/schemas/SSE"}}
                    },
                },
                **error_responses(400, *auth_errors(security), 429, 503),
            },
        }
    }


def _messages_sse(
    summary: str, parameters: list[dict[str, Any]], security: Security | None
) -> dict[str, Any]:
    replay = {
        "name": "replay",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_REPLAY},
        "description": "Without Last-Event-ID: start with the last N messages of the topics, "
        "then live.",
    }
    return {
        "get": {
            "summary": summary,
            "parameters": [*parameters, *_RESUME_PARAMS, replay],
            **({"security": security} if security is not None else {}),
            "responses": {
                "200": {
                    "description": "one event per message, `event:` its type and `data:` its "
                    "data as published; no snapshot; `event: gap` where a resume is not exact",
                    "content": {
                        "text/event-stream": {"schema": {"$ref": "#/components/schemas/Message"}}
                    },
                },
                **error_responses(400, *auth_errors(security), 429, 503),
            },
        }
    }


def _json_get(
    summary: str,
    schema: dict[str, Any],
    *,
    parameters: list[Any] | None = None,
    errors: tuple[int, ...] = (),
    security: Security | None = None,
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            **({"security": security} if security is not None else {}),
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": schema}}},
                **error_responses(*errors),
            },
        }
    }


def _security(settings: Settings) -> tuple[Security | None, Security | None, dict[str, Any]]:
    """Publishing's and reading's security requirements (None: auth is off) and the schemes."""
    if settings.jwt_key is None and settings.auth_url is None:
        return None, None, {}
    schemes: dict[str, Any] = {}
    if settings.jwt_key is not None:
        schemes["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        schemes["cookie"] = {"type": "apiKey", "in": "cookie", "name": "pushsvc_token"}
    if settings.auth_url is not None:
        forwarded = [("cookie", name) for name in settings.auth_cookies]
        forwarded += [("header", name) for name in FORWARDED_HEADERS]
        for where, name in forwarded:
            schemes[f"{BACKEND}{where}_{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"] = {
                "type": "apiKey",
                "in": where,
                "name": name,
                "description": "the application's own credential, judged by it (--auth-url)",
            }
    publishing: Security = [{name: []} for name in schemes]
    reading: Security = [{name: []} for name in schemes]
    if settings.token_query:
        schemes["query"] = {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "subscribing only",
        }
        reading.append({"query": []})
    if settings.anonymous:
        reading.append({})  # the anonymous selectors need no token
    return publishing, reading, schemes


_UPDATE_ID_PATTERN = r"^[0-9a-f]{1,16}:(0|[1-9][0-9]{0,18})-(0|[1-9][0-9]{0,18})$"
_HISTORY_HEADERS = {
    "Pushsvc-Resume-Id": {
        "description": "the resume_id (absent when the history is empty)",
        "schema": {"type": "string"},
    },
    "Pushsvc-More": {"schema": {"type": "string", "enum": ["true", "false"]}},
    "Pushsvc-Gap": {"schema": {"type": "string", "enum": ["true", "false"]}},
}


def _history(rules: Rules, reading: Security | None) -> dict[str, Any]:
    return {
        "get": {
            "summary": "Recent updates of a topic from the bounded history (JSON or CSV)",
            "description": (
                "Newest last. Without `since`: the newest `limit` updates. With `since` an "
                "update id: the first `limit` after it (exclusive, like Last-Event-ID). With "
                "`since` a time: the first `limit` whose `ts` is at or after it. `resume_id` is "
                "the Last-Event-ID from which a stream continues this answer with no gap and no "
                "duplicate. CSV columns: id, time, reason, value, then {window}_{stat}. The "
                "reserved topic `_alerts` answers its alert changes (JSON; `since` an id), "
                "kept as long as the longest series retention whatever the history keeps."
            ),
            "parameters": [
                TOPIC,
                topic_group_param(rules, GROUP_PARAM["description"]),
                {
                    "name": "since",
                    "in": "query",
                    "schema": {
                        "anyOf": [
                            {"type": "string", "pattern": _UPDATE_ID_PATTERN},
                            {"type": "string", "pattern": f"^{EPOCH_SECONDS.pattern}$"},
                            {"type": "string", "format": "date-time"},
                        ]
                    },
                    "description": "an update id, epoch seconds, or an RFC 3339 date-time",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 10_000,
                        "default": 1000,
                    },
                },
                {
                    "name": "format",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["json", "csv"]},
                    "description": "overrides the Accept header (application/json or text/csv)",
                },
            ],
            **({"security": reading} if reading is not None else {}),
            "responses": {
                "200": {
                    "description": "the page",
                    "headers": _HISTORY_HEADERS,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/History"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **error_responses(400, *auth_errors(reading), 503),
            },
        }
    }


def _topic_delete(publishing: Security | None) -> dict[str, Any]:
    return {
        "delete": {
            "summary": "Delete a topic: its windows, history, series, groups, alerts and clock "
            "(its next event starts it afresh; its streams get a gap snapshot)",
            "parameters": [TOPIC],
            **({"security": publishing} if publishing is not None else {}),
            "responses": {
                "200": {
                    "description": "deleted",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["topic", "deleted"],
                                "properties": {
                                    "topic": {"type": "string"},
                                    "deleted": {"type": "boolean", "enum": [True]},
                                },
                            }
                        }
                    },
                },
                **error_responses(400, *auth_errors(publishing), 404, 503),
            },
        }
    }


_MANY_TOPICS_ANSWER = (
    "the request was judged topic by topic: each topic's events were logged together or "
    "refused together (`results`, in the order topics first appear; `items` the positions in "
    "the request). 202: every topic's were logged; 207: some topic's were refused (its "
    "result's `error` says why: forbidden, too_many_topics, late_event, broker_unavailable...)"
)


def _many_topic_post(
    settings: Settings, publishing: Security | None, key: dict[str, Any], *, broadcast: bool
) -> dict[str, Any]:
    """`POST /events` (a batch whose events name their topics) or `POST /broadcast` (one event
    to many topics)."""
    answer = {
        "description": _MANY_TOPICS_ANSWER,
        "headers": {
            REPLAYED_HEADER: {
                "description": "`true` when every topic's events logged were logged by an "
                "earlier request with the same Idempotency-Key (nothing was logged now)",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TopicsAccepted"}}
        },
    }
    if broadcast:
        event = SCHEMAS["Event"]
        body_schema = {
            **event,
            "description": "one event (see Event) and the topics to publish it to",
            "properties": {
                **event["properties"],
                "topics": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": f"^{TOPIC_PATTERN}$"},
                },
            },
            "required": ["topics"],
        }
        content: dict[str, Any] = {"application/json": {"schema": body_schema}}
        summary = "Publish one event (or message) to each of many topics"
    else:
        content = {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                    "items": {"$ref": "#/components/schemas/TopicEvent"},
                }
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
        }
        summary = "Publish a batch whose events name their own topics (array or NDJSON)"
    return {
        "summary": summary,
        "parameters": [key],
        **({"security": publishing} if publishing is not None else {}),
        "requestBody": {"required": True, "content": content},
        "responses": {
            "202": answer,
            "207": answer,
            **error_responses(400, *auth_errors(publishing), 411, 413, 415, 422, 429, 503),
            "400": {
                "description": POST_BAD_REQUEST.replace(
                    "nothing was logged", "nothing was logged on any topic"
                ),
                "content": {"application/json": {"schema": ERROR}},
            },
            "413": {
                "description": POST_TOO_LARGE,
                "content": {"application/json": {"schema": ERROR}},
            },
        },
    }


def describe(settings: Settings, rules: Rules | None = None) -> dict[str, Any]:
    """The OpenAPI document of a server running with `settings`, naming the windows,
    statistics, tiers and group tags of `rules` (default: all of the settings' rules)."""
    rules = settings.rules if rules is None else rules
    publishing, reading, schemes = _security(settings)
    one_topic_group = topic_group_param(rules, GROUP_PARAM["description"])
    selector_query = {
        "name": "topic",
        "in": "query",
        "required": True,
        "schema": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SELECTORS,
            "items": {"type": "string", "pattern": SELECTOR_PATTERN},
        },
        "description": "a topic name, a prefix pattern like sensors.*, or *",
    }
    window = duration_label(IDEMPOTENCY_WINDOW_US)
    idempotency_key = {
        "name": HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": f"^{KEY_PATTERN}$"},
        "description": f"a fresh value per batch, the same on every retry of it: a repeat "
        f"on this topic within {window} logs nothing and answers what the first did",
    }
    event_post: dict[str, Any] = {
        "summary": "Publish one event, a batch (array) or NDJSON",
        "parameters": [TOPIC, idempotency_key],
        **({"security": publishing} if publishing is not None else {}),
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
                                "maxItems": MAX_BATCH,
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
                "headers": {
                    REPLAYED_HEADER: {
                        "description": "`true` when this answer repeats that of an earlier "
                        "request with the same Idempotency-Key (nothing was logged now)",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                },
            },
            **error_responses(400, *auth_errors(publishing), 411, 413, 415, 422, 429, 503),
            "400": {
                "description": POST_BAD_REQUEST,
                "content": {"application/json": {"schema": ERROR}},
            },
            "413": {
                "description": POST_TOO_LARGE,
                "content": {"application/json": {"schema": ERROR}},
            },
            "503": {
                "description": POST_UNAVAILABLE,
                "headers": ERROR_HEADERS[503],
                "content": {"application/json": {"schema": ERROR}},
            },
        },
    }
    many_key = {
        **idempotency_key,
        "description": f"a fresh value per request, the same on every retry of it: a repeat "
        f"within {window} logs nothing again and answers what the first did, topic by topic",
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "pushsvc", "version": __version__},
        "paths": {
            "/topics/{topic}/events": {"post": event_post},
            "/events": {"post": _many_topic_post(settings, publishing, many_key, broadcast=False)},
            "/broadcast": {
                "post": _many_topic_post(settings, publishing, many_key, broadcast=True)
            },
            "/topics/{topic}": _topic_delete(publishing),
            "/topics/{topic}/stream": _sse(
                "SSE stream of one topic", [TOPIC], rules, reading, one_topic_group
            ),
            # A pattern stream spans rules: its filter names any tag (and matches what has it).
            "/stream": _sse(
                "SSE stream of several topics", [selector_query], rules, reading, GROUP_PARAM
            ),
            "/topics/{topic}/messages": _messages_sse(
                "The application's messages of one topic, as published", [TOPIC], reading
            ),
            "/messages": _messages_sse(
                "The application's messages of several topics, as published",
                [selector_query],
                reading,
            ),
            "/topics/{topic}/stats": _json_get(
                "Latest update of a topic (a grouping topic's with its live groups)",
                {"$ref": "#/components/schemas/StreamUpdate"},
                parameters=[TOPIC, one_topic_group],
                errors=(400, *auth_errors(reading), 404),
                security=reading,
            ),
            "/topics/{topic}/history": _history(rules, reading),
            "/topics/{topic}/presence": _json_get(
                "How many streams watch a topic now, over every web process (and, to a token "
                "with a presence scope for it where the server keeps them, their subjects)",
                {"$ref": "#/components/schemas/TopicPresence"},
                parameters=[TOPIC],
                errors=(400, *auth_errors(reading), 503),
                security=reading,
            ),
            "/topics/{topic}/series": _series(rules, reading),
            "/topics/{topic}/forecast": _json_get(
                "A topic's (or group's) latest forecast: the points over its rule's horizon, "
                "with 80 % and 95 % prediction intervals (404: its rule forecasts nothing, or "
                "no forecast is kept yet)",
                {"$ref": "#/components/schemas/Forecast"},
                parameters=[TOPIC, one_topic_group],
                errors=(400, *auth_errors(reading), 404, 503),
                security=reading,
            ),
            "/anomalies": _anomalies(reading),
            "/topics": _json_get(
                "Topics the caller may read: last update, subscribers; a page at a time, in "
                "name order (follow `next`, or the Link header's rel=next)",
                {"$ref": "#/components/schemas/Topics"},
                parameters=[
                    LIMIT,
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string", "pattern": f"^{TOPIC_PATTERN}$"},
                        "description": "the previous page's `next`: list the topics after it",
                    },
                ],
                errors=(400, 401, *backend_errors(reading)) if reading is not None else (400,),
                security=reading,
            ),
            "/alerts": _json_get(
                "Alert instances pending or firing now (of the topics the caller may read); a "
                "page at a time, by alert, topic and group (follow `next`: a page may hold "
                "fewer than `limit`, even none, and still have a `next`)",
                {"$ref": "#/components/schemas/Alerts"},
                parameters=[
                    LIMIT,
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "string", "pattern": f"^{ALERTS_CURSOR_PATTERN}$"},
                        "description": "the previous page's `next` (opaque)",
                    },
                ],
                errors=(400, 401, *backend_errors(reading)) if reading is not None else (400,),
                security=reading,
            ),
            "/rules": _json_get(
                "The analytics rules: each family of topics' windows, statistics and groups "
                "(with auth on, those of the topics the caller may read)",
                {"$ref": "#/components/schemas/RulesView"},
                errors=(401, *backend_errors(reading)) if reading is not None else (),
                security=reading,
            ),
            "/healthz": _json_get(
                "Liveness",
                {"type": "object", "required": ["status"], "properties": {"status": {}}},
            ),
            "/readyz": {
                "get": {
                    "summary": "Readiness (checks the broker, Redis's eviction policy, memory "
                    "and replicas, and that every shard has an aggregator)",
                    "parameters": [],
                    "responses": {
                        "200": {
                            "description": "ready",
                            "content": {"application/json": {"schema": READINESS}},
                        },
                        "503": {
                            "description": "the broker is unavailable, Redis evicts or is "
                            "full, writes cannot reach --redis-min-replicas replicas, a shard "
                            "has no aggregator, or the rules differ (`reason` says which, and "
                            "what to do)",
                            "content": {"application/json": {"schema": READINESS}},
                        },
                    },
                }
            },
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
            **({"securitySchemes": schemes} if schemes else {}),
            "schemas": SCHEMAS,
        },
    }
    # The WSGI server answers a request line over its limit itself, whatever the route (a
    # long query of repeated parameters reaches it before any validation of ours).
    paths: dict[str, dict[str, dict[str, Any]]] = document["paths"]
    for operations in paths.values():
        for operation in operations.values():
            operation["responses"]["414"] = _URI_TOO_LONG
    return document


_URI_TOO_LONG = {
    "description": "the request line is longer than the WSGI server takes (8 KiB for pushsvc's "
    "own server): answered by that server, with no body"
}


@bp.get("/openapi.json")
def openapi() -> tuple[dict[str, Any], dict[str, str]]:
    """Public, but each caller is told the names of the rules it may see only
    (`visible_names`), as its requests are judged: a private rule's statistics and group tags
    are no one else's business (docs/security.md)."""
    rt = runtime()
    try:
        scope = rt.gate.readable(request)
    except (Unauthorized, AuthUnavailable, TooManyRequests):
        # No token where one is needed, or a bad one, or an application that cannot say (or
        # is asked too much from this address): anyone's view (the document is public).
        scope = rt.gate.anonymous
    document = describe(rt.settings, visible_names(rt.settings.rules, scope))
    # The document differs by caller: no shared cache may hand one caller's to another.
    headers = {"Cache-Control": "private", "Vary": "Authorization, Cookie"}
    return document, headers
