"""GET /topics/{topic}/stream, GET /stream?topic=…, GET /topics/{topic}/messages and
GET /messages?topic=… — the SSE endpoints: the views.

A messages stream is a stream of the same updates rendered as the application's messages
(`Projection.messages`): one SSE message per update that carries one, `event:` its type and
`data:` its data as published; no statistics and no snapshot.

A view reads and validates everything from the request — selectors, access, projection,
`?max_hz=`, `Last-Event-ID` — and every refusal is a JSON 4xx before any streaming starts.
It hands a ready `StreamRequest` to the stream's response (`pushsvc.deliver.stream_response`),
which subscribes, sends the replay or snapshot and hands the stream to its `LiveStream` until
one of its named exits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

from flask import Blueprint, Response, request

from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import HEADERS, jittered_retry_ms
from pushsvc.core.topics import (
    ALERTS,
    MAX_SELECTORS,
    TopicMatcher,
    validate_readable,
    validate_topic,
)
from pushsvc.deliver import stream_response
from pushsvc.deliver.compression import (
    SHARED_CONTEXTS,
    encoding_headers,
    negotiate,
    shape_key,
    shared_deflates,
)
from pushsvc.deliver.message_replay import MAX_REPLAY
from pushsvc.deliver.presence_events import Listener
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.stream_response import StreamRequest
from pushsvc.errors import BadRequest, NotKept, ServerBusy, TooManySelectors
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import group_filter
from pushsvc.http.api.presence import count_stream, subs_shown, wants_events
from pushsvc.rules.analytics import Rules
from pushsvc.rules.sessions import SESSION_STATS
from pushsvc.runtime import Runtime
from pushsvc.security.access import ReadAccess
from pushsvc.security.limits import BUSY_RETRY_AFTER_S
from pushsvc.security.visible_rules import visible_names

bp = Blueprint("streams", __name__)


@bp.get("/topics/<anytext:topic>/stream")
def topic_stream(topic: str) -> Response:
    validate_readable(topic)
    return _stream([topic], one_topic=topic)


@bp.get("/stream")
def multi_stream() -> Response:
    selectors = request.args.getlist("topic")
    if not selectors:
        raise BadRequest("give at least one ?topic= (a name, or a prefix pattern like sensors.*)")
    return _stream(selectors)


@bp.get("/topics/<anytext:topic>/messages")
def topic_messages(topic: str) -> Response:
    validate_topic(topic)
    return _messages([topic])


@bp.get("/messages")
def multi_messages() -> Response:
    selectors = request.args.getlist("topic")
    if not selectors:
        raise BadRequest("give at least one ?topic= (a name, or a prefix pattern like orders.*)")
    return _messages(selectors)


_NOT_FOR_MESSAGES = ("windows", "stats", "precision", "group", "series", "max_hz", "forecast")


def _messages(selectors: Sequence[str]) -> Response:
    """A messages stream of `selectors` (the view: every refusal before streaming)."""
    rt = runtime()
    _refuse_delta(request.args.get("delta"))
    if len(selectors) > MAX_SELECTORS:
        raise TooManySelectors(f"at most {MAX_SELECTORS} ?topic= selectors per stream")
    reader = rt.gate.reader(request, TopicMatcher(selectors))
    for name in _NOT_FOR_MESSAGES:
        if name in request.args:
            raise BadRequest(
                f"?{name}= is for statistics streams (/stream): a messages stream sends each "
                "message as published"
            )
    replay_last = _replay_last(request.args.get("replay"))
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    return respond(
        rt,
        reader,
        Projection(None, None, messages=True),
        last_event_id,
        min_interval_s=0.0,
        listener=None,
        replay_last=replay_last,
    )


def _replay_last(given: str | None) -> int:
    """`?replay=N`: the last N messages first."""
    if given is None:
        return 0
    count = int(given) if given.isascii() and given.isdigit() else -1
    if not 1 <= count <= MAX_REPLAY:
        raise BadRequest(f"?replay= takes a whole number of messages from 1 to {MAX_REPLAY}")
    return count


def _stream(selectors: Sequence[str], one_topic: str | None = None) -> Response:
    # Read everything from the request here: the stream runs after the view returns,
    # outside request context. Every refusal (bad request, auth, limits) is a JSON error
    # before streaming starts; the environ goes along for the connection only.
    rt = runtime()
    _refuse_delta(request.args.get("delta"))
    if len(selectors) > MAX_SELECTORS:
        raise TooManySelectors(f"at most {MAX_SELECTORS} ?topic= selectors per stream")
    # Access first: every check below is about the topics or the rules, and a refusal that
    # came before it would tell a caller who may not read a topic what its rule keeps (a
    # private topic must answer as an unknown one, docs/security.md).
    reader = rt.gate.reader(request, TopicMatcher(selectors))
    if one_topic is not None:
        # One topic: a group filter must name tags it groups by (a pattern stream filters only).
        group_by = rt.settings.rules.for_topic(one_topic).group_by
        group_filter(request.args.getlist("group"), one_topic, group_by)
    # What the options may name, and what a 400 lists: only the rules the caller may see.
    names = visible_names(rt.settings.rules, reader.scope)
    projection = Projection.parse(
        # Any equal duration names a window: ?windows=24h selects the one written 1d.
        names.windows_named(request.args.get("windows")),
        request.args.get("stats"),
        known_windows=names.labels,
        known_stats=names.stats,
        precision=request.args.get("precision"),
        group=request.args.getlist("group"),
        series=request.args.getlist("series"),
        known_series=names.series_labels,
        forecast=request.args.getlist("forecast"),
    )
    if projection is not None:
        _refuse_what_named_topics_lack(projection, reader.matcher.names, rt.settings.rules)
    listener = None
    if wants_events(request.args.get("presence"), reader.matcher.names):
        listener = Listener(reader.matcher.names, subs_shown(rt, reader))
    if reader.alert_topics is not None and reader.matcher(ALERTS):
        # `_alerts` under a narrow scope: only the instances of topics it may read.
        base = projection or Projection(None, None)
        projection = base.scoped(reader.alert_topics, reader.scope_key)
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    return respond(
        rt,
        reader,
        projection,
        last_event_id,
        min_interval_s=_min_interval(request.args.get("max_hz")),
        listener=listener,
    )


def respond(
    rt: Runtime,
    reader: ReadAccess,
    projection: Projection | None,
    last_event_id: str | None,
    *,
    min_interval_s: float,
    listener: Listener | None,
    replay_last: int = 0,
    resume: Cursor | None = None,
    opened: Callable[[], Callable[[], None]] | None = None,
) -> Response:
    """The streaming response of a validated stream request (statistics or messages);
    `resume`: where it resumes, found by its view (`StreamRequest.resume`); `opened`: told
    once the stream is accepted, it returns what to call when the stream is over (a Mercure
    connection's subscriptions); what it raises refuses the stream."""
    encoding = negotiate(request.headers.get("Accept-Encoding"))
    contexts = shared_deflates(rt.settings.heartbeat_us, SHARED_CONTEXTS)
    rendering_key = "*" if projection is None else projection.key
    shape = shape_key(reader.matcher.selectors, rendering_key)
    if encoding and not contexts.admits(shape):
        encoding = None  # as many shapes as compressed as it may: this one goes plain
    messages = projection is not None and projection.messages
    asked = StreamRequest(
        matcher=reader.matcher,
        last_event_id=last_event_id,
        projection=projection,
        min_interval_s=min_interval_s,
        heartbeat_s=rt.settings.heartbeat_us / 1_000_000,
        # Each stream its own `retry:`, so that a restart's reconnects spread out.
        retry_ms=jittered_retry_ms(rt.settings.retry_us // 1000),
        expires_at=reader.expires_at,
        renew=reader.renew,
        grouping=(lambda topic: False)
        if messages
        else (lambda topic: rt.settings.rules.for_topic(topic).groups),
        on_live=None if listener is None else listener.live,
        encoding=encoding,
        shared_deflates=contexts if encoding else None,
        messages=messages,
        replay_last=replay_last,
        resume=resume,
        address=request.remote_addr or "",
    )
    assert rt.feed is not None, "a web runtime has an updates feed"
    if rt.hub.budget_spent:
        # The streams here hold their budget of bytes (32 times --max-stream-buffer) for
        # clients that do not read: a new one waits until they drain or are ended as slow.
        raise ServerBusy(
            "this server's streams hold their budget of pending bytes; retry later",
            retry_after_s=BUSY_RETRY_AFTER_S,
        )
    release = rt.stream_slots.acquire(request.remote_addr or "")
    release = count_stream(rt, reader, listener, release)  # presence: counted while it lives
    if opened is not None:
        try:
            closing = opened()
        except BaseException:
            release()
            raise
        release = partial(_both, closing, release)
    # `release` is called when the stream is over, whether or not it ever ran.
    body = stream_response.stream_body(rt.broker, rt.hub, rt.feed, asked, request.environ, release)
    headers = (*HEADERS, *encoding_headers(encoding))
    return Response(body, headers=headers, direct_passthrough=True)


def _both(first: Callable[[], None], then: Callable[[], None]) -> None:
    try:
        first()
    finally:
        then()


def _refuse_what_named_topics_lack(
    projection: Projection, topics: Iterable[str], rules: Rules
) -> None:
    """A topic named outright must keep every window and statistic the projection names: a
    400 before streaming says which it lacks. (A pattern stream spans rules: there each
    topic sends what it keeps of them.)"""
    for topic in sorted(topics):
        if topic == ALERTS:
            continue  # alert changes carry no windows
        rule = rules.for_topic(topic)
        reported = rule.reported
        if topic in rules.session_topics:
            reported = (*reported, *SESSION_STATS)
        missing = projection.not_kept(rule.labels, reported)
        if missing:
            raise NotKept(
                f"{topic} does not keep {', '.join(missing)}: its windows are "
                f"{', '.join(rule.labels)} and its statistics {', '.join(reported)}"
            )


DELTA_WITHDRAWN = (
    "?delta= was withdrawn: its patches saved no bytes over gzip compression and cost CPU "
    "on every delivery. To save bytes, send Accept-Encoding: gzip (browsers do): the stream "
    "comes compressed"
)
"""The answer to a stream asked for with `?delta=` (any value): a client written for it
learns what to do instead, rather than receiving whole updates it does not expect."""


def _refuse_delta(given: str | None) -> None:
    if given is not None:
        raise BadRequest(DELTA_WITHDRAWN)


def _min_interval(max_hz: str | None) -> float:
    if max_hz is None:
        return 0.0
    try:
        hz = float(max_hz)
    except ValueError:
        hz = 0.0
    if not 0 < hz <= 1000:
        raise BadRequest(
            f"?max_hz= takes a number of updates per second in (0, 1000]; got {max_hz!r}"
        )
    return 1.0 / hz
