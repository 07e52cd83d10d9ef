"""GET /topics/{topic}/stream and GET /stream?topic=… — the SSE endpoints.

One streaming loop with named exits (docs/architecture.md):
* `shutdown` — the server is stopping (Hub.close);
* `slow`     — the client took nothing for the slow-client timeout while its queue overflowed;
* client gone — the WSGI server raises in the generator's `yield` or closes it (GeneratorExit);
* otherwise: wait for updates, or send a heartbeat when `heartbeat` passes with no write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import gevent
import orjson
from flask import Blueprint, Response, request

from pushsvc.api.context import runtime
from pushsvc.broker.base import Broker, Update
from pushsvc.errors import BadRequest
from pushsvc.hub import Client, Delivery, Hub, Run
from pushsvc.ids import parse_id
from pushsvc.projection import Projection
from pushsvc.sse import HEADERS, HEARTBEAT, encode_message, encode_update, retry_line
from pushsvc.topics import TopicMatcher, validate_topic

bp = Blueprint("streams", __name__)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Everything a stream needs from its request, read in the view."""

    matcher: TopicMatcher
    last_event_id: str | None
    projection: Projection | None
    min_interval_s: float
    heartbeat_s: float
    retry_ms: int


@bp.get("/topics/<anytext:topic>/stream")
def topic_stream(topic: str) -> Response:
    validate_topic(topic)
    return _stream([topic])


@bp.get("/stream")
def multi_stream() -> Response:
    selectors = request.args.getlist("topic")
    if not selectors:
        raise BadRequest("give at least one ?topic= (a name, or a prefix pattern like sensors.*)")
    return _stream(selectors)


def _stream(selectors: Sequence[str]) -> Response:
    # Read everything from the request here: the generator runs after the view returns.
    rt = runtime()
    matcher = TopicMatcher(selectors)
    options = StreamOptions(
        matcher=matcher,
        last_event_id=request.headers.get("Last-Event-ID") or request.args.get("lastEventId"),
        projection=Projection.parse(
            request.args.get("windows"),
            request.args.get("stats"),
            known_windows=rt.settings.window_labels,
            known_stats=rt.settings.stats,
        ),
        min_interval_s=_min_interval(request.args.get("max_hz")),
        heartbeat_s=rt.settings.heartbeat / 1_000_000,
        retry_ms=rt.settings.retry // 1000,
    )
    exact = None if any("*" in s for s in selectors) else frozenset(selectors)
    client = rt.hub.subscribe(matcher, exact)
    return Response(_events(rt.broker, rt.hub, client, options), headers=HEADERS)


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


def _events(broker: Broker, hub: Hub, client: Client, options: StreamOptions) -> Iterator[bytes]:
    # The client is subscribed before history and snapshot are read, so nothing emitted
    # in between is missed; `floor` then drops what the replay or snapshot already covered.
    projection = options.projection
    try:
        yield retry_line(options.retry_ms)
        last_id = options.last_event_id
        replay = broker.replay(last_id, options.matcher) if last_id else None
        if replay is None:
            snapshot, floor = _snapshot(broker, options, gap=last_id is not None)
            yield snapshot
        else:
            yield b"".join(_replayed(u, projection) for u in replay)
            floor = parse_id(replay[-1].id if replay else last_id or "")
        pacer = _Pacer(options.min_interval_s) if options.min_interval_s else None
        last_order = 0
        last_write = time.monotonic()
        while client.closed_reason is None:
            wait = options.heartbeat_s - (time.monotonic() - last_write)
            if pacer is not None and pacer.pending:
                wait = min(wait, pacer.next_due() - time.monotonic())
            client.writer = None
            runs = client.take(max(wait, 0.0))
            client.writer = gevent.getcurrent()
            if floor is not None and runs:
                runs, floor = _drop_covered(runs, floor)
            if pacer is None:
                # The common case: each run is written as the block the hub joined once.
                chunk = b"".join([_block(run, projection) for run in runs])
            else:
                due = pacer.admit([d for run in runs for d in run.deliveries], time.monotonic())
                frames = []
                for delivery in due:
                    # A paced update held back behind newer ones goes without `id:`, so the
                    # client's Last-Event-ID never moves backwards.
                    frames.append(_frame(delivery, projection, with_id=delivery.order > last_order))
                    last_order = max(last_order, delivery.order)
                chunk = b"".join(frames)
            if chunk:
                yield chunk
                last_write = time.monotonic()
            elif client.closed_reason is None and (
                time.monotonic() - last_write >= options.heartbeat_s
            ):
                yield HEARTBEAT
                last_write = time.monotonic()
    finally:
        hub.unsubscribe(client)


class _Pacer:
    """`?max_hz=`: at most one update per topic per interval, always the latest."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last_sent: dict[str, float] = {}
        self.pending: dict[str, Delivery] = {}

    def admit(self, deliveries: list[Delivery], now: float) -> list[Delivery]:
        due: list[Delivery] = []
        for delivery in deliveries:
            topic = delivery.update.topic
            if (
                topic not in self.pending
                and now - self.last_sent.get(topic, -1e18) >= self.interval_s
            ):
                due.append(delivery)
                self.last_sent[topic] = now
            else:
                self.pending[topic] = delivery  # statistics are full state: the latest wins
        for topic, delivery in list(self.pending.items()):
            if now - self.last_sent[topic] >= self.interval_s:
                due.append(delivery)
                self.last_sent[topic] = now
                del self.pending[topic]
        due.sort(key=lambda d: d.order)
        return due

    def next_due(self) -> float:
        return min(self.last_sent[t] for t in self.pending) + self.interval_s


def _drop_covered(
    runs: list[Run], floor: tuple[str, int, int]
) -> tuple[list[Run], tuple[str, int, int] | None]:
    """Drop updates the replay or snapshot already covered; None once past the floor."""
    for index, run in enumerate(runs):
        if _is_after(run.deliveries[0].update.id, floor):
            return runs[index:], None  # ids only grow from here: stop comparing
        if _is_after(run.deliveries[-1].update.id, floor):
            fresh = [d for d in run.deliveries if _is_after(d.update.id, floor)]
            return [Run.of(fresh), *runs[index + 1 :]], None
    return [], floor


def _block(run: Run, projection: Projection | None) -> bytes:
    if projection is None:
        return run.block
    cache = run.projected
    if cache is None:
        cache = run.projected = {}
    block = cache.get(projection.key)
    if block is None:
        block = cache[projection.key] = b"".join(
            [encode_update(d.update.id, projection.update(d.update.data)) for d in run.deliveries]
        )
    return block


def _frame(delivery: Delivery, projection: Projection | None, *, with_id: bool) -> bytes:
    if projection is None and with_id:
        return delivery.frame
    data = delivery.update.data if projection is None else projection.update(delivery.update.data)
    if with_id:
        return encode_update(delivery.update.id, data)
    return encode_message(data, event="stats")


def _replayed(update: Update, projection: Projection | None) -> bytes:
    data = update.data if projection is None else projection.update(update.data)
    return encode_update(update.id, data)


def _is_after(update_id: str, floor: tuple[str, int, int]) -> bool:
    parsed = parse_id(update_id)
    # An id of another epoch comes from a history reset after the floor was taken: it is new.
    return parsed is None or parsed[0] != floor[0] or parsed[1:] > floor[1:]


def _snapshot(
    broker: Broker, options: StreamOptions, *, gap: bool
) -> tuple[bytes, tuple[str, int, int] | None]:
    latest: dict[str, Update] = broker.latest(options.matcher)
    topics = {}
    newest: Update | None = None
    newest_key: tuple[str, int, int] | None = None
    for topic, update in sorted(latest.items()):
        state = orjson.loads(update.data)
        windows = state["windows"]
        if options.projection is not None:
            windows = options.projection.windows_of(windows)
        topics[topic] = {"id": update.id, "ts": state["ts"], "windows": windows}
        key = parse_id(update.id)
        if newest_key is None or (key is not None and _is_after(update.id, newest_key)):
            newest, newest_key = update, key
    data = orjson.dumps({"gap": gap, "topics": topics})
    message = encode_message(data, event="snapshot", id=newest.id if newest else None)
    return message, newest_key
