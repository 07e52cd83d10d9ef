"""Sharded pub/sub (`SSUBSCRIBE`) of one process on a Redis Cluster: at most one connection per
primary, subscribed only to what the process needs now.

`ShardedPubSubReader` holds reference-counted subscriptions to channels. Each channel carries a
`{tag}`, so it lives in one slot and is served by that slot's primary; the reader places every
wanted channel on its primary's connection (one `SSUBSCRIBE` per channel: Redis refuses
channels of two slots in one command) and reads each connection in a thread of its own (a
greenlet once gevent has patched `threading`). A connection that no longer carries a channel is
closed, so the reader holds at most one per primary that serves a wanted channel.

Delivery is at most once, in publication order per channel. Messages published while a
subscription was not in place are lost to this process, and the reader says so: whenever a
confirmed subscription may have missed messages — a `sunsubscribe` pushed by a slot move or a
failover, a lost connection, a failed idle probe — it re-reads the topology (`CLUSTER SLOTS`:
a refresh of the process's one `ClusterView`, whose every refresh, by whichever consumer,
moves the reader's channels too), subscribes on the slot's current primary, and once every
such channel is confirmed again (or `subscribe_timeout` has passed) calls `on_reset`, after
which its caller fills the gap from the history. `MOVED`, `ASK`, `TRYAGAIN` and `CLUSTERDOWN`
answers to an `SSUBSCRIBE` re-read the topology too (no message was missed: the channel had
not been confirmed there).

**Nothing past a gap before its reset.** From the moment a channel may have missed messages
until `on_reset` has been called, the reader drops that channel's messages: the first ones
from its new primary arrive with (or right after) the confirmation, and one handed over
before the reset would carry a stream past the gap, which its client would then resume from
(its `Last-Event-ID`) with the gap never filled. Dropping them loses nothing: the reset ends
every stream that could have missed something, and each resumes from the history. A stream
primed after the reset primes on a confirmed subscription, so the reader hands it everything.

**Idle probe.** A connection can stay open and silent: a primary that was replaced while it hung
(seen in Centrifugo: its subscribers got nothing, forever), a half-open TCP connection. A PING
would not tell: a demoted primary still answers. So after `probe_interval` seconds with nothing
received on a connection, its reader re-reads the topology (which moves channels whose slot has
another primary now), then subscribes to a probe channel in the slot of one of its channels and
`SPUBLISH`es a random token there through a connection of its own to the slot's primary. Unless
the token comes back within `probe_timeout`, the connection counts as lost. The probe channel is
subscribed only during a probe.

`on_messages` and `on_reset` are called in a node's reader thread, one call at a time across
all nodes. Every other method is greenlet- and thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from pushsvc.broker.redis.cluster_topology import (
    Address,
    SlotOwners,
    TopologyReader,
    channel_slot,
    probe_channel,
)
from pushsvc.broker.redis.cluster_view import ClusterView, Topology
from pushsvc.broker.redis.reconnects import Reconnects
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how often a node's reader looks up from its socket, bounds close() latency
_MAX_BATCH = 256  # messages handed over together when they arrive in a burst
# The answers to an SSUBSCRIBE sent to a node that does not serve the slot (now).
_REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)

Messages = Callable[[list[tuple[bytes, bytes]]], None]
"""Called with (channel, data) pairs in arrival order (per node)."""


class ProbeFailed(RedisTimeoutError):
    """An idle connection did not pass its probe: it counts as lost."""


class _Reconnected(RedisConnectionError):
    """redis-py opened a new connection behind the reader's back (after a failed send): it
    would carry none of the subscriptions."""


@dataclass
class _Probe:
    channel: bytes
    token: bytes
    started: float
    published: bool = False


class ShardedPubSubReader:
    """Sharded subscriptions of one process on a Redis Cluster; greenlet- and thread-safe.

    `seeds`: the process's `ClusterView` to share (every refresh of it, whoever asked, moves
    this reader's channels at once), or (host, port) of some cluster nodes (any role) to read
    a view of the reader's own from at first; every node they name is asked later too.
    `connection_options`: more `redis.Connection`
    arguments for every node (username, password, socket options); `connection_class`:
    `redis.SSLConnection` for TLS. `covered_by(channel)`: the wider channel (in the same slot)
    that also carries every message of `channel`, if any: while the wider one is confirmed,
    `channel`'s own copies are dropped, so each message is delivered once.
    """

    def __init__(
        self,
        seeds: ClusterView | Iterable[Address],
        *,
        name: str,
        on_messages: Messages,
        on_reset: Callable[[], None] = lambda: None,
        subscribe_timeout: float = 5.0,
        probe_interval: float = 15.0,
        probe_timeout: float = 1.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        connection_class: type[redis.Connection] = redis.Connection,
        connection_options: Mapping[str, Any] | None = None,
        covered_by: Callable[[bytes], bytes | None] = lambda channel: None,
    ) -> None:
        self._name = name
        self._covered_by = covered_by
        self._on_messages = on_messages
        self._on_reset = on_reset
        self._subscribe_timeout = subscribe_timeout
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._connection_class = connection_class
        self._connection_options = {
            "socket_connect_timeout": 5.0,
            # Bounds the handshake (CLIENT SETNAME) with a node that takes connections but
            # never answers (a hung process); a message, once it starts to arrive, has
            # subscribe_timeout to arrive in full.
            "socket_timeout": probe_timeout,
            "socket_keepalive": True,
            **(connection_options or {}),
            # No retries and no health checks of redis-py's own: the reader starts over by
            # itself, and only the thread that reads a connection may read from it.
            "retry": Retry(NoBackoff(), 0, supported_errors=()),
            "health_check_interval": 0,
            # RESP2: pub/sub messages arrive as plain replies, which read_response returns
            # (redis-py hands RESP3 pushes to a push handler instead).
            "protocol": 2,
        }
        self._view = (
            seeds
            if isinstance(seeds, ClusterView)
            else ClusterView(
                TopologyReader(
                    seeds,
                    lambda a: self._connection(a, f"{name}:topology", socket_timeout=probe_timeout),
                )
            )
        )
        # Changed under _cond only.
        self._cond = threading.Condition()
        self._owners: SlotOwners | None = None
        self._generation = 0  # of the view's read that _owners comes from
        self._wanted: Counter[bytes] = Counter()  # channels, with reference counts
        self._placed: dict[bytes, Address] = {}  # wanted channel -> the node it is sent to
        self._confirmed: dict[bytes, Address] = {}  # -> the node that confirmed it
        self._links: dict[Address, _NodeLink] = {}
        self._unrecovered: set[bytes] = set()  # confirmed once, lost since, not confirmed again
        self._unreset: set[bytes] = set()  # lost since on_reset was last called: held back
        self._reset_due: float | None = None  # when on_reset is due at the latest
        self._closed = False
        self._closing = threading.Event()
        self._callbacks = threading.Lock()  # one on_messages/on_reset call at a time
        self._listening = self._view.listen(self._apply)

    # -- subscriptions ---------------------------------------------------------------

    def add_channel(self, channel: bytes) -> None:
        """Receive `channel`; returns once its primary confirmed it, or raises
        BrokerUnavailable. ValueError for a channel no probe channel can share a slot with."""
        probe_channel(channel)  # checks the name
        if self._owners is None:
            try:
                self._apply(self._view.current())
            except (RedisError, OSError) as exc:
                raise BrokerUnavailable(f"no Redis Cluster node answered ({exc})") from None
        with self._cond:
            if self._closed:
                raise BrokerUnavailable("the broker is closed")
            self._wanted[channel] += 1
            if self._wanted[channel] == 1:
                self._place(channel)
            if self._in_a_reader():
                return  # waiting would deadlock: we may be the one who reads
            if (
                self._cond.wait_for(
                    lambda: channel in self._confirmed or self._closed, self._subscribe_timeout
                )
                and not self._closed
            ):
                return
            self._release(channel)
        raise BrokerUnavailable("Redis did not confirm the sharded subscription")

    def remove_channel(self, channel: bytes) -> None:
        with self._cond:
            if self._wanted[channel] > 0:
                self._release(channel)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            links = list(self._links.values())
            self._cond.notify_all()
        self._view.unlisten(self._listening)
        self._closing.set()
        for link in links:
            link.join(_POLL_S * 10)

    def connected_nodes(self) -> list[Address]:
        """The nodes the reader holds a pub/sub connection to now."""
        with self._cond:
            return sorted(a for a, link in self._links.items() if link.connection is not None)

    def _release(self, channel: bytes) -> None:
        """One reference less; the last one unsubscribes. Called with _cond held."""
        self._wanted[channel] -= 1
        if self._wanted[channel] > 0:
            return
        del self._wanted[channel]
        self._confirmed.pop(channel, None)
        self._unrecovered.discard(channel)
        self._unreset.discard(channel)  # a new subscription to it waits for its confirmation
        address = self._placed.pop(channel, None)
        link = self._links.get(address) if address is not None else None
        if link is not None:
            link.unsubscribe(channel)

    def _in_a_reader(self) -> bool:
        current = threading.current_thread()
        return any(link.thread is current for link in self._links.values())

    # -- placement ---------------------------------------------------------------------

    def _refresh(self) -> None:
        """Refresh the view, which moves every channel whose slot has another primary now
        (`_apply`, called by the view); BrokerUnavailable when no node answers."""
        try:
            topology = self._view.refresh()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"no Redis Cluster node answered ({exc})") from None
        self._apply(topology)  # a no-op when the view's call came first

    def _apply(self, topology: Topology) -> None:
        """Move every channel whose slot has another primary in `topology`, unless a later
        read was applied already (the view calls each listener in the greenlet that read)."""
        with self._cond:
            if self._closed or topology.generation <= self._generation:
                return
            self._generation = topology.generation
            self._owners = topology.owners
            for channel in sorted(self._wanted):
                self._place(channel)

    def _refresh_quietly(self) -> None:
        try:
            self._refresh()
        except BrokerUnavailable as exc:
            log.warning("%s: %s", self._name, exc)

    def _place(self, channel: bytes) -> None:
        """Send `channel` to its primary by the last topology read, from wherever it was.
        Called with _cond held."""
        if self._closed or self._owners is None:
            return
        owner = self._owners.owner(channel_slot(channel))
        if owner is None:
            return  # no primary covers the slot now: stay put; a later read will move it
        before = self._placed.get(channel)
        if before == owner:
            return
        self._placed[channel] = owner
        if self._confirmed.pop(channel, None) is not None:
            self._lost(channel)
        old = self._links.get(before) if before is not None else None
        if old is not None:
            old.unsubscribe(channel)
        link = self._links.get(owner)
        if link is None:
            link = self._links[owner] = _NodeLink(self, owner)
            link.start()
        else:
            link.subscribe(channel)

    def _lost(self, channel: bytes) -> None:
        """`channel` was confirmed and may have missed messages since: its messages are held
        back until the next on_reset. Called with _cond held."""
        self._unrecovered.add(channel)
        self._unreset.add(channel)
        if self._reset_due is None:
            self._reset_due = time.monotonic() + self._subscribe_timeout

    def _confirm(self, address: Address, channel: bytes) -> None:
        """Called with _cond held."""
        if self._placed.get(channel) != address:
            return
        self._confirmed[channel] = address
        if channel in self._unrecovered:
            self._unrecovered.discard(channel)
            if self._reset_due is None:  # a reset went out already, without this one
                self._reset_due = time.monotonic()
        self._cond.notify_all()

    def _reset_if_due(self) -> None:
        """on_reset once every lost channel is back, or once waiting for that took too long."""
        with self._cond:
            due = self._reset_due
            if due is None or (self._unrecovered and time.monotonic() < due):
                return
            self._reset_due = None
        with self._callbacks:
            if self._closing.is_set():
                return
            # From here on its messages may be handed over: a batch that kept one waits for
            # this lock, so it reaches the caller after on_reset (every channel lost by now
            # is answered too: its streams end, and those primed later wait for it confirmed).
            with self._cond:
                self._unreset.clear()
            try:
                self._on_reset()
            except Exception:
                log.exception("sharded pub/sub reset handler failed")

    def _deliver(self, batch: list[tuple[bytes, bytes]]) -> None:
        with self._callbacks:
            try:
                self._on_messages(batch)
            except Exception:
                log.exception("sharded pub/sub message handler failed")

    def _connection(self, address: Address, client_name: str, **more: Any) -> redis.Connection:
        host, port = address
        options = {**self._connection_options, "client_name": client_name, **more}
        return self._connection_class(host=host, port=port, **options)


class _NodeLink:
    """The pub/sub connection to one primary and the thread that reads it. Its fields change
    under the reader's _cond."""

    def __init__(self, reader: ShardedPubSubReader, address: Address) -> None:
        self.reader = reader
        self.address = address
        self.connection: redis.Connection | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"{reader._name}:{address[0]}:{address[1]}", daemon=True
        )
        self._broken = False  # a command failed to send: start over
        self._unsubscribing: Counter[bytes] = Counter()  # SUNSUBSCRIBEs sent, not answered
        self._probe: _Probe | None = None

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _channels(self) -> list[bytes]:
        return sorted(c for c, a in self.reader._placed.items() if a == self.address)

    # Called with the reader's _cond held.

    def subscribe(self, channel: bytes) -> None:
        self._send("SSUBSCRIBE", channel)

    def unsubscribe(self, channel: bytes) -> None:
        if self._send("SUNSUBSCRIBE", channel):
            self._unsubscribing[channel] += 1

    def _send(self, command: str, channel: bytes) -> bool:
        """On the live connection, if any: a new one subscribes to all its channels anyway."""
        connection = self.connection
        if connection is None or self._broken:
            return False
        try:
            connection.send_command(command, channel)  # type: ignore[no-untyped-call]
        except (RedisError, OSError):
            self._broken = True
            return False
        return True

    # The thread.

    def _run(self) -> None:
        reader = self.reader
        reconnects = Reconnects(reader._min_backoff, reader._max_backoff)
        lost = False
        while not reader._closing.is_set():
            try:
                connection = self._connect()
                if connection is None:
                    return  # nothing left to subscribe to here
                if lost:
                    log.warning(
                        "%s: sharded pub/sub on %s:%s reconnected", reader._name, *self.address
                    )
                    lost = False
                self._read(connection)
                reconnects.connected()
                continue  # nothing left to read here: _connect decides
            except (RedisError, OSError) as exc:
                if not reader._closing.is_set() and not lost:
                    log.warning(
                        "%s: sharded pub/sub on %s:%s lost (%s); re-reading the topology",
                        reader._name,
                        *self.address,
                        exc,
                    )
                lost = True
            except Exception:
                log.exception("%s: sharded pub/sub reader failed; reconnecting", reader._name)
                lost = True
            finally:
                self._drop()
            if reader._closing.is_set():
                break
            reader._refresh_quietly()
            reader._reset_if_due()
            with reader._cond:
                if not self._channels():
                    continue  # moved elsewhere: _connect ends the thread, under the lock
            if reader._closing.wait(reconnects.next_wait_s()):
                break
        self._drop()

    def _connect(self) -> redis.Connection | None:
        """A connection subscribing to every channel placed here, or None (and the thread
        leaves the reader) when there is none."""
        reader = self.reader
        with reader._cond:
            if not self._channels():
                if reader._links.get(self.address) is self:
                    del reader._links[self.address]
                return None
        connection = reader._connection(self.address, reader._name)
        connection.connect()  # type: ignore[no-untyped-call]

        connection.register_connect_callback(self._refuse_reconnect)  # type: ignore[no-untyped-call]
        with reader._cond:
            self.connection = connection
            self._broken = False
            for channel in self._channels():
                self._send("SSUBSCRIBE", channel)
        return connection

    def _refuse_reconnect(self, _: redis.Connection) -> None:
        raise _Reconnected("the pub/sub connection was reopened behind the reader's back")

    def _drop(self) -> None:
        """Forget the connection: what it had confirmed may miss messages from now on."""
        reader = self.reader
        with reader._cond:
            connection, self.connection = self.connection, None
            self._unsubscribing.clear()
            self._probe = None
            for channel, address in list(reader._confirmed.items()):
                if address == self.address:
                    del reader._confirmed[channel]
                    reader._lost(channel)
            reader._cond.notify_all()
        if connection is not None:
            with contextlib.suppress(RedisError, OSError):
                connection.disconnect()  # type: ignore[no-untyped-call]

    def _read(self, connection: redis.Connection) -> None:
        """Read until closing or until no channel is left here (closing the connection ends
        whatever unsubscriptions are under way); raise on any sign of a dead connection."""
        reader = self.reader
        last_heard = time.monotonic()
        unconfirmed_since: float | None = None
        while not reader._closing.is_set():
            with reader._cond:
                if self._broken:
                    raise RedisConnectionError("a sharded (un)subscribe command failed to send")
                channels = self._channels()
                if not channels:
                    return
                listening = any(a == self.address for a in reader._confirmed.values())
                unconfirmed = any(c not in reader._confirmed for c in channels)
            if not unconfirmed:
                unconfirmed_since = None
            elif unconfirmed_since is None:
                unconfirmed_since = time.monotonic()
            elif time.monotonic() - unconfirmed_since > reader._subscribe_timeout:
                # A node that takes connections and commands but never answers (a frozen
                # process): no probe starts before a first confirmation, so this is the check.
                raise RedisTimeoutError("the node did not confirm a sharded subscription")
            try:
                heard = self._dispatch(connection)
            except _REDIRECTS as exc:
                # An SSUBSCRIBE reached a node that does not serve the slot (now); wait a
                # little, for gossip to reach the node the topology is read from.
                log.info(
                    "%s: %s from %s:%s; re-reading the topology", reader._name, exc, *self.address
                )
                reader._closing.wait(reader._min_backoff)
                reader._refresh_quietly()
                self._resubscribe_unconfirmed()
                heard = True
            reader._reset_if_due()
            now = time.monotonic()
            if heard or not listening:
                last_heard = now
            probe = self._probe
            if probe is None and now - last_heard > reader._probe_interval:
                self._start_probe(now)
                last_heard = now
            elif probe is not None and now - probe.started > reader._probe_timeout:
                raise ProbeFailed(f"the idle probe on {probe.channel!r} did not come back")

    def _resubscribe_unconfirmed(self) -> None:
        reader = self.reader
        with reader._cond:
            for channel in self._channels():
                if channel not in reader._confirmed:
                    self._send("SSUBSCRIBE", channel)

    def _dispatch(self, connection: redis.Connection) -> bool:
        """Whatever has arrived within _POLL_S, up to _MAX_BATCH messages handed over together;
        whether anything arrived."""
        if not connection.can_read(timeout=_POLL_S):
            return False
        batch: list[tuple[bytes, bytes]] = []
        try:
            while True:
                reply = connection.read_response(timeout=self.reader._subscribe_timeout)
                self._handle(reply, batch)
                if len(batch) >= _MAX_BATCH or not connection.can_read(timeout=0):
                    break
        finally:
            # Every message read is handed over, even when a later read fails.
            if batch:
                self.reader._deliver(batch)
        return True

    def _handle(self, reply: Any, batch: list[tuple[bytes, bytes]]) -> None:
        reader = self.reader
        if not isinstance(reply, list) or len(reply) != 3:
            raise ResponseError(f"unexpected reply on a sharded pub/sub connection: {reply!r}")
        kind, channel, data = reply
        probe = self._probe
        if kind == b"smessage":
            if probe is not None and channel == probe.channel:
                if data == probe.token:
                    self._end_probe(probe)
                return
            with reader._cond:
                # Not a message past a gap before the reset (see the module docstring).
                wanted = (
                    reader._placed.get(channel) == self.address and channel not in reader._unreset
                )
                # A channel whose every message also arrives on a wider one (a topic's, on
                # its partition's) is delivered through the wider one while that is confirmed
                # here: one slot, one connection, so confirmations and messages are in order.
                cover = reader._covered_by(channel) if wanted else None
                if cover is not None and reader._confirmed.get(cover) == self.address:
                    wanted = False
            if wanted:
                batch.append((channel, data))
        elif kind == b"ssubscribe":
            if probe is not None and channel == probe.channel:
                self._publish_probe(probe)
                return
            with reader._cond:
                reader._confirm(self.address, channel)
        elif kind == b"sunsubscribe":
            with reader._cond:
                if self._unsubscribing[channel] > 0:
                    self._unsubscribing[channel] -= 1  # the answer to our own SUNSUBSCRIBE
                    if self._unsubscribing[channel] == 0:
                        del self._unsubscribing[channel]
                    return
                if probe is not None and channel == probe.channel:
                    self._probe = None  # the slot moved mid-probe
                    return
                if reader._confirmed.get(channel) == self.address:
                    del reader._confirmed[channel]
                    reader._lost(channel)
                pushed = channel in reader._placed
            if pushed:
                # The slot moved (a migration, a failover): Redis ended the subscription.
                log.info(
                    "%s: %s:%s ended the subscription to %r; re-reading the topology",
                    reader._name,
                    *self.address,
                    channel,
                )
                reader._refresh_quietly()
                self._resubscribe_unconfirmed()
        else:
            raise ResponseError(f"unexpected {kind!r} on a sharded pub/sub connection")

    # The idle probe.

    def _start_probe(self, now: float) -> None:
        """Check ownership first (which may move every channel away), then send a token
        around through the slot of one of the channels still confirmed here."""
        reader = self.reader
        reader._refresh_quietly()
        with reader._cond:
            mine = sorted(c for c, a in reader._confirmed.items() if a == self.address)
            if not mine or self.connection is None:
                return
            channel = probe_channel(mine[0])
            self._probe = _Probe(channel, os.urandom(8).hex().encode(), now)
            self._send("SSUBSCRIBE", channel)

    def _publish_probe(self, probe: _Probe) -> None:
        """SPUBLISH the token to the slot's primary; ProbeFailed when it cannot be, or when
        no subscriber there could be ours."""
        if probe.published:
            return
        probe.published = True
        reader = self.reader
        with reader._cond:
            owners = reader._owners
        owner = owners.owner(channel_slot(probe.channel)) if owners is not None else None
        if owner is None:
            raise ProbeFailed("no primary serves the probe channel's slot")
        connection = reader._connection(
            owner, f"{reader._name}:probe", socket_timeout=reader._probe_timeout
        )
        try:
            connection.send_command("SPUBLISH", probe.channel, probe.token)  # type: ignore[no-untyped-call]
            receivers = connection.read_response()
        except _REDIRECTS:
            # The slot has moved since the topology was read: the next read moves channels.
            self._probe = None
            return
        except (RedisError, OSError) as exc:
            raise ProbeFailed(f"the probe could not be published ({exc})") from None
        finally:
            with contextlib.suppress(RedisError, OSError):
                connection.disconnect()  # type: ignore[no-untyped-call]
        if receivers == 0:
            raise ProbeFailed(f"{owner[0]}:{owner[1]} has no subscriber to the probe channel")

    def _end_probe(self, probe: _Probe) -> None:
        with self.reader._cond:
            self._probe = None
            self.unsubscribe(probe.channel)
