"""One SSE stream's response, after its view has read and validated the request: subscribe,
send the replay or snapshot, then hand the stream to its `LiveStream` until one of its named
exits.

The view (`pushsvc.http.api.streams`) hands over a `StreamRequest`, everything it read from the
request, and the WSGI environ (for the connection only); nothing here touches request context,
which is gone by the time a streaming response runs (Flask's `stream_with_context` warning).
`events` is the response body: `retry:`, then the primed head (`pushsvc.deliver.subscription`),
a page at a time (`head_page_size`: each page is rendered once the server has written the one
before, and counted in flight against the stream's byte bound while it is written, so a
client that reads nothing holds one page and the hub's sweeper ends it as `slow`), then the
stream's `LiveStream` (`pushsvc.deliver.live_stream`), which owns its writes (the hub's direct
writer sends an idle plain-TCP stream's runs in turns with it), on one of two sinks:

* plain TCP under pushsvc's server: the connection, handed over once the head is out
  (`stream_socket.hand_over`); the response ends at once with nothing more written, and the
  stream lives on with no greenlet;
* anywhere else (TLS, gunicorn, another WSGI server): the response's greenlet, which yields
  what the stream sends to the server (`pushsvc.deliver.server_writes`).

A stream whose client offers gzip (`StreamRequest.encoding`) has its head compressed piece by
piece and its live runs rendered by a `CompressedRendering` in the shared context of its shape
(`pushsvc.deliver.compression`), released at its end.

The named exits (`StreamExit`, the `reason` of `pushsvc_stream_disconnects_total`):
* `shutdown` — the server is stopping (Hub.close);
* `reset`    — the broker connection was lost and updates may have been missed (Hub.reset):
  the client reconnects and resumes from the history;
* `error`    — the subscription could not be primed (the history could not be read): the
  response breaks off before the stream goes live, and EventSource retries (a messages
  stream that came with no `Last-Event-ID` says `event: gap` first: `unprimed_gap`);
* `slow`     — the client's socket took nothing for the slow-client timeout while the stream
  held bytes for it (the hub's sweeper, or the server's write deadline);
* `expired`  — the token the stream was opened with has expired (EventSource reconnects with
  the cookie it has; an expired one gets a 401, and EventSource stops for good);
* `gone`     — the client closed or reset its connection: noticed without writing by its
  socket turning readable (`pushsvc.deliver.peer_watch`), or a write failed. The stream
  then ends as a failed write does: no last chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

import orjson

from pushsvc.broker.base import Broker, UpdatesFeed
from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import encode_message, retry_line
from pushsvc.core.topics import TopicMatcher
from pushsvc.deliver import peer_watch, subscription
from pushsvc.deliver.compression import CompressedRendering, HeadCompressor, shape_key
from pushsvc.deliver.hub import Hub, StreamExit
from pushsvc.deliver.live_stream import LiveStream, Renew, StreamSink
from pushsvc.deliver.pacer import Paced
from pushsvc.deliver.peer_watch import PeerWatch
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import GAP_EVENT, Rendering, rendering_for_stream
from pushsvc.deliver.server_writes import ServerWrites
from pushsvc.deliver.shared_deflate import SharedDeflates
from pushsvc.deliver.stream_socket import (
    SEND_BUFFER,
    cap_send_buffer,
    hand_over,
    let_go_of_request,
    on_write_timeout,
)
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Everything a stream needs from its request, read and validated in the view."""

    matcher: TopicMatcher
    last_event_id: str | None
    projection: Projection | None
    min_interval_s: float
    """`?max_hz=` as the interval between two updates of a topic; 0: not paced."""
    heartbeat_s: float
    retry_ms: int
    expires_at: float | None
    """Epoch seconds at which the stream's token expires (None: never)."""
    grouping: Callable[[str], bool]
    """Whether a topic groups by tags (its snapshot carries its groups)."""
    on_live: Callable[[LiveStream], None] | None = None
    """Told the stream once it is live (its presence events, `pushsvc.deliver.presence_events`)."""
    renew: Renew | None = None
    """Asks again at `expires_at` (a grant of the application's backend), else it ends."""
    encoding: str | None = None
    """`gzip` when the stream is compressed (`pushsvc.deliver.compression.negotiate`)."""
    shared_deflates: SharedDeflates | None = None
    """Where a compressed stream finds the shared context of its shape."""
    messages: bool = False
    """A messages stream (`/messages`): its projection renders messages, its queue never
    conflates."""
    replay_last: int = 0
    """`?replay=N`: a messages stream without `Last-Event-ID` starts with the last N."""
    resume: Cursor | None = None
    """Where the stream resumes when its view found it (a Mercure update's id, `earliest`:
    `pushsvc.deliver.mercure_resume`), in place of reading `last_event_id` as a cursor."""
    address: str = ""
    """The client's address: its turn among the streams being primed
    (`pushsvc.deliver.priming`)."""


def events(
    broker: Broker,
    hub: Hub,
    feed: UpdatesFeed,
    request: StreamRequest,
    environ: Mapping[str, object],
    take_on_close: Callable[[], Callable[[], None] | None] | None = None,
) -> Iterator[bytes]:
    """The stream's response body (see the module docstring). Raises BrokerUnavailable when
    the subscription cannot be primed (`error`) and ConnectionResetError when the client is
    `gone`; ends quietly on every other exit.

    With `take_on_close` (the body's, `StreamBody.take_on_close`), the stream's end calls
    what the body would have on close; where the server hands its connection over once the
    head is out, the response ends there with nothing more written."""
    head = HeadCompressor() if request.encoding else None
    retry = head.compress(retry_line(request.retry_ms)) if head else retry_line(request.retry_ms)
    subscribe = partial(
        subscription.subscribe,
        broker,
        hub,
        feed,
        request.matcher,
        request.last_event_id,
        grouping=request.grouping,
        messages=request.messages,
        replay_last=request.replay_last,
        resume=request.resume,
        address=request.address,
    )
    if request.messages:
        # A messages stream starts live, with no snapshot to stand for what came before: it
        # is primed before its response's head goes out, so that every message published
        # once its client has the head is the stream's. A history that cannot be read ends
        # it at once, with a 200 and its `retry:` (an EventSource retries; an error status
        # would make it give up for good), and a gap where its client has no id to resume
        # from (`unprimed_gap`).
        try:
            primed = subscribe()
        except BrokerUnavailable:
            yield retry
            if request.last_event_id is None and request.resume is None:
                gap = unprimed_gap(request.projection, request.matcher.selectors)
                yield head.compress(gap) if head else gap
            return
        yield retry
    else:
        yield retry
        primed = subscribe()
    client = primed.client
    watch = None
    live: LiveStream | None = None
    handed_over = False
    try:
        # From here a client that leaves ends the stream within a moment, written to or not.
        watch = peer_watch.watch_stream(environ, client.gone)
        queue = client.queue
        on_write_timeout(environ, partial(hub.close_slow, client))
        cap_send_buffer(environ, SEND_BUFFER)
        client.writing()  # a head stuck in the server's write is ended there (Subscriber.close)
        for page in primed.pages(request.projection, head_page_size(queue.max_bytes)):
            if head is not None:
                page = head.compress(page)
            if not queue.may_hold(len(page)):
                # The process's streams hold their budget: this one ends before it holds
                # more (its client resumes from its `Last-Event-ID`).
                client.close(StreamExit.BEHIND)
                break
            queue.hold(len(page))
            yield page
            client.progressed()
            if client.closed_reason is not None:
                break
        queue.hold(0)
        client.writing(False)  # a live stream's writer is its sink's, if it has one
        ends = [primed.close, take_on_close() if take_on_close is not None else None]
        handed = hand_over(environ) if take_on_close is not None else None
        sink: StreamSink
        writes = None
        if handed is not None:
            if watch is not None:
                watch.stop()  # it watched the socket pywsgi had: the stream watches its own
            sock, sink, closed = handed
            watch = PeerWatch(sock, client.gone)
            ends.append(closed)
            handed_over = True
        else:
            sink = writes = ServerWrites(client)
            # Everything is read from the request: the server may free it (the environ empties).
            let_go_of_request(environ)
        rendering = rendering_for_stream(
            request.projection, chunked=sink.chunked, cursor=primed.live_cursor
        )
        if head is not None:
            rendering = _compressed(rendering, request, ends)
        paced = None
        if request.min_interval_s:
            paced = Paced(request.min_interval_s, rendering.message)
        live = LiveStream(
            client,
            sink,
            rendering,
            heartbeat_s=request.heartbeat_s,
            expires_at=request.expires_at,
            renew=request.renew,
            latency=hub.delivery_latency,
            on_end=partial(_end_all, tuple(ends)),
            paced=paced,
            watch=watch,
        )
        watch = None  # the stream's now: it stops it at its end
        if request.on_live is not None:
            request.on_live(live)
        if writes is not None:
            yield from writes
    finally:
        if watch is not None:
            watch.stop()  # before the server closes the socket and its descriptor is reused
        if live is not None:
            if not handed_over:
                live.close()  # the server stopped writing it (or it ended already)
        else:
            # A client leaving is how most streams end (a reconnect storm ends thousands at
            # once): counted, not logged, like a shutdown.
            if client.closed_reason not in (None, StreamExit.SHUTDOWN, StreamExit.GONE):
                log.info("stream ended: %s", client.closed_reason)
            primed.close()


def unprimed_gap(projection: Projection | None, selectors: Iterable[str]) -> bytes:
    """What a messages stream that came with no position (no `Last-Event-ID`) and could not
    be primed sends after its `retry:`: an `event: gap` naming its topics and patterns (none
    on a Mercure stream, as `rendering.messages_head`), with no `id:`. Its client has no
    position to come back with, so its next stream starts live: what is published until then
    is never replayed to it, and it is told so. A stream that came with a position needs
    none: its client keeps its `Last-Event-ID`, and its next stream replays from there."""
    named = () if projection is not None and projection.mercure is not None else selectors
    data = orjson.dumps({"topics": sorted(set(named))})
    return encode_message(data, event=GAP_EVENT)


def head_page_size(max_stream_buffer: int) -> int:
    """How much of a replay or snapshot a stream renders at a time: a quarter of its byte
    bound, so that live updates queued meanwhile still have room, between 4 and 64 KiB."""
    return max(4096, min(65536, max_stream_buffer // 4))


def _compressed(
    rendering: Rendering, request: StreamRequest, ends: list[Callable[[], None] | None]
) -> Rendering:
    """The stream's rendering compressed, in the shared context of its shape (released at
    its end, with `ends`)."""
    contexts = request.shared_deflates
    if contexts is None:
        return CompressedRendering(rendering, None)
    context = contexts.acquire(
        shape_key(request.matcher.selectors, rendering.key, rendering.per_stream)
    )
    ends.append(partial(contexts.release, context))
    return CompressedRendering(rendering, context)


def _end_all(ends: tuple[Callable[[], None] | None, ...]) -> None:
    """A live stream is over: end its subscription, release its slot, uncount its connection
    (a handed-over one)."""
    for end in ends:
        if end is None:
            continue
        try:
            end()
        except Exception:  # the others must still run
            log.exception("ending a stream failed")


class StreamBody:
    """A stream's WSGI response body: iterating it is iterating its `events` itself, and
    closing it closes them and then calls `on_close` (once, whether or not the stream ever
    ran), unless its live stream took it over (`take_on_close`).

    Given to Werkzeug with `direct_passthrough`, it goes to the WSGI server as it is: the
    server's loop resumes the stream's generator directly, not through Werkzeug's closing
    iterator and its encoding generator, two frames fewer on the C stack that a stream's
    greenlet saves each time it waits."""

    __slots__ = ("_on_close", "events")

    def __init__(self, on_close: Callable[[], None]) -> None:
        self._on_close: Callable[[], None] | None = on_close
        self.events: Iterator[bytes] = iter(())

    def __iter__(self) -> Iterator[bytes]:
        return self.events

    def take_on_close(self) -> Callable[[], None] | None:
        on_close, self._on_close = self._on_close, None
        return on_close

    def close(self) -> None:
        on_close = self.take_on_close()
        try:
            self.events.close()  # type: ignore[attr-defined]
        finally:
            if on_close is not None:
                on_close()


def stream_body(
    broker: Broker,
    hub: Hub,
    feed: UpdatesFeed,
    request: StreamRequest,
    environ: Mapping[str, object],
    on_close: Callable[[], None],
) -> StreamBody:
    """The response body of a stream (`events`); `on_close` is called when the stream is over."""
    body = StreamBody(on_close)
    body.events = events(broker, hub, feed, request, environ, body.take_on_close)
    return body
