"""/.well-known/mercure — the Mercure protocol's hub endpoint, on with `--mercure`.

An adapter, not a second pipeline. A publication becomes one pushsvc message on the topic its
first topic IRI names, appended as POST /topics/{topic}/events appends (its limits, the log,
exactly once); a subscription is a `/messages` stream of every Mercure topic through a
`MercureView` that keeps what the subscriber may receive and writes it as a Mercure hub does
(`pushsvc.deliver.mercure_updates`). Tokens are Mercure's (`pushsvc.security.mercure_auth`),
signed with `--jwt-key`; their errors are RFC 6750's. With `--mercure anonymous`, a
subscriber without a token receives the public updates its selectors match.

Discovery: while on, every topic response carries `Link: <…/.well-known/mercure>;
rel="mercure"`.

No publisher may send what only the hub does: a topic in its namespace (`/.well-known/
mercure/…`, wherever it resolves), `*`, or the type `mercure` (400 whatever the token). With
`--mercure-subscriptions` each connection's subscriptions are tracked while its stream lives
and announced (`pushsvc.deliver.mercure_active`), and a stream whose selectors may select the
hub's namespace reads their events' topic too (`may_select_hub`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import orjson
from flask import Blueprint, Response, request

from pushsvc.core.sse import HEADERS, jittered_retry_ms, retry_line
from pushsvc.core.subscription_registry import TooManySubscriptions
from pushsvc.core.topics import TopicMatcher, validate_topic
from pushsvc.deliver import mercure_lookups, mercure_resume
from pushsvc.deliver.mercure_active import ActiveSubscriptions
from pushsvc.deliver.mercure_lookups import LookupsBusy
from pushsvc.deliver.mercure_pattern_shares import shares as pattern_shares
from pushsvc.deliver.mercure_resume import EARLIEST
from pushsvc.deliver.mercure_selectors import WILDCARD, Selector, SelectorSet, TooManyLivePatterns
from pushsvc.deliver.mercure_subscriptions import (
    EVENT_TYPE,
    SUBSCRIPTIONS_TOPIC,
    addresses_hub,
    may_select_hub,
)
from pushsvc.deliver.mercure_updates import PATTERN, MercureView, envelope, topic_name
from pushsvc.deliver.projection import Projection
from pushsvc.errors import BadRequest, BrokerUnavailable, ServerBusy, TooManySelectors
from pushsvc.http.api.context import runtime
from pushsvc.http.api.streams import respond
from pushsvc.ingest.accept import ingest
from pushsvc.loop_pause import let_others_run, make_way
from pushsvc.security.access import ReadAccess
from pushsvc.security.limits import BUSY_RETRY_AFTER_S
from pushsvc.security.mercure_auth import (
    MercureAuthError,
    MercureGrant,
    bearer_challenge,
    mercure_token,
    verify_mercure_token,
)

bp = Blueprint("mercure", __name__)

PATH = "/.well-known/mercure"


def hub_url() -> str:
    return request.host_url.rstrip("/") + PATH


@bp.post(PATH)
def publish() -> Response:
    try:
        grant = _grant(method="POST")
        if grant is None:
            return _unauthorized(bearer_challenge(), "publishing needs a token")
        form = request.form
        topics = form.getlist("topic")
        if not topics:
            raise BadRequest("give at least one topic field")
        _refuse_reserved(topics, form.get("type"))
        if not grant.may_publish(topics):
            raise MercureAuthError.insufficient_scope(
                "the token does not allow publishing to every topic of this update"
            )
    except MercureAuthError as exc:
        return _refused(exc)
    update_id = form.get("id") or f"urn:uuid:{uuid.uuid4()}"
    if any(c in update_id for c in "\r\n\0"):
        raise BadRequest("an id may not contain CR, LF or NUL")
    if update_id == EARLIEST:
        raise BadRequest("earliest is reserved: a subscriber asks for every update kept with it")
    retry = None
    if "retry" in form:
        given = form["retry"]
        if not (given.isascii() and given.isdigit()):
            raise BadRequest("retry takes a whole number of milliseconds")
        retry = int(given)
    kept = envelope(
        topics, form.get("data", ""), private="private" in form, update_id=update_id, retry=retry
    )
    body = orjson.dumps({"type": form.get("type") or "message", "data": kept})
    rt = runtime()
    name = validate_topic(topic_name(topics[0]))
    grace_us, refuse_late = rt.settings.rules.grace_of(name, rt.settings.grace_us)
    appended = ingest(
        rt.broker,
        name,
        body,
        "application/json",
        limits=rt.limits,
        lateness_us=grace_us,
        now_us=time.time_ns() // 1000,
        refuse_late=refuse_late,
        pause=let_others_run,
    )
    rt.metrics.events_accepted.inc(appended.accepted)
    return Response(update_id, 200, mimetype="text/plain")


@bp.get(PATH)
def subscribe() -> Response:
    rt = runtime()
    chosen: list[Selector] = []
    try:
        for name, values in request.args.lists():
            if name == "topic":
                chosen.extend(Selector.of_param("match", value) for value in values)
            elif Selector.is_param(name):
                chosen.extend(Selector.of_param(name, value) for value in values)
        if not chosen:
            raise BadRequest("give at least one match (or match_urlpattern) to subscribe to")
        if len(chosen) > rt.settings.max_selectors:
            raise TooManySelectors(
                f"at most {rt.settings.max_selectors} selectors per subscription"
            )
        # One address's share of the process's compiled patterns, checked before any is compiled.
        address = request.remote_addr or ""
        pattern_shares.check(address, chosen, hub_url())
        selectors = SelectorSet(chosen, base_url=hub_url())
        pattern_shares.hold(address, selectors)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    except TooManyLivePatterns as exc:
        raise ServerBusy(str(exc), retry_after_s=BUSY_RETRY_AFTER_S) from None
    try:
        grant = _grant(method="GET")
    except MercureAuthError as exc:
        return _refused(exc)
    if grant is None and rt.settings.mercure != "anonymous":
        return _unauthorized(bearer_challenge(), "subscribing needs a token")
    opened = None
    active = rt.mercure_subscriptions
    if active is not None:
        # One subscription per selector, tracked while the stream lives (`mercure_active`).
        opened = partial(
            _open, active, selectors.selectors, None if grant is None else grant.payload_for
        )
    if grant is None:
        view = MercureView(selectors, None, "anonymous")
        reader = ReadAccess(TopicMatcher([PATTERN]), None)
    else:
        rights = "|".join(f"{s.kind}:{s.text}" for s in grant.subscribe or ())
        view = MercureView(selectors, grant.may_receive, rights)
        expires = None if math.isinf(grant.expires_at) else grant.expires_at
        kept = [PATTERN]
        if active is not None and may_select_hub(selectors, hub_url()):
            kept.append(SUBSCRIPTIONS_TOPIC)  # subscription events: private, so a token's
        reader = ReadAccess(TopicMatcher(kept), expires, subject=grant.subject)
    last_event_id = mercure_resume.requested(request.headers.get("Last-Event-ID"), request.args)
    resume = None
    if last_event_id is not None:
        lookups = mercure_lookups.of(rt.broker, make_way)
        try:
            resume = lookups.resolve(request.remote_addr or "", last_event_id)
        except (BrokerUnavailable, LookupsBusy) as exc:
            # The history cannot be read, or is being read for as many as may wait: a stream
            # of its `retry:` alone, which an EventSource retries with the same id (an error
            # status would make it give up for good).
            return _retry_later(rt.settings.retry_us, busy=isinstance(exc, LookupsBusy))
    answer = respond(
        rt,
        reader,
        Projection(None, None, messages=True, mercure=view),
        last_event_id,
        min_interval_s=0.0,
        listener=None,
        resume=None if resume is None else resume.after,
        opened=opened,
    )
    if resume is not None:
        # Where it resumed: the specification's field, and the name its earlier drafts used.
        answer.headers["Mercure-Last-Event-ID"] = resume.answer
        answer.headers["Last-Event-ID"] = resume.answer
    return answer


@bp.after_app_request
def discovery(response: Response) -> Response:
    """The `Link` header that tells a client where the hub is, on topic responses."""
    if runtime().settings.mercure != "off" and (
        request.path.startswith("/topics/") or request.path == PATH
    ):
        response.headers.add("Link", f'<{hub_url()}>; rel="mercure"')
    return response


def _refuse_reserved(topics: list[str], message_type: str | None) -> None:
    """What no publisher may send, whatever its token: a topic in the hub's own namespace or
    `*`, or the type `mercure` (the hub's subscription events are told apart by both)."""
    for topic in topics:
        if topic == WILDCARD:
            raise BadRequest("* is the wildcard matcher: no update's topic")
        if addresses_hub(topic, hub_url()):
            raise BadRequest(
                f"{topic[:200]!r} is in the hub's own namespace ({PATH}/...): the hub publishes "
                "there itself"
            )
    if message_type == EVENT_TYPE:
        raise BadRequest(f"the type {EVENT_TYPE} is the hub's own (subscription events)")


def _open(
    active: ActiveSubscriptions,
    selectors: Sequence[Selector],
    payload_for: Callable[[Selector], Any] | None,
) -> Callable[[], None]:
    try:
        return active.open(PATH, selectors, payload_for)
    except TooManySubscriptions as exc:
        raise ServerBusy(str(exc), retry_after_s=BUSY_RETRY_AFTER_S) from None


def _grant(*, method: str) -> MercureGrant | None:
    rt = runtime()
    token = mercure_token(
        dict(request.headers.items()),
        request.cookies,
        request.args,
        method=method,
        target_origin=request.host_url.rstrip("/"),
    )
    if token is None:
        return None
    key = rt.settings.jwt_key
    assert key is not None, "--mercure needs --jwt-key (checked at start)"
    return verify_mercure_token(
        token,
        key,
        audience=rt.settings.jwt_audience,
        issuer=rt.settings.jwt_issuer,
        previous_key=rt.settings.jwt_previous_key,
        base_url=hub_url(),
    )


def _retry_later(retry_us: int, *, busy: bool) -> Response:
    """A stream of its `retry:` alone (jittered, so that those told together come back
    apart); `Retry-After` too where the server is busy, for clients that read it."""
    answer = Response(retry_line(jittered_retry_ms(retry_us // 1000)), headers=HEADERS)
    if busy:
        answer.headers["Retry-After"] = str(max(1, retry_us // 1_000_000))
    return answer


def _refused(exc: MercureAuthError) -> Response:
    answer = _json(exc.error, exc.description, exc.status)
    answer.headers["WWW-Authenticate"] = exc.www_authenticate()
    return answer


def _unauthorized(challenge: str, message: str) -> Response:
    answer = _json("unauthorized", message, 401)
    answer.headers["WWW-Authenticate"] = challenge
    return answer


def _json(code: str, message: str, status: int) -> Response:
    """pushsvc's error body (`{"error": {"code", "message"}}`), RFC 6750's code in it."""
    body = {"error": {"code": code, "message": message}}
    return Response(orjson.dumps(body), status, mimetype="application/json")
