"""POST /topics/{topic}/events — validate, append to the event log (the broker judges lateness).

202 means the batch is in the log: it will yield one update per event, even if no aggregator
runs right now (it waits; `/readyz` and `/metrics` show the lag). With auth on, the token must
allow the topic; with a publish rate, the token's subject (else the client address) must have
room in its bucket, and for a topic nobody keeps, room in its share of `--max-topics`
(`security/topic_shares.py`) — all judged before the body is read. The body is read whole, or
refused whole past `--max-body` whatever its framing (`request_body.py`).

With an `Idempotency-Key`, a repeat of a request logged within 10 minutes
(`IDEMPOTENCY_WINDOW_US`) logs nothing and answers the same 202 with
`Idempotent-Replayed: true` (`core/idempotency.py`; the broker checks and appends in one step).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Request, Response, request

from pushsvc.broker.base import Appended
from pushsvc.core.answers import accepted_json
from pushsvc.core.idempotency import (
    HEADER,
    IDEMPOTENCY_WINDOW_US,
    REPLAYED_HEADER,
    check_key,
    window_ms,
)
from pushsvc.core.topics import validate_topic
from pushsvc.http.api.context import runtime
from pushsvc.http.api.request_body import read_body
from pushsvc.ingest.accept import ingest
from pushsvc.loop_pause import let_others_run
from pushsvc.security.topic_shares import publisher_key

bp = Blueprint("producer", __name__)

IDEMPOTENCY_ENVIRON = "HTTP_" + HEADER.upper().replace("-", "_")
"""Where a WSGI server puts the `Idempotency-Key` header."""


def header_lines(environ: dict[str, Any], key: str) -> list[str]:
    """What `request.headers.getlist` gives for the header a WSGI server puts at `key`
    (which holds one value: the server joins repeated lines), without building the list
    of every header that `getlist` walks."""
    value = environ.get(key)
    return [] if value is None else [value]


@bp.post("/topics/<anytext:topic>/events")
def post_events(topic: str) -> Response:
    rt = runtime()
    # The proxy looked through once, not at every use.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    # Checked once, before the body: a bad name is the answer, whatever the body's size.
    name = validate_topic(topic)
    grant = rt.gate.publisher(req, name)
    idempotency_key = check_key(header_lines(environ, IDEMPOTENCY_ENVIRON))
    publisher = publisher_key(grant.subject if grant else None, req.remote_addr)
    rate_key = None
    if rt.publish_rate is not None:
        rate_key = publisher
        rt.publish_rate.admit(rate_key)
    shares = rt.topic_shares
    if shares is not None:
        shares.admit(publisher, name, rt.broker.keeps_topic)
    limits = rt.limits
    body = read_body(environ, limits.max_body_bytes)
    grace_us, refuse_late = rt.settings.rules.grace_of(name, rt.settings.grace_us)
    appended = ingest(
        rt.broker,
        name,
        body,
        req.content_type,
        limits=limits,
        lateness_us=grace_us,
        now_us=time.time_ns() // 1000,
        refuse_late=refuse_late,
        idempotency_key=idempotency_key,
        idempotency_window_ms=window_ms(IDEMPOTENCY_WINDOW_US),
        pause=let_others_run,
    )
    if appended.replayed:
        # The earlier request logged and counted these events, and charged their rate.
        rt.metrics.idempotent_replays.inc()
        return _answer(appended, {REPLAYED_HEADER: "true"})
    rt.metrics.events_accepted.inc(appended.accepted)
    if appended.late:
        rt.metrics.late_events.inc(appended.late)
    if appended.evicted:
        rt.metrics.idempotency_keys_evicted.inc(appended.evicted)
    if rt.publish_rate is not None and rate_key is not None:
        rt.publish_rate.charge(rate_key, appended.accepted + appended.late)
    if shares is not None and appended.accepted:
        shares.note(publisher, name)
    return _answer(appended, {})


def _answer(appended: Appended, headers: dict[str, str]) -> Response:
    body = accepted_json(appended.accepted, appended.late)
    # The body is bytes, whole: passed through to the server as its one piece (a HEAD's is
    # still empty), without werkzeug's iterator that would encode it and call the
    # response's close, which has nothing to close here.
    return Response(body, 202, headers, content_type="application/json", direct_passthrough=True)
