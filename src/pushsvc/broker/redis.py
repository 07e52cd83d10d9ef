"""The Redis broker: any number of processes on any number of hosts share one Redis.

Keys and channels, all under a configurable prefix (default `pushsvc:`):

    {prefix}events:{topic}   channel  raw event batches, orjson `[[value, ts_us, tags], ...]`
    {prefix}updates:{topic}  channel  lines `<id> <clock_us> <data>`, one per update of a run
                                      (ids and integers hold no space, data no newline)
    {prefix}history          stream   the newest `history` updates: t=topic, c=clock_us, b=body
    {prefix}latest           hash     topic -> `<id> <clock_us> <data>`
    {prefix}epoch            string   the epoch of the history (ids are `{epoch}:{stream id}`)
    {prefix}trimmed          string   stream id of the newest update trimmed from the history

`publish_updates` is one Lua script per call, so numbering, history, latest and
PUBLISH happen atomically and ids are in delivery order across publishers.
The history is trimmed to exactly `history` entries (`MAXLEN =`, not `~`), and
the script records the newest trimmed id itself: XINFO's `max-deleted-entry-id`
would do that on Redis >= 7 only, and this one code path also serves 6.2.

Each broker instance has ONE pub/sub connection and ONE reader thread (a
greenlet once gevent has patched `threading`), whatever the number of handlers.
The reader reconnects with exponential backoff and subscribes again by itself.
Delivery is at most once: what is published while the reader is disconnected
is lost to it, and subscribers resume from the history.

Needs Redis >= 6.2 (exclusive XRANGE, `XTRIM MAXLEN =`). For Redis Cluster,
all keys must share a slot: use a prefix with a hash tag, e.g. `{pushsvc}:`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from pushsvc.broker.base import (
    EventsHandler,
    TopicFilter,
    Update,
    UpdateDraft,
    UpdatesHandler,
    with_id,
)
from pushsvc.errors import BrokerUnavailable
from pushsvc.events import Event
from pushsvc.ids import new_epoch, parse_id

log = logging.getLogger(__name__)

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
_POLL_S = 0.2  # how often the reader looks up from the socket, bounds close() latency
_MAX_BATCH = 256  # pub/sub messages handed over together when they arrive in a burst

# KEYS: epoch, history, latest, trimmed.
# ARGV: epoch candidate, history length, updates channel prefix, then
#       topic, clock_us, body for each draft.
_PUBLISH_UPDATES = """
local epoch = redis.call('GET', KEYS[1])
if not epoch or redis.call('EXISTS', KEYS[2]) == 0 then
  -- No epoch, or it outlived its history: whatever was there is lost, start a new one.
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[3], KEYS[4])
end
local maxlen = tonumber(ARGV[2])
local length = redis.call('XLEN', KEYS[2])
local ids = {}
-- Consecutive updates of one topic (a batch POST) travel as one message: one PUBLISH,
-- one read and one hand-over per run in every web process, not one per update.
local run, run_topic = {}, nil
for i = 4, #ARGV, 3 do
  local topic, clock, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local id = epoch .. ':' .. redis.call('XADD', KEYS[2], '*', 't', topic, 'c', clock, 'b', body)
  local packed = id .. ' ' .. clock .. ' {"id":"' .. id .. '",' .. string.sub(body, 2)
  if run_topic ~= topic then
    if run_topic then
      redis.call('HSET', KEYS[3], run_topic, run[#run])
      redis.call('PUBLISH', ARGV[3] .. run_topic, table.concat(run, '\\n'))
    end
    run, run_topic = {}, topic
  end
  run[#run + 1] = packed
  ids[#ids + 1] = id
  length = length + 1
end
if run_topic then
  redis.call('HSET', KEYS[3], run_topic, run[#run])
  redis.call('PUBLISH', ARGV[3] .. run_topic, table.concat(run, '\\n'))
end
if length > maxlen then
  local gone = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', length - maxlen)
  redis.call('SET', KEYS[4], gone[#gone][1])
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '=', maxlen)
end
return ids
"""


@contextlib.contextmanager
def _unavailable(action: str) -> Iterator[None]:
    """The library edge: Redis transport errors become BrokerUnavailable (a 503)."""
    try:
        yield
    except _UNREACHABLE as exc:
        log.warning("redis unavailable during %s: %s", action, exc)
        # The message reaches HTTP clients: no host or port in it.
        raise BrokerUnavailable(f"Redis is unavailable ({type(exc).__name__})") from None


def _stream_key(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq)


def _unpack(topic: str, packed: bytes) -> Update:
    update_id, clock_us, data = packed.split(b" ", 2)
    return Update(topic, update_id.decode(), int(clock_us), data)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class _Subscription:
    def __init__(self, on_close: Callable[[], None]) -> None:
        self._on_close: Callable[[], None] | None = on_close

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


class RedisBroker:
    """Broker on a shared Redis (redis-py >= 5; works with and without gevent patching).

    `publish_events` returns PUBLISH's receiver count: the number of broker
    instances (processes) consuming events, not of handlers. `consume_*`
    returns once Redis confirmed the subscription, or raises BrokerUnavailable
    after `subscribe_timeout`. Handlers run in the reader thread; one that
    raises is logged and the others still get the message.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pushsvc:",
        history: int = 10_000,
        socket_timeout: float = 5.0,
        subscribe_timeout: float = 5.0,
        ping_interval: float = 15.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        timeouts = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "socket_keepalive": True,
        }
        # No silent retries: a retried PUBLISH or script could deliver twice,
        # and the caller must hear about an outage at once (503), not after backoff.
        # A bounded pool: a burst of new streams (each reads a snapshot) waits for a free
        # connection instead of opening one per client.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            **timeouts,
        )
        self._client = redis.Redis(connection_pool=pool)
        # The pub/sub connection gets its own pool with no error handling at all:
        # redis-py would otherwise reconnect and resubscribe a failed PubSub behind
        # our back, and our reader, which starts over with a fresh one, must be alone.
        self._pubsub_client = redis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0, supported_errors=()), **timeouts
        )
        self._script = self._client.register_script(_PUBLISH_UPDATES)
        self._prefix = prefix
        self._history = history
        self._subscribe_timeout = subscribe_timeout
        self._ping_interval = ping_interval
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._keys = [f"{prefix}epoch", f"{prefix}history", f"{prefix}latest", f"{prefix}trimmed"]
        self._events_channel = f"{prefix}events:".encode()
        self._updates_channel = f"{prefix}updates:".encode()
        self._events_pattern = f"{_glob_escape(prefix)}events:*".encode()
        self._updates_pattern = f"{_glob_escape(prefix)}updates:*".encode()

        # Changed only under _cond. The reader reads the handler tuples without it:
        # they are replaced, never mutated.
        self._cond = threading.Condition()
        self._events_handlers: tuple[EventsHandler, ...] = ()
        self._updates_handlers: tuple[UpdatesHandler, ...] = ()
        self._wanted: set[bytes] = set()  # patterns we should be subscribed to
        self._active: set[bytes] = set()  # patterns Redis confirmed on the current connection
        self._pubsub: PubSub | None = None
        self._reconnect = False  # a (un)subscribe command failed: the reader must start over
        self._reader: threading.Thread | None = None
        self._closed = False
        self._closing = threading.Event()

    # -- producer side -----------------------------------------------------

    def publish_events(self, topic: str, events: Sequence[Event]) -> int:
        self._check_open()
        payload = orjson.dumps([[e.value, e.ts_us, e.tags] for e in events])
        with _unavailable("publish_events"):
            return int(self._client.publish(self._events_channel + topic.encode(), payload))

    def publish_updates(self, drafts: Sequence[UpdateDraft]) -> list[Update]:
        self._check_open()
        if not drafts:
            return []
        args: list[str | int | bytes] = [new_epoch(), self._history, self._updates_channel]
        for draft in drafts:
            args += [draft.topic, draft.clock_us, draft.body]
        with _unavailable("publish_updates"):
            ids = self._script(keys=self._keys, args=args)
        return [with_id(d, i.decode()) for d, i in zip(drafts, ids, strict=True)]

    # -- history -----------------------------------------------------------

    def replay(self, after_id: str, match: TopicFilter) -> list[Update] | None:
        self._check_open()
        parsed = parse_id(after_id)
        if parsed is None:
            return None
        epoch, ms, seq = parsed
        epoch_key, history_key, _, trimmed_key = self._keys
        with _unavailable("replay"), self._client.pipeline(transaction=True) as pipe:
            pipe.get(epoch_key)
            pipe.get(trimmed_key)
            pipe.xrevrange(history_key, count=1)
            pipe.xrange(history_key, min=f"({ms}-{seq}")
            current, trimmed, newest, entries = pipe.execute()
        if current is None or current.decode() != epoch or not newest:
            return None  # another history (Redis restarted empty, or a stranger's id)
        if (ms, seq) > _stream_key(newest[0][0]):
            return None  # never issued
        if trimmed is not None and (ms, seq) < _stream_key(trimmed):
            return None  # an update after `after_id` was trimmed
        replayed = []
        for stream_id, fields in entries:
            topic = fields[b"t"].decode()
            if match(topic):
                draft = UpdateDraft(topic, int(fields[b"c"]), fields[b"b"])
                replayed.append(with_id(draft, f"{epoch}:{stream_id.decode()}"))
        return replayed

    def latest(self, match: TopicFilter) -> dict[str, Update]:
        self._check_open()
        with _unavailable("latest"):
            packed = self._client.hgetall(self._keys[2])
        found = {}
        for raw_topic, value in packed.items():
            topic = raw_topic.decode()
            if match(topic):
                found[topic] = _unpack(topic, value)
        return found

    def ping(self) -> None:
        self._check_open()
        with _unavailable("ping"):
            self._client.ping()

    # -- consumer side -----------------------------------------------------

    def consume_events(self, handler: EventsHandler) -> _Subscription:
        return self._subscribe(self._events_pattern, handler)

    def consume_updates(self, handler: UpdatesHandler) -> _Subscription:
        return self._subscribe(self._updates_pattern, handler)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._events_handlers = ()
            self._updates_handlers = ()
            reader = self._reader
            self._cond.notify_all()
        self._closing.set()
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=_POLL_S * 10)
        self._client.close()
        self._pubsub_client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")

    def _subscribe(self, pattern: bytes, handler: Any) -> _Subscription:
        subscription = _Subscription(lambda: self._unsubscribe(pattern, handler))
        with self._cond:
            self._check_open()
            if pattern == self._events_pattern:
                self._events_handlers = (*self._events_handlers, handler)
            else:
                self._updates_handlers = (*self._updates_handlers, handler)
            if pattern not in self._wanted:
                self._wanted.add(pattern)
                self._send("psubscribe", pattern)
            if self._reader is None:
                self._reader = threading.Thread(
                    target=self._run, name=f"pushsvc-redis-reader-{self._prefix}", daemon=True
                )
                self._reader.start()
            if self._on_reader():
                return subscription  # waiting would deadlock: we are the one who reads
            confirmed = self._cond.wait_for(
                lambda: pattern in self._active or self._closed, self._subscribe_timeout
            )
            if confirmed and not self._closed:
                return subscription
        subscription.close()
        raise BrokerUnavailable("Redis did not confirm the subscription")

    def _unsubscribe(self, pattern: bytes, handler: Any) -> None:
        with self._cond:
            if pattern == self._events_pattern:
                self._events_handlers = _without(self._events_handlers, handler)
                left = len(self._events_handlers)
            else:
                self._updates_handlers = _without(self._updates_handlers, handler)
                left = len(self._updates_handlers)
            if left or pattern not in self._wanted:
                return
            self._wanted.discard(pattern)
            self._send("punsubscribe", pattern)
            if not self._on_reader() and not self._closed:
                # So that a PUBLISH right after close() already counts one receiver less.
                self._cond.wait_for(lambda: pattern not in self._active, self._subscribe_timeout)

    def _send(self, command: str, pattern: bytes) -> None:
        """PSUBSCRIBE or PUNSUBSCRIBE on the live connection, if any; a new connection
        subscribes to `_wanted` anyway. Called with _cond held."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            getattr(pubsub, command)(pattern)
        except _UNREACHABLE:
            self._reconnect = True

    def _on_reader(self) -> bool:
        return threading.current_thread() is self._reader

    # -- the reader ----------------------------------------------------------

    def _run(self) -> None:
        backoff = self._min_backoff
        lost = False
        while not self._closing.is_set():
            try:
                self._connect()
                if lost:
                    log.warning("redis pub/sub reconnected")
                    lost = False
                backoff = self._min_backoff
                self._read()
            except (RedisError, OSError) as exc:
                if not self._closing.is_set() and not lost:
                    log.warning("redis pub/sub connection lost (%s); reconnecting", exc)
                lost = True
            except Exception:
                log.exception("redis pub/sub reader failed; reconnecting")
                lost = True
            finally:
                self._disconnect()
            if self._closing.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff)

    def _connect(self) -> None:
        pubsub = self._pubsub_client.pubsub()
        with self._cond:
            self._pubsub = pubsub
            self._reconnect = False
            if self._wanted:
                pubsub.psubscribe(*sorted(self._wanted))

    def _disconnect(self) -> None:
        with self._cond:
            pubsub, self._pubsub = self._pubsub, None
            self._active.clear()
            self._cond.notify_all()
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                pubsub.close()

    def _read(self) -> None:
        """Read until closing; raise on any sign of a dead connection."""
        last_heard = time.monotonic()
        pinged_at: float | None = None
        while not self._closing.is_set():
            with self._cond:
                if self._reconnect:
                    raise RedisConnectionError("a subscribe command failed")
                pubsub = self._pubsub
            assert pubsub is not None
            message = pubsub.get_message(timeout=_POLL_S)
            now = time.monotonic()
            if message is not None:
                last_heard, pinged_at = now, None
                self._dispatch(pubsub, message)
            elif not pubsub.subscribed:
                last_heard = now  # nothing to listen to, nothing to check
            elif pinged_at is None and now - last_heard > self._ping_interval:
                # A quiet connection may be a dead one (half-open TCP): ask.
                with self._cond:
                    pubsub.ping()
                pinged_at = now
            elif pinged_at is not None and now - pinged_at > self._ping_interval:
                raise RedisTimeoutError("no reply to PING on the pub/sub connection")

    def _dispatch(self, pubsub: PubSub, message: dict[str, Any]) -> None:
        updates: list[Update] = []
        for _ in range(_MAX_BATCH):
            kind = message["type"]
            if kind == "pmessage" and message["pattern"] == self._updates_pattern:
                updates.extend(self._decode_updates(message["channel"], message["data"]))
            elif kind == "pmessage" and message["pattern"] == self._events_pattern:
                # Keep events and updates in arrival order relative to each other.
                self._deliver_updates(updates)
                updates = []
                self._deliver_events(message["channel"], message["data"])
            elif kind in ("psubscribe", "punsubscribe"):
                with self._cond:
                    if kind == "psubscribe" and message["channel"] in self._wanted:
                        self._active.add(message["channel"])
                    else:
                        self._active.discard(message["channel"])
                    self._cond.notify_all()
            next_message = pubsub.get_message(timeout=0.0)
            if next_message is None:
                break
            message = next_message
        self._deliver_updates(updates)

    def _decode_updates(self, channel: bytes, data: bytes) -> list[Update]:
        try:
            topic = channel[len(self._updates_channel) :].decode()
            return [_unpack(topic, packed) for packed in data.split(b"\n")]
        except ValueError:
            log.warning("ignoring a malformed update message on %r", channel)
            return []

    def _deliver_updates(self, updates: list[Update]) -> None:
        if not updates:
            return
        for handler in self._updates_handlers:
            try:
                handler(list(updates))
            except Exception:
                log.exception("updates handler %r failed", handler)

    def _deliver_events(self, channel: bytes, data: bytes) -> None:
        try:
            topic = channel[len(self._events_channel) :].decode()
            events = [Event(float(v), int(ts), tags) for v, ts, tags in orjson.loads(data)]
        except (ValueError, TypeError):
            log.warning("ignoring a malformed event batch on %r", channel)
            return
        for handler in self._events_handlers:
            try:
                handler(topic, list(events))
            except Exception:
                log.exception("events handler %r failed on topic %r", handler, topic)


def _without(handlers: tuple[Any, ...], handler: Any) -> tuple[Any, ...]:
    items = list(handlers)
    for i, item in enumerate(items):
        if item is handler:  # identity: the same function may be registered twice
            del items[i]
            break
    return tuple(items)
