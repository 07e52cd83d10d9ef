"""/.well-known/mercure — the Mercure protocol's hub endpoint, on with `--mercure`.

An adapter, not a second pipeline. A publication becomes one pushsvc message on the topic its
first topic IRI names, appended as POST /topics/{topic}/events appends (its limits, the log,
exactly once), within every bound that route applies (`--max-body`, the message size that
follows from it, and `--publish-rate` charged to the same key: the token's subject, else the
client's address); a subscription is a `/messages` stream of every Mercure topic through a
`MercureView` that keeps what the subscriber may receive and writes it as a Mercure hub does
(`pushsvc.deliver.mercure_updates`). Tokens are Mercure's (`pushsvc.security.mercure_auth`),
signed with `--jwt-key`; their errors are RFC 6750's. With `--mercure anonymous`, a
subscriber without a token receives the public updates its selectors match.

Discovery: while on, every topic response carries `Link: <…/.well-known/mercure>;
rel="mercure"`. A read of a Mercure update's topic (a GET of `/topics/mercure.…/…` that is
not a stream) adds the specification's `last-event-id`: the id of the topic's newest update,
or `earliest` when it keeps none, read before the answer is made. A page that renders the
resource and then subscribes with `last_event_id` set to it misses nothing published in
between; the hub's topics share one partition (`pushsvc.core.partitions`), so the resume from
that id is exact for every topic the subscription selects.

A publisher's token is verified once and its grant kept until the token expires, in a cache
of the process keyed by a hash of the token and the hub's URL (`Runtime.mercure_publishers`,
256 tokens, the least recently used out first): a publisher sends the same token with each
update, and verifying it was a third of a publication's cost. Only tokens that verified are
kept, so a made-up token costs its verification each time as before; the keys, `aud` and
`iss` are fixed for the process's life, so no kept grant outlives what verified it; a grant
with URL patterns is not kept (it would hold some of the process's live patterns). Streams
verify their token at each connection, as before.

No publisher may send what only the hub does: a topic in its namespace (`/.well-known/
mercure/…`, wherever it resolves), `*`, or the type `mercure` (400 whatever the token). With
`--mercure-subscriptions` each connection's subscriptions are tracked while its stream lives
and announced (`pushsvc.deliver.mercure_active`), and a stream whose selectors may select the
hub's namespace reads their events' topic too (`may_select_hub`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import quote

import orjson
from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from pushsvc.broker.base import HistoryKeeper
from pushsvc.core.answers import error_json
from pushsvc.core.cursor import EARLIEST
from pushsvc.core.sse import HEADERS, jittered_retry_ms, retry_line
from pushsvc.core.subscription_registry import TooManySubscriptions
from pushsvc.core.topics import MAX_SELECTORS, TopicMatcher, validate_topic
from pushsvc.core.updates import Update
from pushsvc.deliver import mercure_lookups, mercure_resume
from pushsvc.deliver.mercure_active import ActiveSubscriptions
from pushsvc.deliver.mercure_input import check_chars, check_id, message_type, parse_form
from pushsvc.deliver.mercure_lookups import LookupsBusy
from pushsvc.deliver.mercure_pattern_shares import shares as pattern_shares
from pushsvc.deliver.mercure_selectors import WILDCARD, Selector, SelectorSet, TooManyLivePatterns
from pushsvc.deliver.mercure_subscriptions import (
    EVENT_TYPE,
    SUBSCRIPTIONS_TOPIC,
    addresses_hub,
    may_select_hub,
)
from pushsvc.deliver.mercure_updates import (
    DEFAULT_TYPE,
    PATTERN,
    PREFIX,
    MercureView,
    envelope,
    topic_name,
)
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
from pushsvc.security.topic_shares import publisher_key

bp = Blueprint("mercure", __name__)

PATH = "/.well-known/mercure"
_MESSAGES = Projection(None, None, messages=True)
_LOOK_BACK = 32
FORM = "application/x-www-form-urlencoded"


def hub_url() -> str:
    return request.host_url.rstrip("/") + PATH


@bp.post(PATH)
def publish() -> Response:
    try:
        grant = _grant(method="POST")
        if grant is None:
            return _unauthorized(bearer_challenge(), "publishing needs a token")
        rate_key = _admitted(grant)
        form = _publication_form()
        topics = form.getlist("topic")
        if not topics:
            raise BadRequest("give at least one topic field")
        mercure_type = form.get("type") or DEFAULT_TYPE
        _check_publication(topics, form.get("id"), mercure_type)
        _refuse_reserved(topics, mercure_type)
        if not grant.may_publish(topics):
            raise MercureAuthError.insufficient_scope(
                "the token does not allow publishing to every topic of this update"
            )
    except MercureAuthError as exc:
        return _refused(exc)
    update_id = form.get("id") or f"urn:uuid:{uuid.uuid4()}"
    retry = None
    if "retry" in form:
        given = form["retry"]
        if not (given.isascii() and given.isdigit()):
            raise BadRequest("retry takes a whole number of milliseconds")
        retry = int(given)
    kept = envelope(
        topics,
        form.get("data", ""),
        private="private" in form,
        update_id=update_id,
        retry=retry,
        mercure_type=mercure_type,
    )
    body = orjson.dumps({"type": message_type(mercure_type), "data": kept})
    rt = runtime()
    name = validate_topic(topic_name(topics[0]))
    publisher = publisher_key(grant.subject, request.remote_addr)
    shares = rt.topic_shares
    if shares is not None:
        shares.admit(publisher, name, rt.broker.keeps_topic)
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
        by_hub=True,
    )
    rt.metrics.events_accepted.inc(appended.accepted)
    if appended.late:  # past the topic's grace: pushed all the same, kept on its late stream
        rt.metrics.late_events.inc(appended.late)
    if rt.publish_rate is not None and rate_key is not None:
        rt.publish_rate.charge(rate_key, appended.accepted + appended.late)
    if shares is not None and appended.accepted:
        shares.note(publisher, name)
    return Response(update_id, 200, mimetype="text/plain")


@bp.get(PATH)
def subscribe() -> Response:
    rt = runtime()
    chosen: list[Selector] = []
    try:
        # The query as the specification has it parsed: its matchers UTF-8, else a 400.
        query = parse_form(request.query_string)
        for name, value in query:
            if name == "topic":
                chosen.append(Selector.of_param("match", value))
            elif Selector.is_param(name):
                chosen.append(Selector.of_param(name, value))
        if not chosen:
            raise BadRequest("give at least one match (or match_urlpattern) to subscribe to")
        if len(chosen) > MAX_SELECTORS:
            raise TooManySelectors(f"at most {MAX_SELECTORS} selectors per subscription")
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
    last_event_id = mercure_resume.requested(
        request.headers.get("Last-Event-ID"), dict(reversed(query))
    )
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
        # A publisher's id may be any text without a line break: its UTF-8 bytes, as the
        # reference hub writes them (a WSGI header is text of one byte a character).
        sent = resume.answer.encode().decode("latin-1")
        answer.headers["Mercure-Last-Event-ID"] = sent
        answer.headers["Last-Event-ID"] = sent
    return answer


@bp.after_app_request
def discovery(response: Response) -> Response:
    """The `Link` header that tells a client where the hub is, on topic responses (with the
    topic's newest update id on a read of a Mercure topic, see the module's doc)."""
    if runtime().settings.mercure != "off" and (
        request.path.startswith("/topics/") or request.path == PATH
    ):
        link = f'<{hub_url()}>; rel="mercure"'
        topic = (request.view_args or {}).get("topic")
        if (
            isinstance(topic, str)
            and topic.startswith(PREFIX)
            and request.method in ("GET", "HEAD")
            and response.status_code == 200
            and not response.is_streamed
        ):
            # Without the broker the answer stands without the cursor, as it would without
            # the hub.
            with contextlib.suppress(BrokerUnavailable):
                link += "; " + id_attribute("last-event-id", newest_id(topic))
        response.headers.add("Link", link)
    return response


def newest_id(topic: str) -> str:
    """The Mercure id of `topic`'s newest update kept, else `earliest`.

    The topic's latest update is usually that update; when a tick has published the topic's
    windows since, the newest `_LOOK_BACK` updates of its history are searched (a read from
    its newest that stops there), and past them `earliest`, which replays everything kept:
    a cursor that may repeat, never one that loses."""
    broker = runtime().broker
    latest = broker.latest(TopicMatcher([topic])).get(topic)
    if latest is None:
        return EARLIEST
    found = _mercure_id(latest)
    if found is None and isinstance(broker, HistoryKeeper):
        for update in reversed(broker.history(topic, limit=_LOOK_BACK).updates):
            if (found := _mercure_id(update)) is not None:
                break
    return EARLIEST if found is None else found


def _mercure_id(update: Update) -> str | None:
    message = _MESSAGES.message_of(update)
    if message is not None:
        kept = orjson.loads(message[1])
        if isinstance(kept, dict) and isinstance(kept.get("id"), str):
            return str(kept["id"])
    return None


def id_attribute(name: str, value: str) -> str:
    """`name="value"` as a `Link` target attribute (RFC 8288): a quoted string when `value` is
    printable ASCII, else RFC 8187's `name*=UTF-8''…` (a publisher's id may be any text
    without a line break, and a header carries ASCII)."""
    if all(" " <= c <= "~" for c in value):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}="{escaped}"'
    return f"{name}*=UTF-8''{quote(value, safe='')}"


def _admitted(grant: MercureGrant) -> str | None:
    """The publish rate's key for this publication (None without `--publish-rate`), having
    raised RateLimited when its bucket is empty. The key is the native route's: the token's
    subject, else the client's address, so one publisher has one bucket whichever API it
    publishes through. Checked before the form is read, as the native route checks before
    the body."""
    rate = runtime().publish_rate
    if rate is None:
        return None
    key = publisher_key(grant.subject, request.remote_addr)
    rate.admit(key)
    return key


def _publication_form() -> MultiDict[str, str]:
    """The publication's fields: a form-encoded body parsed as the specification has it (its
    names and values UTF-8, else a 400); a multipart one as the framework reads it."""
    if request.mimetype not in ("", FORM):
        return request.form
    try:
        return MultiDict(parse_form(request.get_data(cache=True)))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _check_publication(topics: Sequence[str], update_id: str | None, mercure_type: str) -> None:
    """The specification's rules for a publication's topics, id and type (`mercure_input`)."""
    try:
        for topic in topics:
            check_chars("a topic", topic)
        if update_id:
            check_id(update_id)
        check_chars("a type", mercure_type)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


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
    token = mercure_token(
        dict(request.headers.items()),
        request.cookies,
        request.args,
        method=method,
        target_origin=request.host_url.rstrip("/"),
    )
    if token is None:
        return None
    base_url = hub_url()
    if method != "POST":
        return _verified(token, base_url)
    # A publisher's token: verified once until it expires (see the module's doc).
    memo = runtime().mercure_publishers
    digest = hashlib.sha256(f"{base_url}\n{token}".encode()).digest()
    known = memo.get(digest, time.time())
    if isinstance(known, MercureGrant):
        return known
    grant = _verified(token, base_url)
    if not grant.holds_patterns:
        memo.put(digest, grant, grant.expires_at)
    return grant


def _verified(token: str, base_url: str) -> MercureGrant:
    settings = runtime().settings
    assert settings.jwt_key is not None, "--mercure needs --jwt-key (checked at start)"
    return verify_mercure_token(
        token,
        settings.jwt_key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        previous_key=settings.jwt_previous_key,
        base_url=base_url,
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
    return Response(error_json(code, message), status, mimetype="application/json")
