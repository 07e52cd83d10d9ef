"""POST /events (a batch whose events name their own topics) and POST /broadcast (one event to
a list of topics): publishing to many topics in one request.

The request is read whole, or refused whole past `--max-body` (`request_body.py`), and its
shape judged (`pushsvc.ingest.topic_groups`): a fault there is a 4xx `{"error": …}` that
changes nothing, as is a request without the token auth needs, one over the publish rate
(judged once the token's subject is known, before anything is logged), or an
`Idempotency-Key` that is malformed or (on the request's first topic) used for another
request. Otherwise each topic's events are taken in as a `POST /topics/{topic}/events` of
them would be, atomically per topic (`pushsvc.ingest.cross_topic`), and the answer says what
became of each topic's: `202` when every one was logged, `207` when any was refused (its
result carries the error a one-topic POST of it would have answered), the body a
`TopicsAccepted` either way. A repeat with the same key logs nothing again and answers the
same results, with `Idempotent-Replayed: true` when every topic logged was a replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, Request, Response, request

from pushsvc.core.answers import TopicResult, TopicsAccepted, error_of, topics_json
from pushsvc.core.idempotency import (
    IDEMPOTENCY_WINDOW_US,
    REPLAYED_HEADER,
    Idempotency,
    check_key,
    request_digest,
    window_ms,
)
from pushsvc.core.topics import TopicName
from pushsvc.http.api.context import runtime
from pushsvc.http.api.error_replies import status_of
from pushsvc.http.api.producer import IDEMPOTENCY_ENVIRON, header_lines
from pushsvc.http.api.request_body import read_body
from pushsvc.ingest.cross_topic import GroupOutcome, ingest_groups
from pushsvc.ingest.input_limits import InputLimits
from pushsvc.ingest.parse import media_type
from pushsvc.ingest.topic_groups import TopicGroup, batch_groups, broadcast_groups
from pushsvc.loop_pause import let_others_run
from pushsvc.runtime import Runtime
from pushsvc.security.access import check_publishing
from pushsvc.security.topic_shares import publisher_key

bp = Blueprint("many_topics", __name__)

MULTI_STATUS = 207
"""The status of an answer where some topic's events were refused (each result says)."""

Grouper = Callable[[bytes, str | None, InputLimits], list[TopicGroup]]


@bp.post("/events")
def post_batch() -> Response:
    return _publish("batch", batch_groups)


@bp.post("/broadcast")
def post_broadcast() -> Response:
    return _publish("broadcast", broadcast_groups)


def _publish(kind: str, grouper: Grouper) -> Response:
    rt = runtime()
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    idempotency_key = check_key(header_lines(environ, IDEMPOTENCY_ENVIRON))
    limits = rt.limits
    body = read_body(environ, limits.max_body_bytes)
    groups = grouper(body, req.content_type, limits)
    grant = rt.gate.many_publisher(req, [group.topic for group in groups])
    publisher = publisher_key(grant.subject if grant else None, req.remote_addr)
    rate_key = None
    if rt.publish_rate is not None:
        rate_key = publisher
        rt.publish_rate.admit(rate_key)
    idempotency = None
    if idempotency_key is not None:
        idempotency = _idempotency(rt, kind, req, body, idempotency_key)
    grace_us = rt.settings.grace_us
    rules = rt.settings.rules

    shares = rt.topic_shares

    def permit(topic: TopicName) -> None:
        check_publishing(grant, topic)
        if shares is not None:
            # Each topic of the request is judged by the publisher's share as a one-topic POST
            # is, and held as it is admitted: a request to many new topics cannot take more
            # than the share however many it names (one the append then refuses is held until
            # its holding lapses, --topic-ttl).
            shares.admit(publisher, topic, rt.broker.keeps_topic)
            shares.note(publisher, topic)

    def grace_of(topic: TopicName) -> tuple[int, bool]:
        return rules.grace_of(topic, grace_us)

    outcomes = ingest_groups(
        rt.broker,
        groups,
        permit=permit,
        grace_of=grace_of,
        limits=limits,
        now_us=time.time_ns() // 1000,
        idempotency=idempotency,
        pause=let_others_run,
    )
    charged, replayed = _counted(rt, outcomes)
    if rt.publish_rate is not None and rate_key is not None:
        rt.publish_rate.charge(rate_key, charged)
    answer = _answer(outcomes)
    headers = {REPLAYED_HEADER: "true"} if replayed else {}
    status = MULTI_STATUS if answer.refused else 202
    return Response(
        topics_json(answer),
        status,
        headers,
        content_type="application/json",
        direct_passthrough=True,
    )


def _idempotency(rt: Runtime, kind: str, req: Request, body: bytes, key: str) -> Idempotency:
    """The request's key with one digest for the whole request, the route's shape in it: a
    batch and a broadcast of the same bytes are different requests."""
    digest = request_digest(f"{kind}:{media_type(req.content_type)}", body)
    return Idempotency(key, digest, window_ms(IDEMPOTENCY_WINDOW_US))


def _counted(rt: Runtime, outcomes: list[GroupOutcome]) -> tuple[int, bool]:
    """The request's outcomes counted in the metrics: the events logged now (not replays),
    which the publish rate charges, and whether every topic logged was a replay (none logged:
    False)."""
    logged = [o.appended for o in outcomes if o.appended is not None]
    fresh = [a for a in logged if not a.replayed]
    replays = len(logged) - len(fresh)
    if replays:
        rt.metrics.idempotent_replays.inc(replays)
    accepted_now = sum(a.accepted for a in fresh)
    late_now = sum(a.late for a in fresh)
    rt.metrics.events_accepted.inc(accepted_now)
    if late_now:
        rt.metrics.late_events.inc(late_now)
    evicted = sum(a.evicted for a in logged)
    if evicted:
        rt.metrics.idempotency_keys_evicted.inc(evicted)
    return accepted_now + late_now, bool(logged) and not fresh


def _answer(outcomes: list[GroupOutcome]) -> TopicsAccepted:
    results = []
    accepted = late = refused = 0
    for outcome in outcomes:
        group = outcome.group
        items = list(group.items)
        if outcome.appended is not None:
            appended = outcome.appended
            accepted += appended.accepted
            late += appended.late
            results.append(TopicResult(group.topic, items, appended.accepted, appended.late))
        else:
            assert outcome.error is not None
            refused += len(items)
            error = outcome.error
            results.append(
                TopicResult(
                    group.topic, items, error=error_of(error).error, status=status_of(error)
                )
            )
    return TopicsAccepted(results, accepted, late, refused)
