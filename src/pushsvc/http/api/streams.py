"""GET /topics/{topic}/stream and GET /stream?topic=… — the SSE endpoints.

The view reads and validates everything from the request (a bad request is a 4xx before
any streaming starts); the generator subscribes (`pushsvc.deliver.subscription`), sends the replay
or snapshot, then runs the loop of its write mode:
* `_write_own_socket` — pushsvc's own pywsgi on plain TCP: the stream writes its socket
  itself, and the hub writes it while it sleeps (the direct way);
* `_yield_to_server` — gunicorn, TLS, any other server: blocks are yielded to it;
* `_yield_paced` — `?max_hz=`: the pacer picks the updates, yielded to the WSGI server.

Each loop has the same named exits (docs/architecture.md):
* `shutdown` — the server is stopping (Hub.close);
* `reset`    — the broker connection was lost and updates may have been missed (Hub.reset):
  the client reconnects and resumes from the history;
* `error`    — the subscription could not be primed (the history could not be read): the
  response breaks off, and EventSource retries;
* `slow`     — the client took nothing for the slow-client timeout while its queue overflowed;
* `expired`  — the token the stream was opened with has expired (EventSource reconnects with
  the cookie it has; an expired one gets a 401, and EventSource stops for good);
* `gone`     — the client closed or reset its connection: noticed without writing by its
  socket turning readable (`pushsvc.deliver.peer_watch`), which closes the subscriber and
  wakes the loop;
  or a write fails (the WSGI server raises in the generator's `yield` or closes it);
* otherwise: wait for updates, or send a heartbeat when `heartbeat` passes with no write.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from flask import Blueprint, Response, request

from pushsvc.broker.base import Broker, UpdatesFeed
from pushsvc.core.sse import (
    HEADERS,
    HEARTBEAT,
    coalesce,
    encode_message,
    encode_update,
    retry_line,
)
from pushsvc.core.topics import ALERTS, TopicMatcher, validate_readable
from pushsvc.core.updates import Update, UpdateId
from pushsvc.deliver import peer_watch, subscription
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.hub import DirectWay, Hub, StreamExit, Subscriber
from pushsvc.deliver.pacer import Pacer
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import rendering_for
from pushsvc.deliver.stream_socket import StreamSocket
from pushsvc.errors import BadRequest, TooManySelectors
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import group_filter

bp = Blueprint("streams", __name__)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Everything a stream needs from its request, read in the view."""

    matcher: TopicMatcher
    last_event_id: str | None
    projection: Projection | None
    min_interval_s: float
    heartbeat_s: float
    retry_ms: int
    expires_at: float | None
    """Epoch seconds at which the stream's token expires (None: never)."""
    grouping: Callable[[str], bool]
    """Whether a topic groups by tags (its snapshot carries its groups)."""


@bp.get("/topics/<anytext:topic>/stream")
def topic_stream(topic: str) -> Response:
    validate_readable(topic)
    # One topic: a group filter must name tags it groups by (a pattern stream filters only).
    group_filter(
        request.args.getlist("group"), topic, runtime().settings.rules.for_topic(topic).group_by
    )
    return _stream([topic])


@bp.get("/stream")
def multi_stream() -> Response:
    selectors = request.args.getlist("topic")
    if not selectors:
        raise BadRequest("give at least one ?topic= (a name, or a prefix pattern like sensors.*)")
    return _stream(selectors)


def _stream(selectors: Sequence[str]) -> Response:
    # Read everything from the request here: the generator runs after the view returns.
    # Every refusal (bad request, auth, limits) is a JSON error before streaming starts.
    rt = runtime()
    if len(selectors) > rt.settings.max_selectors:
        raise TooManySelectors(f"at most {rt.settings.max_selectors} ?topic= selectors per stream")
    reader = rt.gate.reader(request, TopicMatcher(selectors))
    projection = Projection.parse(
        request.args.get("windows"),
        request.args.get("stats"),
        known_windows=rt.settings.rules.labels,
        known_stats=rt.settings.rules.stats,
        precision=request.args.get("precision"),
        group=request.args.getlist("group"),
        series=request.args.getlist("series"),
        known_series=rt.settings.rules.series_labels,
    )
    if reader.alert_topics is not None and reader.matcher(ALERTS):
        # `_alerts` under a narrow scope: only the instances of topics it may read.
        base = projection or Projection(None, None)
        projection = base.scoped(reader.alert_topics, reader.scope_key)
    options = StreamOptions(
        matcher=reader.matcher,
        last_event_id=request.headers.get("Last-Event-ID") or request.args.get("lastEventId"),
        projection=projection,
        min_interval_s=_min_interval(request.args.get("max_hz")),
        heartbeat_s=rt.settings.heartbeat_us / 1_000_000,
        retry_ms=rt.settings.retry_us // 1000,
        expires_at=reader.expires_at,
        grouping=lambda topic: rt.settings.rules.for_topic(topic).groups,
    )
    assert rt.feed is not None, "a web runtime has an updates feed"
    release = rt.stream_slots.acquire(request.remote_addr or "")
    events = _events(rt.broker, rt.hub, rt.feed, options, request.environ)
    response = Response(events, headers=HEADERS)
    # Called when the server closes the response, whether or not the generator ever ran.
    response.call_on_close(release)
    return response


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


def _events(
    broker: Broker,
    hub: Hub,
    feed: UpdatesFeed,
    options: StreamOptions,
    environ: Mapping[str, object],
) -> Iterator[bytes]:
    yield retry_line(options.retry_ms)
    primed = subscription.subscribe(
        broker, hub, feed, options.matcher, options.last_event_id, grouping=options.grouping
    )
    client = primed.client
    watch = None
    try:
        # From here a client that leaves ends the stream within a moment, written to or not.
        watch = peer_watch.watch_stream(environ, partial(client.close, StreamExit.GONE))
        yield primed.head(options.projection)
        latency = hub.delivery_latency
        if options.min_interval_s:
            yield from _yield_paced(client, options, latency)
        elif (sink := StreamSocket.of(environ)) is not None:
            _write_own_socket(client, sink, options, latency)
        else:
            yield from _yield_to_server(client, options, latency)
        if client.closed_reason == StreamExit.GONE:
            # Not the end of a response (its last chunk, on TLS a write that fails loudly)
            # but the end of a connection whose peer left, as for a failed write.
            raise ConnectionResetError(errno.ECONNRESET, "stream closed: the client went away")
    finally:
        if watch is not None:
            watch.stop()  # before the server closes the socket and its descriptor is reused
        # A client leaving is how most streams end (a reconnect storm ends thousands at
        # once): counted, not logged, like a shutdown.
        if client.closed_reason not in (None, StreamExit.SHUTDOWN, StreamExit.GONE):
            log.info("stream ended: %s", client.closed_reason)
        primed.close()


def _write_own_socket(
    client: Subscriber, sink: StreamSocket, options: StreamOptions, latency: Histogram
) -> None:
    """Under pushsvc's own pywsgi on plain TCP: the stream writes its socket itself, and lets
    the hub write it while it sleeps (the direct way, `pushsvc.deliver.hub`).

    Each wake-up writes, in order, what the hub handed back, then the runs the hub had meant
    to write, then those queued meanwhile — the runs as one chunk of the blocks rendered once
    for every stream alike. Nothing is yielded: it returns when the subscriber is closed or
    the token expired, and raises ConnectionResetError when the peer is gone.
    """
    rendering = rendering_for(options.projection, chunked=sink.chunked)
    direct_way = client.direct_way = DirectWay(sink, rendering)
    last_write = time.monotonic()
    while client.closed_reason is None:
        # What the hub wrote counts: no heartbeat right behind one of its writes.
        last_write = max(last_write, direct_way.last_write_us / 1_000_000)
        wait = _wait_s(options, last_write)
        if wait is None:
            client.close(StreamExit.EXPIRED)
            break
        runs = client.take(max(wait, 0.0))
        handback, ready = direct_way.leftovers()
        if ready:  # runs the hub had meant to write: older than what take returned
            runs = ready + runs
        # Empty when a group filter left nothing of the runs: then as if none had come.
        blocks = rendering.blocks(runs)
        if blocks or handback is not None:
            pass
        elif client.closed:  # woken to end, with nothing left to write
            break
        elif time.monotonic() - last_write < options.heartbeat_s:
            continue
        else:
            blocks = [HEARTBEAT]
        _send(sink, handback, blocks)
        last_write = time.monotonic()
        if runs and (oldest_us := runs[0].received_us):
            latency.observe(int(last_write * 1_000_000) - oldest_us)


def _yield_to_server(
    client: Subscriber, options: StreamOptions, latency: Histogram
) -> Iterator[bytes]:
    """Under gunicorn, on TLS, or wherever the socket cannot be had: every run comes through
    the stream's queue and is yielded to the WSGI server as its block, consecutive small
    ones joined (`coalesce`). Ends when the subscriber is closed or the token expired."""
    rendering = rendering_for(options.projection, chunked=False)
    last_write = time.monotonic()
    while client.closed_reason is None:
        wait = _wait_s(options, last_write)
        if wait is None:
            client.close(StreamExit.EXPIRED)
            break
        runs = client.take(max(wait, 0.0))
        blocks = rendering.blocks(runs)
        if blocks:
            pass
        elif client.closed:  # woken to end, with nothing left to write
            break
        elif time.monotonic() - last_write < options.heartbeat_s:
            continue
        else:
            blocks = [HEARTBEAT]
        yield from coalesce(blocks)
        last_write = time.monotonic()
        if runs and (oldest_us := runs[0].received_us):
            latency.observe(int(last_write * 1_000_000) - oldest_us)


def _yield_paced(client: Subscriber, options: StreamOptions, latency: Histogram) -> Iterator[bytes]:
    """`?max_hz=`: at most one update per topic per interval, always its latest (`Pacer`),
    decided update by update, so the stream keeps the queued way and yields to the WSGI
    server. An update held back behind newer ones goes without `id:`, so the client's
    Last-Event-ID never moves backwards. Ends when the subscriber is closed or the token
    expired."""
    pacer = Pacer(options.min_interval_s)
    projection = options.projection
    last_sent: UpdateId | None = None
    last_write = time.monotonic()
    while client.closed_reason is None:
        wait = _wait_s(options, last_write)
        if wait is None:
            client.close(StreamExit.EXPIRED)
            break
        if pacer.pending:
            wait = min(wait, pacer.next_due() - time.monotonic())
        runs = client.take(max(wait, 0.0))
        frames = []
        taken = [u for run in runs for u in run.updates]
        for update in pacer.admit(taken, time.monotonic()):
            fresh = last_sent is None or update.id.is_after(last_sent)
            frame = _frame(update, projection, with_id=fresh)
            if frame:  # empty: a group filter left nothing of it
                frames.append(frame)
                if fresh:
                    last_sent = update.id
        if frames:
            blocks = [b"".join(frames)]
        elif client.closed:  # woken to end, with nothing left to write
            break
        elif time.monotonic() - last_write < options.heartbeat_s:
            continue
        else:
            blocks = [HEARTBEAT]
        yield from coalesce(blocks)
        last_write = time.monotonic()
        if runs and (oldest_us := runs[0].received_us):
            latency.observe(int(last_write * 1_000_000) - oldest_us)


def _wait_s(options: StreamOptions, last_write: float) -> float | None:
    """How long the stream may sleep before a heartbeat is due or its token expires (may be
    negative: due now); None once the token has expired."""
    wait = options.heartbeat_s - (time.monotonic() - last_write)
    expires_at = options.expires_at
    if expires_at is not None:
        left = expires_at - time.time()
        if left <= 0:
            return None
        wait = min(wait, left)
    return wait


def _send(sink: StreamSocket, handback: memoryview | None, blocks: list[bytes]) -> None:
    try:
        if handback is not None:
            sink.send_rest(handback)
        if blocks:
            sink.send(blocks)
    except OSError as exc:
        # The peer is gone: end the response the way pywsgi ends one whose write failed.
        raise ConnectionResetError(errno.ECONNRESET, f"stream closed: {exc}") from None


def _frame(update: Update, projection: Projection | None, *, with_id: bool) -> bytes:
    if projection is None and update.is_point:
        return b""  # points go to the streams that ask for their tier
    if projection is None and with_id:
        return update.frame
    data = update.data if projection is None else projection.data(update)
    if data is None:
        return b""  # a group filter leaves nothing of it
    if with_id:
        return encode_update(update.id.text, data, update.event)
    return encode_message(data, event=update.event)
