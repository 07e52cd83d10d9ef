"""The OpenAPI document's fixed schemas: the shapes of events, updates, topics, readiness and
errors, which no setting changes. `openapi.py` builds the rest from the settings.

The shapes defined as msgspec classes, which the server and the client encode and decode by,
are generated from them (`shape_schemas`): the event a producer posts
(`pushsvc.ingest.event_shape`), a POST's answer and every error's
(`pushsvc.core.answers`). The rest are still written here by hand."""

from __future__ import annotations

from typing import Any

import msgspec

from pushsvc.core.answers import ANSWERS
from pushsvc.ingest.event_shape import event_schema

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_BY_TYPE = {
    "type": "object",
    "required": ["count", "rate"],
    "properties": {
        "count": {"type": "integer", "minimum": 1},
        "rate": {"type": "number", "exclusiveMinimum": 0},
    },
}
_TOP_ENTRY = {
    "type": "object",
    "required": ["value", "count"],
    "properties": {
        "value": {"type": "string"},
        "count": {"type": "integer"},
        "error": {"type": "number"},
    },
}
_FUNNEL_STEP = {
    "type": "object",
    "required": ["step", "sessions", "conversion", "step_conversion", "median_s"],
    "properties": {
        "step": {"type": "string"},
        "sessions": {"type": "integer", "description": "sessions that reached this step"},
        "conversion": {**_NUMBER_OR_NULL, "description": "sessions / the first step's"},
        "step_conversion": {
            **_NUMBER_OR_NULL,
            "description": "sessions / the step before's (null for the first step)",
        },
        "median_s": {
            **_NUMBER_OR_NULL,
            "description": "median seconds from the first step to this one",
        },
    },
}
_WINDOWS = {
    "type": "object",
    "description": "statistics by window label; null where undefined (an empty window)",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "messages": {
                "type": "object",
                "description": "the messages the window holds, by type (only while it holds "
                "one): their count and their rate per second",
                "additionalProperties": _BY_TYPE,
            },
            "bounce_rate": {
                **_NUMBER_OR_NULL,
                "description": "a session topic's: sessions of one event / sessions",
            },
            "events_per_session": {
                **_NUMBER_OR_NULL,
                "description": "a session topic's: the mean of its sessions' event counts",
            },
            "active": {
                "type": ["integer", "null"],
                "description": "a session topic's: sessions open when its newest session ended",
            },
            "funnel": {
                "type": "array",
                "description": "a session topic's with a funnel: one entry per step",
                "items": _FUNNEL_STEP,
            },
        },
        "patternProperties": {
            "^top_": {
                "type": "array",
                "description": "a rule's top tag: its k most frequent values in the window",
                "items": _TOP_ENTRY,
            },
        },
        "additionalProperties": _NUMBER_OR_NULL,
    },
}

_GROUP = {
    "type": "object",
    "required": ["key", "windows"],
    "properties": {
        "key": {
            "type": "object",
            "description": "the group_by tags' values; null for a tag the event lacks, "
            '"(other)" for every tag of the overflow group',
            "additionalProperties": {"type": ["string", "null"]},
        },
        "windows": _WINDOWS,
    },
}

READINESS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {
            "enum": [
                "ready",
                "unavailable",
                "redis_evicts",
                "redis_full",
                "replicas_unconfirmed",
                "no_aggregator",
                "rules_differ",
            ]
        },
        "broker": {"type": "string", "description": "why the broker is unavailable"},
        "reason": {
            "type": "string",
            "description": "with every status but ready: what is wrong and what to do. "
            "unavailable: the broker's error; redis_evicts: the maxmemory-policy and the fix; "
            "redis_full: memory used of maxmemory, and how many log entries the aggregators "
            "are behind; replicas_unconfirmed: the replicas online and "
            "PUSHSVC_REDIS_MIN_REPLICAS; no_aggregator: the partitions no aggregator holds; "
            "rules_differ: this process's rules digest and the aggregator's",
        },
        "shards": {"type": "object"},
    },
}


def shape_schemas() -> dict[str, Any]:
    """The component schemas generated from the classes that define them (one per class, by
    its name, with the classes it holds), `Event` among them."""
    _, components = msgspec.json.schema_components(
        ANSWERS, ref_template="#/components/schemas/{name}"
    )
    for schema in components.values():
        schema.pop("title", None)
        schema["description"] = " ".join(schema.get("description", "").split())
        if not schema["description"]:
            del schema["description"]
    return {**components, "Event": event_schema()}


SCHEMAS: dict[str, Any] = {
    "History": {
        "type": "object",
        "required": ["topic", "resume_id", "more", "gap", "windows", "stats", "updates"],
        "properties": {
            "topic": {"type": "string"},
            "resume_id": {"type": ["string", "null"]},
            "more": {
                "type": "boolean",
                "description": "updates beyond `limit` were left out: with `since`, newer ones "
                "(page on with `since=<resume_id>`); without, older ones (read them from "
                "`since=0`)",
            },
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
    "Alerts": {
        "type": "object",
        "required": ["alerts", "next"],
        "properties": {
            "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/AlertChange"}},
            "next": {
                "type": ["string", "null"],
                "description": "`?after=` of the next page; null on the last",
            },
        },
    },
    "AlertChange": {
        "type": "object",
        "required": ["alert", "topic", "group", "state", "value", "since", "labels", "annotations"],
        "description": "an alert instance's state change (`_alerts`, `event: alert`, with an id)",
        "properties": {
            "id": {"type": "string"},
            "alert": {"type": "string"},
            "topic": {"type": "string"},
            "group": {"type": ["object", "null"]},
            "state": {"type": "string", "enum": ["pending", "firing", "resolved", "inactive"]},
            "value": {"type": ["number", "null"]},
            "since": {"type": "number", "description": "topic-clock time of the change, epoch s"},
            "labels": {"type": "object"},
            "annotations": {"type": "object"},
        },
    },
    "Point": {
        "type": "object",
        "required": [
            "t",
            "count",
            "sum",
            "mean",
            "min",
            "max",
            "var",
            "stddev",
            "p50",
            "p90",
            "p99",
        ],
        "properties": {
            "t": {"type": "number", "description": "the bucket's start, epoch seconds"},
            "count": {
                "type": "integer",
                "description": "the bucket's events with a value (0: it held messages only)",
            },
            "sum": {"type": "number"},
            **{
                stat: {**_NUMBER_OR_NULL, "description": "null when `count` is 0"}
                for stat in ("mean", "min", "max", "p50", "p90", "p99")
            },
            "var": {**_NUMBER_OR_NULL, "description": "null for one event or none"},
            "stddev": {**_NUMBER_OR_NULL, "description": "null for one event or none"},
            "messages": {
                "type": "object",
                "description": "the topic's messages in the bucket, by type (only where it held "
                "one; a group's points have none): their count and their rate per second of "
                "the bucket, as a window counts them",
                "additionalProperties": _BY_TYPE,
            },
            "anomaly": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "a rule's `anomaly` tier only: the bucket's anomaly score, from "
                "the series' points before it only (0 while the detector learns)",
            },
            "anomalous": {
                "type": "boolean",
                "description": "with `anomaly`: whether the score reached the rule's threshold",
            },
        },
        "patternProperties": {
            "^distinct_": {
                "type": "integer",
                "description": "a rule's distinct tag: its different values in the bucket",
            },
            "^top_": {
                "type": "array",
                "description": "a rule's top tag: its k most frequent values in the bucket, by "
                "count descending then value ascending; `error` (N/m) where Space-Saving counted",
                "items": {
                    "type": "object",
                    "required": ["value", "count"],
                    "properties": {
                        "value": {"type": "string"},
                        "count": {"type": "integer"},
                        "error": {"type": "number"},
                    },
                },
            },
        },
    },
    "PointMessage": {
        "type": "object",
        "required": ["id", "resolution", "topic", "point"],
        "description": "an `event: point` message: one closed bucket of a series tier",
        "properties": {
            "id": {"type": "string"},
            "resolution": {"type": "string"},
            "topic": {"type": "string"},
            "group": {"type": "object", "description": "a group's point: the group's key"},
            "point": {"$ref": "#/components/schemas/Point"},
            "correction": {
                "type": "boolean",
                "enum": [True],
                "description": "present (true) when the bucket was published before and a "
                "late event within its rule's grace amended it: `point` replaces the point of "
                "the same resolution, group and `t` (series reads give the corrected one)",
            },
        },
    },
    "Forecast": {
        "type": "object",
        "description": "a rule's `forecast` after the last bucket of its tier closed: the "
        "model's predicted `stat` for each bucket of the horizon (`t`: bucket start, epoch "
        "ms), with central 80 % and 95 % prediction intervals; `points` is empty while the "
        "model learns; also what an `event: point` message with `forecast` carries",
        "required": ["model", "stat", "resolution", "from", "points"],
        "properties": {
            "topic": {"type": "string"},
            "group": {"type": "object"},
            "model": {"type": "string", "enum": ["holt_winters", "linear"]},
            "stat": {"type": "string"},
            "resolution": {"type": "string"},
            "from": {
                "type": ["integer", "null"],
                "description": "the start (epoch ms) of the last bucket learned",
            },
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["t", "mean", "lo80", "hi80", "lo95", "hi95"],
                    "properties": {
                        "t": {"type": "integer"},
                        **{k: {"type": "number"} for k in ("mean", "lo80", "hi80", "lo95", "hi95")},
                    },
                },
            },
        },
    },
    "Series": {
        "type": "object",
        "required": ["topic", "resolution", "points", "more", "segments"],
        "properties": {
            "topic": {"type": "string"},
            "resolution": {"type": "string"},
            "group": {"type": "object"},
            "points": {"type": "array", "items": {"$ref": "#/components/schemas/Point"}},
            "more": {"type": "boolean", "description": "points beyond `limit` were left out"},
            "segments": {
                "type": "array",
                "description": "which tier answered which part of the range",
                "items": {
                    "type": "object",
                    "required": ["resolution", "since", "until"],
                    "properties": {
                        "resolution": {"type": "string"},
                        "since": {"type": "number"},
                        "until": {"type": "number"},
                    },
                },
            },
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
            "group": {**_GROUP, "description": "a grouping topic's event: its group"},
            "groups": {
                "type": "array",
                "items": _GROUP,
                "description": "a grouping topic's tick: the groups whose windows changed; "
                "GET /topics/{topic}/stats: the live groups",
            },
            "forgotten": {
                "type": "array",
                "items": {"type": "object"},
                "description": "keys of groups idle for the topic TTL, no longer kept",
            },
        },
    },
    "Rules": {
        "type": "object",
        "required": ["digest", "rules", "default"],
        "properties": {
            "digest": {"type": "string", "description": "equal where statistics are equal"},
            "rules": {"type": "array", "items": {"$ref": "#/components/schemas/Rule"}},
            "default": {"$ref": "#/components/schemas/Rule"},
            "derive": {
                "type": "array",
                "description": "the derived metrics (`[[derive]]`), when the file has any",
                "items": {
                    "type": "object",
                    "required": ["derive", "topic", "every", "value", "sources"],
                    "properties": {
                        "derive": {"type": "integer", "description": "place in the file"},
                        "topic": {"type": "string"},
                        "every": {"type": "string", "description": "a series resolution"},
                        "value": {"type": "string", "description": "the expression, as written"},
                        "sources": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "Rule": {
        "type": "object",
        "required": ["rule", "topics", "windows", "stats", "group_by"],
        "properties": {
            "rule": {"type": "integer", "description": "place in the file; 0: the default"},
            "topics": {"type": "array", "items": {"type": "string"}},
            "windows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["label", "kind"],
                    "properties": {
                        "label": {"type": "string"},
                        "kind": {"enum": ["time", "count"]},
                        "seconds": {"type": "number"},
                        "events": {"type": "integer"},
                        "percentiles": {"enum": ["exact", "sketch"]},
                        "relative_error": {"type": "number"},
                        "edge_seconds": {
                            "type": "number",
                            "description": "a sketch window's edge is rounded to this",
                        },
                    },
                },
            },
            "stats": {"type": "array", "items": {"type": "string"}},
            "group_by": {"type": "array", "items": {"type": "string"}},
            "max_groups": {"type": "integer"},
            "series": {"type": "array", "items": {"type": "string"}},
            "distinct": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["tag", "stat", "exact_in", "exact_up_to", "relative_error"],
                    "properties": {
                        "tag": {"type": "string"},
                        "stat": {"type": "string"},
                        "exact_in": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "windows that count exactly at any number of values",
                        },
                        "exact_up_to": {
                            "type": "integer",
                            "description": "different values counted exactly elsewhere",
                        },
                        "relative_error": {"type": "number"},
                    },
                },
            },
            "top": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["tag", "k", "stat", "exact_in", "exact_up_to"],
                    "properties": {
                        "tag": {"type": "string"},
                        "k": {"type": "integer"},
                        "stat": {"type": "string"},
                        "exact_in": {"type": "array", "items": {"type": "string"}},
                        "exact_up_to": {"type": "integer"},
                    },
                },
            },
        },
    },
    "Anomalies": {
        "type": "object",
        "required": ["since", "until", "anomalies", "more"],
        "properties": {
            "since": {"type": ["number", "null"], "description": "the range asked, epoch s"},
            "until": {"type": ["number", "null"]},
            "more": {"type": "boolean", "description": "entries beyond `limit` were left out"},
            "anomalies": {
                "type": "array",
                "description": "one entry per scored series (a topic's own, or one live "
                "group's) with a scored point in the range, by rate descending, then "
                "anomalous points descending, then topic and group",
                "items": {
                    "type": "object",
                    "required": [
                        "topic",
                        "resolution",
                        "stat",
                        "rate",
                        "anomalous",
                        "scored",
                        "points",
                    ],
                    "properties": {
                        "topic": {"type": "string"},
                        "group": {
                            "type": "object",
                            "description": "a group's key; absent for the topic's own series",
                        },
                        "resolution": {"type": "string", "description": "the rule's `every`"},
                        "stat": {"type": "string", "description": "the statistic scored"},
                        "rate": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "anomalous / scored points in the range",
                        },
                        "anomalous": {"type": "integer", "minimum": 0},
                        "scored": {"type": "integer", "minimum": 1},
                        "points": {
                            "type": "array",
                            "maxItems": 3,
                            "description": "its most anomalous points, score descending",
                            "items": {"$ref": "#/components/schemas/Point"},
                        },
                    },
                },
            },
        },
    },
    "Topics": {
        "type": "object",
        "required": ["topics", "next"],
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
            },
            "next": {
                "type": ["string", "null"],
                "description": "`?after=` of the next page; null on the last",
            },
        },
    },
    "Presence": {
        "type": "object",
        "required": ["topic", "watching"],
        "additionalProperties": False,
        "properties": {
            "topic": {"type": "string"},
            "watching": {
                "type": "integer",
                "minimum": 0,
                "description": "streams watching the topic now, over every web process (a "
                "pattern stream counts for every topic it would receive)",
            },
            "subs": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the distinct token subjects watching (only where the server "
                "keeps them, to a token whose presence scope holds the topic)",
            },
        },
    },
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
