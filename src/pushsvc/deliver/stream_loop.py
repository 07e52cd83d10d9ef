"""One SSE stream's life, after its view has read and validated the request: subscribe, send
the replay or snapshot, then one loop — written once, for every way a stream is written — until
one of its named exits.

The view (`pushsvc.http.api.streams`) hands over a `StreamRequest`, everything it read from the
request, and the WSGI environ (for the connection only); nothing here touches request context,
which is gone by the time a streaming response runs (Flask's `stream_with_context` warning).
`events` is the response body: `retry:`, then the primed head (`pushsvc.deliver.subscription`),
a page at a time (`head_page_size`: each page is rendered once the server has written the one
before, and counted in flight against the stream's byte bound while it is written, so a
client that reads nothing holds one page and the hub's sweeper ends it as `slow`), then
`loop` with the write strategy that fits (`pushsvc.deliver.stream_writes`: `OwnSocket`,
`YieldToServer` or `Paced`). Its `finally:` stops the peer watch and ends the subscription on
every exit.

The loop's named exits (`StreamExit`, the `reason` of `pushsvc_stream_disconnects_total`):
* `shutdown` — the server is stopping (Hub.close);
* `reset`    — the broker connection was lost and updates may have been missed (Hub.reset):
  the client reconnects and resumes from the history;
* `error`    — the subscription could not be primed (the history could not be read): the
  response breaks off before the loop, and EventSource retries;
* `slow`     — the client took nothing for the slow-client timeout while its queue overflowed;
* `expired`  — the token the stream was opened with has expired (EventSource reconnects with
  the cookie it has; an expired one gets a 401, and EventSource stops for good);
* `gone`     — the client closed or reset its connection: noticed without writing by its
  socket turning readable (`pushsvc.deliver.peer_watch`), which closes the subscriber and
  wakes the loop; or a write fails (the WSGI server raises in the generator's `yield` or
  closes it, or `OwnSocket.write` raises). The stream then ends as a failed write does:
  ConnectionResetError to the WSGI server, which writes no last chunk.
Otherwise the loop waits for updates, or sends a heartbeat when `heartbeat_s` passes with no
write (the hub's writes to the stream count).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from pushsvc.broker.base import Broker, UpdatesFeed
from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import HEARTBEAT, retry_line
from pushsvc.core.topics import TopicMatcher
from pushsvc.deliver import peer_watch, subscription
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.hub import Hub, StreamExit, Subscriber
from pushsvc.deliver.parked_stream import ParkedStream
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import rendering_for_stream
from pushsvc.deliver.stream_socket import (
    StreamSocket,
    cap_send_buffer,
    hand_over,
    let_go_of_request,
    on_write_timeout,
)
from pushsvc.deliver.stream_writes import OwnSocket, Paced, WriteStrategy, YieldToServer

log = logging.getLogger(__name__)

_HEARTBEAT: Sequence[bytes] = (HEARTBEAT,)


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

    With `take_on_close` (the body's, `StreamBody.take_on_close`), a stream that is not paced
    and whose server hands its connection over once the head is out goes on as a
    `ParkedStream`, with no greenlet: the response ends here with nothing more written, and
    the parked stream ends the subscription and calls what the body would have on close."""
    yield retry_line(request.retry_ms)
    primed = subscription.subscribe(
        broker, hub, feed, request.matcher, request.last_event_id, grouping=request.grouping
    )
    client = primed.client
    watch = None
    parked = False
    try:
        # From here a client that leaves ends the stream within a moment, written to or not.
        watch = peer_watch.watch_stream(environ, partial(client.close, StreamExit.GONE))
        queue = client.queue
        on_write_timeout(environ, partial(hub.close_slow, client))
        cap_send_buffer(environ, _SEND_BUFFER)
        client.writing()  # a head stuck in the server's write is ended there (Subscriber.close)
        for page in primed.pages(request.projection, head_page_size(queue.max_bytes)):
            queue.hold(len(page))
            yield page
            client.progressed()
            if client.closed_reason is not None:
                break
        queue.hold(0)
        client.writing(False)  # a parked stream keeps no greenlet, not even a dead one
        handed = (
            hand_over(environ) if take_on_close is not None and not request.min_interval_s else None
        )
        if handed is not None:
            assert take_on_close is not None
            if watch is not None:
                watch.stop()  # it watched the socket pywsgi had: the parked stream has its own
                watch = None
            sock, sink, closed = handed
            rendering = rendering_for_stream(
                request.projection, chunked=sink.chunked, cursor=primed.live_cursor
            )
            ParkedStream(
                client,
                sock,
                sink,
                rendering,
                heartbeat_s=request.heartbeat_s,
                expires_at=request.expires_at,
                latency=hub.delivery_latency,
                on_end=partial(_end_parked, (primed.close, take_on_close(), closed)),
            )
            parked = True
            return
        # Once the head is out: only then does pywsgi lend its socket (`StreamSocket.of`).
        strategy = _strategy(client, request, environ, primed.live_cursor)
        # Everything is read from the request: the server may free it (the environ empties).
        let_go_of_request(environ)
        yield from loop(
            client,
            strategy,
            heartbeat_s=request.heartbeat_s,
            expires_at=request.expires_at,
            latency=hub.delivery_latency,
        )
        if client.closed_reason == StreamExit.GONE:
            # Not the end of a response (its last chunk, on TLS a write that fails loudly)
            # but the end of a connection whose peer left, as for a failed write.
            raise ConnectionResetError(errno.ECONNRESET, "stream closed: the client went away")
    finally:
        if watch is not None:
            watch.stop()  # before the server closes the socket and its descriptor is reused
        # A client leaving is how most streams end (a reconnect storm ends thousands at
        # once): counted, not logged, like a shutdown.
        if not parked:
            if client.closed_reason not in (None, StreamExit.SHUTDOWN, StreamExit.GONE):
                log.info("stream ended: %s", client.closed_reason)
            primed.close()


_SEND_BUFFER = 256 * 1024
"""A stream's kernel send buffer (Linux doubles it for its bookkeeping), where the kernel
would grow it to 4 MiB; measured in docs/performance.md (hostile clients)."""


def head_page_size(max_stream_buffer: int) -> int:
    """How much of a replay or snapshot a stream renders at a time: a quarter of its byte
    bound, so that live updates queued meanwhile still have room, between 4 and 64 KiB."""
    return max(4096, min(65536, max_stream_buffer // 4))


def _end_parked(ends: tuple[Callable[[], None] | None, ...]) -> None:
    """A parked stream is over: end its subscription, release its slot, uncount it."""
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
    ran), unless a parked stream took it over (`take_on_close`).

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


def _strategy(
    client: Subscriber,
    request: StreamRequest,
    environ: Mapping[str, object],
    cursor: Cursor | None,
) -> WriteStrategy:
    """How this stream is written: paced when it asks, else by itself and the hub where the
    server lends its socket (pushsvc's pywsgi on plain TCP), else yielded to the server.
    `cursor`: where a stream that writes its cursor as `id:` is (None: own ids)."""
    if request.min_interval_s:
        return Paced(client, request.projection, request.min_interval_s, cursor=cursor)
    sink = StreamSocket.of(environ)
    if sink is not None:
        return OwnSocket(client, sink, request.projection, cursor=cursor)
    return YieldToServer(client, request.projection, cursor=cursor)


def loop(
    client: Subscriber,
    strategy: WriteStrategy,
    *,
    heartbeat_s: float,
    expires_at: float | None,
    latency: Histogram,
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> Iterator[bytes]:
    """Write the stream until an exit: the subscriber closed (`client.closed_reason`, set by
    the hub, the peer watch or a failed write) or its token expired (`expired`, set here).

    Each turn: sleep in `take` until runs come, a heartbeat is due or the token expires; write
    what came, or a heartbeat when it is due; note the delivery latency of what was written.
    Yields what the strategy gives the WSGI server. `monotonic` and `wall` (epoch seconds, for
    `expires_at`) are the clocks, injected so tests drive time.
    """
    take, render, write = strategy.take, strategy.render, strategy.write
    hold = client.queue.hold
    observe = latency.observe
    direct_way = client.direct_way  # open (`OwnSocket`): the hub writes the stream too
    last_write = monotonic()
    while client.closed_reason is None:
        if direct_way is not None:
            # What the hub wrote counts: no heartbeat right behind one of its writes.
            last_write = max(last_write, direct_way.last_write_us / 1_000_000)
        # The heartbeat and expiry step: how long the stream may sleep (negative: due now).
        wait = heartbeat_s - (monotonic() - last_write)
        if expires_at is not None:
            left = expires_at - wall()
            if left <= 0:
                client.close(StreamExit.EXPIRED)
                break
            wait = min(wait, left)
        runs = take(max(wait, 0.0))
        blocks = render(runs)
        if blocks:
            pass
        elif client.closed:  # woken to end, with nothing left to write
            break
        elif monotonic() - last_write < heartbeat_s:
            continue
        else:
            blocks = _HEARTBEAT
        # In flight while it is written (the strategy refines it where it sees the socket).
        hold(sum([len(b) for b in blocks]))
        yield from write(blocks)
        hold(0)
        last_write = monotonic()
        if runs and (oldest_us := runs[0].received_us):
            observe(int(last_write * 1_000_000) - oldest_us)
