"""One pub/sub connection per process, subscribed only to what the process needs now.

`PubSubReader` holds reference-counted subscriptions to channels and to channel prefixes
(PSUBSCRIBE `prefix*`), one reader thread (a greenlet once gevent has patched `threading`)
and one connection, whatever the number of subscribers. Redis sends a message once per
matching subscription, so a channel both subscribed and covered by a prefix (or by two
prefixes) would arrive twice: the reader delivers each publication once, through the first
confirmed prefix that covers it, else through its channel. Confirmations arrive in order on
the one connection, so that choice is exact.

On a lost connection that had a confirmed subscription the reader calls `on_reset` (what was
published meanwhile is lost to this process: Redis pub/sub is at most once); it reconnects
with jittered exponential backoff (`reconnects`) and subscribes to everything wanted again by
itself. Given a client, it reconnects through that client (one Redis; Sentinel, whose pool
asks the sentinels for the primary at each connection); given a factory, it asks the factory
for a new client at each connection, and closes each when its connection is dropped (a Redis
Cluster, where the node to listen on is chosen again each time:
`broadcast_node.BroadcastNodes`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import redis
from redis.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushsvc.broker.redis.keys import glob_escape
from pushsvc.broker.redis.reconnects import Reconnects
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
_POLL_S = 0.2  # how often the reader looks up from the socket, bounds close() latency
_MAX_BATCH = 256  # messages handed over together when they arrive in a burst

Messages = Callable[[list[tuple[bytes, bytes]]], None]
"""Called in the reader thread with (channel, data) pairs in arrival order."""

Clients = redis.Redis | Callable[[], redis.Redis]
"""The client every connection goes through, or a factory of a new client per connection."""


@runtime_checkable
class MovingClients(Protocol):
    """A factory that can tell the reader its connection's node should be left now (on a
    Redis Cluster, a node failed over: `broadcast_node.BroadcastNodes`)."""

    def __call__(self) -> redis.Redis: ...

    def on_moved(self, callback: Callable[[], None]) -> None: ...


def _pattern(prefix: bytes) -> bytes:
    return glob_escape(prefix.decode()).encode() + b"*"


def _next_message(pubsub: PubSub, timeout: float) -> dict[str, Any] | None:
    """The next complete message, or None when none has fully arrived within `timeout`.

    redis-py reads a message with the poll's timeout: one larger than a socket read that has
    arrived only in part (a 1,000-update run is ~700 KB), or a process too busy to run its
    loop in time, raises its TimeoutError. That is not a dead connection — the parser keeps
    the bytes read and the next call continues — so it must not end every stream of a busy
    web process. Dead connections are found by the PING in `_read`.
    """
    try:
        message: dict[str, Any] | None = pubsub.get_message(timeout=timeout)
    except RedisTimeoutError:
        return None
    return message


class PubSubReader:
    """Subscriptions of one process; greenlet- and thread-safe."""

    def __init__(
        self,
        clients: Clients,
        *,
        name: str,
        on_messages: Messages,
        on_reset: Callable[[], None] = lambda: None,
        subscribe_timeout: float = 5.0,
        ping_interval: float = 15.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        if isinstance(clients, redis.Redis):
            fixed = clients
            self._new_client: Callable[[], redis.Redis] = lambda: fixed
            self._client: redis.Redis | None = fixed
        else:
            self._new_client, self._client = clients, None
        self._one_client = self._client is not None
        self._name = name
        self._on_messages = on_messages
        self._on_reset = on_reset
        self._subscribe_timeout = subscribe_timeout
        self._ping_interval = ping_interval
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        # Changed under _cond only.
        self._cond = threading.Condition()
        self._channels: Counter[bytes] = Counter()  # wanted, with reference counts
        self._prefixes: Counter[bytes] = Counter()
        self._confirmed_channels: set[bytes] = set()  # on the current connection
        self._confirmed_patterns: dict[bytes, bytes] = {}  # pattern -> its prefix
        self._pubsub: PubSub | None = None
        self._reconnect: str | None = None  # why to start over (a command failed to send)
        self._reader: threading.Thread | None = None
        self._closed = False
        self._closing = threading.Event()
        if isinstance(clients, MovingClients):
            clients.on_moved(self._move)

    # -- subscriptions ---------------------------------------------------------------

    def add_channel(self, channel: bytes) -> None:
        """Receive `channel`; returns once Redis confirmed it, or raises BrokerUnavailable."""
        self._add(self._channels, channel, "subscribe", channel, self._confirmed_channels)

    def remove_channel(self, channel: bytes) -> None:
        self._remove(self._channels, channel, "unsubscribe", channel)

    def add_prefix(self, prefix: bytes) -> None:
        """Receive every channel that starts with `prefix`; like `add_channel`."""
        pattern = _pattern(prefix)
        self._add(self._prefixes, prefix, "psubscribe", pattern, self._confirmed_patterns)

    def remove_prefix(self, prefix: bytes) -> None:
        self._remove(self._prefixes, prefix, "punsubscribe", _pattern(prefix))

    def _add(
        self,
        wanted: Counter[bytes],
        key: bytes,
        command: str,
        name: bytes,
        confirmed: set[bytes] | dict[bytes, bytes],
    ) -> None:
        with self._cond:
            if self._closed:
                raise BrokerUnavailable("the broker is closed")
            wanted[key] += 1
            if wanted[key] == 1:
                self._send(command, name)
            if self._reader is None:
                self._reader = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._reader.start()
            if threading.current_thread() is self._reader:
                return  # waiting would deadlock: we are the one who reads
            if (
                self._cond.wait_for(
                    lambda: name in confirmed or self._closed, self._subscribe_timeout
                )
                and not self._closed
            ):
                return
            wanted[key] -= 1
            if wanted[key] == 0:
                del wanted[key]
                self._send("un" + command, name)
        raise BrokerUnavailable("Redis did not confirm the subscription")

    def _remove(self, wanted: Counter[bytes], key: bytes, command: str, name: bytes) -> None:
        with self._cond:
            if wanted[key] <= 0:
                return
            wanted[key] -= 1
            if wanted[key] == 0:
                del wanted[key]
                self._send(command, name)

    def _send(self, command: str, name: bytes) -> None:
        """A (un)subscribe command on the live connection, if any; a new connection
        subscribes to everything wanted anyway. Called with _cond held."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            getattr(pubsub, command)(name)
        except _UNREACHABLE:
            self._reconnect = "a subscribe command failed"

    def _move(self) -> None:
        """Leave the connection's node at the next look up from the socket (within _POLL_S),
        and connect through the factory again."""
        with self._cond:
            if self._pubsub is not None:
                self._reconnect = "its node left the cluster's topology"

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            reader = self._reader
            self._cond.notify_all()
        self._closing.set()
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=_POLL_S * 10)
        with self._cond:
            client = self._client
        if client is not None:
            client.close()

    # -- the reader --------------------------------------------------------------------

    def _run(self) -> None:
        reconnects = Reconnects(self._min_backoff, self._max_backoff)
        lost = False
        while not self._closing.is_set():
            connected = False
            try:
                self._connect()
                connected = True
                if lost:
                    log.warning("redis pub/sub reconnected")
                    lost = False
                reconnects.connected()
                self._read()
            except (RedisError, OSError) as exc:
                if not self._closing.is_set() and not lost:
                    log.warning("redis pub/sub connection lost (%s); reconnecting", exc)
                lost = True
            except Exception:
                log.exception("redis pub/sub reader failed; reconnecting")
                lost = True
            finally:
                was_listening = self._disconnect()
            # A connection on which nothing was subscribed lost no message: ending streams
            # for it would only hurt, e.g. the stream whose SUBSCRIBE found an idle connection
            # dead (Redis restarted meanwhile); that stream is confirmed on the new one.
            if connected and was_listening and not self._closing.is_set():
                self._reset()
            if self._closing.wait(reconnects.next_wait_s()):
                break

    def _reset(self) -> None:
        try:
            self._on_reset()
        except Exception:
            log.exception("pub/sub reset handler failed")

    def _connect(self) -> None:
        client = self._new_client()
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        with self._cond:
            self._client = client
            self._pubsub = pubsub
            self._reconnect = None
            if self._channels:
                pubsub.subscribe(*sorted(self._channels))
            if self._prefixes:
                pubsub.psubscribe(*sorted(_pattern(p) for p in self._prefixes))

    def _disconnect(self) -> bool:
        """Drop the connection; whether Redis had confirmed any subscription on it."""
        with self._cond:
            pubsub, self._pubsub = self._pubsub, None
            # A factory's client served this connection only: the next one may be elsewhere.
            client = None if self._one_client else self._client
            if client is not None:
                self._client = None
            was_listening = bool(self._confirmed_channels or self._confirmed_patterns)
            self._confirmed_channels.clear()
            self._confirmed_patterns.clear()
            self._cond.notify_all()
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                pubsub.close()
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                client.close()
        return was_listening

    def _read(self) -> None:
        """Read until closing; raise on any sign of a dead connection."""
        last_heard = time.monotonic()
        pinged_at: float | None = None
        while not self._closing.is_set():
            with self._cond:
                if self._reconnect is not None:
                    raise RedisConnectionError(self._reconnect)
                pubsub = self._pubsub
            assert pubsub is not None
            message = _next_message(pubsub, _POLL_S)
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
        """`message` and whatever else has already arrived, up to _MAX_BATCH of them, handed
        over together. Every message read is handled, the one read past a full batch too
        (dropping it loses one update of every `_MAX_BATCH` + 1 of a burst)."""
        batch: list[tuple[bytes, bytes]] = []
        channels, patterns = self._wanted()
        while True:
            kind = message["type"]
            # Only what is still wanted: an unsubscribe is sent, not awaited, so Redis may
            # deliver a little more after it; each message once, by its lowest pattern.
            if kind == "message":
                channel = message["channel"]
                if channel in channels and not any(
                    channel.startswith(p) for p in patterns.values()
                ):
                    batch.append((channel, message["data"]))
            elif kind == "pmessage":
                channel = message["channel"]
                covering = [
                    pattern for pattern, prefix in patterns.items() if channel.startswith(prefix)
                ]
                if covering and min(covering) == message["pattern"]:
                    batch.append((channel, message["data"]))
            else:
                self._confirm(kind, message["channel"])
                channels, patterns = self._wanted()
            if len(batch) >= _MAX_BATCH:
                break
            following = _next_message(pubsub, 0.0)
            if following is None:
                break
            message = following
        if batch:
            try:
                self._on_messages(batch)
            except Exception:
                log.exception("pub/sub message handler failed")

    def _wanted(self) -> tuple[set[bytes], dict[bytes, bytes]]:
        """The channels still wanted, and the confirmed patterns still wanted (-> prefix)."""
        with self._cond:
            channels = set(self._channels)
            patterns = {
                pattern: prefix
                for pattern, prefix in self._confirmed_patterns.items()
                if prefix in self._prefixes
            }
        return channels, patterns

    def _confirm(self, kind: str, name: bytes) -> None:
        with self._cond:
            if kind == "subscribe" and name in self._channels:
                self._confirmed_channels.add(name)
            elif kind == "unsubscribe":
                self._confirmed_channels.discard(name)
            elif kind == "psubscribe":
                prefix = next((p for p in self._prefixes if _pattern(p) == name), None)
                if prefix is not None:
                    self._confirmed_patterns[name] = prefix
            elif kind == "punsubscribe":
                self._confirmed_patterns.pop(name, None)
            self._cond.notify_all()
