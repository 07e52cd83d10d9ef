"""The parts the OpenAPI description (`pushsvc.http.api.openapi`) is built of: the path and
query parameters several paths share, the error responses by status, and which errors a
security requirement brings.

Apart from the paths themselves so that each part is written once and every path that takes a
topic, a page size or a time, or answers an error, describes it the same way.
"""

from __future__ import annotations

import re
from typing import Any

from pushsvc.core.topic_pages import DEFAULT_LIMIT as PAGE_DEFAULT_LIMIT
from pushsvc.core.topic_pages import MAX_LIMIT as PAGE_MAX_LIMIT
from pushsvc.core.topics import TOPIC_PATTERN
from pushsvc.deliver.projection import MAX_GROUP_FILTERS
from pushsvc.http.api.history import EPOCH_SECONDS
from pushsvc.rules.analytics import Rules

TOPIC = {
    "name": "topic",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{TOPIC_PATTERN}$"},
}
# A topic name, `prefix.*` (the prefix itself a topic name) or `*`.
SELECTOR_PATTERN = rf"^(?:\*|{TOPIC_PATTERN}(?:\.\*)?)$"
ERROR = {"$ref": "#/components/schemas/Error"}
READINESS = {"$ref": "#/components/schemas/Readiness"}
# A listing's page size (`GET /topics`, `GET /alerts`).
LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {
        "type": "integer",
        "minimum": 1,
        "maximum": PAGE_MAX_LIMIT,
        "default": PAGE_DEFAULT_LIMIT,
    },
    "description": "the most entries in the page",
}
_RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 0},
}
_ERROR_MEANINGS = {
    400: "bad request",
    401: "a token is needed, or the one given is not valid",
    403: "the token does not allow this topic, or a cookie POST came from a foreign origin",
    404: "not found",
    411: "a body with neither Content-Length nor chunked framing on a connection kept open "
    "(the connection is closed)",
    413: "body or batch too large",
    415: "unsupported content type",
    422: "the Idempotency-Key was used for another body on this topic within the window",
    429: "a per-client limit was reached, or (--auth-url) the client's address has as many "
    "requests waiting on the application's auth backend as one address may (Retry-After where "
    "waiting helps)",
    503: "the broker is unavailable, the application's auth backend cannot judge the request "
    "(--auth-url), or (streams) this process is at its stream limit (with Retry-After)",
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    # RFC 6750 §3: every 401 carries a Bearer challenge.
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}

# A POST's 503s by `error.code` (pushsvc.errors: BrokerUnavailable and its leaves).
POST_UNAVAILABLE = (
    "nothing was logged (but replicas_unconfirmed): retry, after Retry-After where given. "
    "`error.code`: broker_unavailable (Redis unreachable); broker_full (Redis at maxmemory: "
    "it refuses appends until memory is freed); broker_read_only (a demoted primary, during a "
    "failover); broker_busy (Redis runs a script past its time limit); broker_loading (Redis "
    "loads its dataset after a restart); broker_refused (Redis's min-replicas-to-write unmet, "
    "or its persistence failing); replicas_unconfirmed (logged on the primary, fewer replicas "
    "than --redis-min-replicas confirmed: a retry may post it twice)"
)

# A POST's 400s and 413s by `error.code`: what the producer must change.
POST_BAD_REQUEST = (
    "nothing was logged; `index` names the event at fault in a batch. `error.code`: "
    "malformed_json, invalid_event, invalid_topic, derived_topic, session_topic, mercure_topic, "
    "late_event "
    '(past the topic\'s grace where its rule says late = "refuse"), future_event (ts more than '
    "--max-future ahead of the server's clock), invalid_idempotency_key, bad_request (an "
    "empty batch)"
)
POST_TOO_LARGE = (
    "payload_too_large: the body is over --max-body, whatever its framing (Content-Length, "
    "chunked, or up to the connection's end), or the batch over 10000 events; nothing was logged"
)

Security = list[dict[str, list[str]]]


def error_responses(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": _ERROR_MEANINGS[s],
            **({"headers": ERROR_HEADERS[s]} if s in ERROR_HEADERS else {}),
            "content": {"application/json": {"schema": ERROR}},
        }
        for s in statuses
    }


def choice_list(names: tuple[str, ...]) -> dict[str, Any]:
    """A comma-separated list of some of `names`."""
    one = "(?:" + "|".join(names) + ")"
    return {"type": "string", "pattern": f"^{one}(?:,{one})*$"}


GROUP_PARAM: dict[str, Any] = {
    "name": "group",
    "in": "query",
    "schema": {
        "type": "array",
        "maxItems": MAX_GROUP_FILTERS,
        "items": {"type": "string", "pattern": r"^[^:]{1,64}:[\s\S]{0,256}$"},
    },
    "style": "form",
    "explode": True,
    "description": "tag:value, repeatable (all must match): only the updates of that group of "
    "a grouping topic, each with only the matching groups",
}


# What an ECMA-262 pattern (JSON Schema's dialect) takes as syntax, escaped in a tag name.
_ECMA_SPECIAL = re.compile(r"[\^$\\.*+?()[\]{}|/]")


def topic_group_param(rules: Rules, description: str) -> dict[str, Any]:
    """`?group=` on one topic, which must group by each tag named: only the tags some rule
    groups by (none: no filter is valid). Whether this topic's rule is one of them is the
    rules' to say, not the schema's (a 400 `ungrouped_tag`)."""
    tags = dict.fromkeys(t for rule in (rules.default, *rules.rules) for t in rule.group_by)
    if not tags:
        return {
            **GROUP_PARAM,
            "schema": {"type": "array", "maxItems": 0},
            "description": "tag:value; no rule groups by tags, so none is valid",
        }
    named = "|".join(_ECMA_SPECIAL.sub(r"\\\g<0>", tag) for tag in tags)
    return {
        **GROUP_PARAM,
        "schema": {
            **GROUP_PARAM["schema"],
            "items": {"type": "string", "pattern": rf"^(?:{named}):[\s\S]{{0,256}}$"},
        },
        "description": description,
    }


def series_param(rules: Rules) -> dict[str, Any]:
    return {
        "name": "series",
        "in": "query",
        "schema": {
            "type": "array",
            "items": {"type": "string", "enum": list(rules.series_labels)},
        },
        "style": "form",
        "explode": True,
        "description": "a series resolution, repeatable: also send each closed bucket of that "
        "tier as an `event: point` message (ids in the update sequence)",
    }


def time_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {
            "anyOf": [
                {"type": "string", "pattern": f"^{EPOCH_SECONDS.pattern}$"},
                {"type": "string", "format": "date-time"},
            ]
        },
        "description": description,
    }


def auth_errors(security: Security | None) -> tuple[int, ...]:
    return () if security is None else (401, 403, *backend_errors(security))


def backend_errors(security: Security | None) -> tuple[int, ...]:
    """503 where the application's backend may be asked (it fails closed), and 429 (one
    address's share of the asks in flight)."""
    asked = security is not None and any(
        name.startswith(BACKEND) for requirement in security for name in requirement
    )
    return (429, 503) if asked else ()


BACKEND = "application_"
"""The security schemes of the credentials forwarded to the application (`--auth-url`)."""
