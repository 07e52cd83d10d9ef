"""Cross-origin access (CORS): who may load what from another origin.

* `/static/*` (the browser module, the example, the dashboard's assets) is public code: any
  page may `import` it, so it answers `Access-Control-Allow-Origin: *` — never with
  credentials, which a wildcard cannot carry.
* The API (streams, history, publishing) answers only the origins of `PUSHSVC_CORS_ORIGINS`,
  each named, with credentials (the token cookie): the browser module always asks another
  origin with `withCredentials` / `credentials: "include"`, signed in or not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from flask import Flask, Response, request
from flask_cors import CORS

from pushsvc.config import Settings
from pushsvc.core.idempotency import REPLAYED_HEADER
from pushsvc.ops.logs import HEADER as REQUEST_ID_HEADER

STATIC = r"/static/.*"
API_METHODS = ("GET", "HEAD", "POST", "DELETE", "OPTIONS")
"""The methods the API has (DELETE: a topic), and no other: a preflight lists these."""
EXPOSED_HEADERS = (
    "Content-Type",
    REPLAYED_HEADER,
    "Retry-After",
    REQUEST_ID_HEADER,
    "Mercure-Last-Event-ID",
    "Last-Event-ID",
    "Link",
)
"""What a page's script may read of an answer: whether a publish was a replay, how long a 429
or 503 asks it to wait, the request id to quote in a report, where a Mercure stream
resumed (a polyfill's, or `fetch`'s, way to tell whether updates were lost), and the `Link`
whose `last-event-id` a Mercure subscriptions listing is reconciled from."""


def install(app: Flask, settings: Settings) -> None:
    resources: dict[str | re.Pattern[str], dict[str, Any]] = {
        STATIC: {
            "origins": "*",
            "send_wildcard": True,
            "supports_credentials": False,
            "methods": ("GET", "HEAD", "OPTIONS"),
        }
    }
    if settings.cors_origins:
        # flask-cors tries the longer path first: /static/ keeps its wildcard.
        resources[r"/.*"] = {
            "origins": list(settings.cors_origins),
            "supports_credentials": True,
            "methods": API_METHODS,
            "expose_headers": EXPOSED_HEADERS,
        }
    CORS(app, resources=resources)
    if not settings.cors_origins:
        _only_where_it_matches(app, re.compile(STATIC))


def _only_where_it_matches(app: Flask, pattern: re.Pattern[str]) -> None:
    """Call flask-cors's after-request function (the one `CORS` just registered) only for
    a path its one resource `pattern` matches: for any other it returns the response as it
    got it, having read its headers (a missing header costs werkzeug an exception object),
    the request's path and each resource's pattern. With the API's origins configured
    every path matches `/.*`, and it runs for every request as before."""
    hooks = app.after_request_funcs[None]
    if not hooks or not getattr(hooks[-1], "__module__", "").startswith("flask_cors"):
        return  # registered some other way (another flask-cors): left to run for every path
    cors_after_request: Callable[[Response], Response] = hooks.pop()  # type: ignore[assignment]

    def static_cors(response: Response) -> Response:
        # As flask-cors matches: the request's path, percent-decoded once more.
        if pattern.match(unquote(request.path)) is None:
            return response
        return cors_after_request(response)

    hooks.append(static_cors)
