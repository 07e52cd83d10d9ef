"""One view of a Redis Cluster's slot owners per process, which every consumer asks and every
consumer refreshes: the command clients (redis-py's slot map, `shared_slot_map.py`), the
sharded pub/sub readers (the updates feed, the log waiter's wakes) and the bridge's node.

Consumers that each read the topology on their own, when each had its own reason to, disagree
during a failover: the commands already on the promoted replica while the wake waiter still
listens on the dead primary until its next backoff (a safety read hides it). So whoever
first notices a change (a `MOVED`, a lost connection, a `sunsubscribe` pushed by a
failover, a failed idle probe) refreshes the one view, and every consumer is told at once.

A burst of such signals costs one read: callers that ask while a read is under way share the
next one (started after they asked, so it sees what they saw), not one each.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pushsvc.broker.redis.cluster_topology import Address, Connect, SlotOwners, TopologyReader
from pushsvc.broker.redis.url import cluster_credentials, parse_cluster_url

PROBE_TIMEOUT_S = 2.0
"""How long a node may take to accept a connection and answer `CLUSTER SLOTS` before the next
is asked: a dead host (not a refused port) would otherwise hold a refresh up for minutes."""


@dataclass(frozen=True)
class Topology:
    """The slot owners as one read found them; `generation` counts the reads of the view, so a
    consumer told of two in either order keeps the later."""

    owners: SlotOwners
    generation: int


Listener = Callable[[Topology], None]


class ClusterView:
    """The slot owners of one cluster, as last read; greenlet- and thread-safe.

    `listen(listener)` calls `listener(topology)` after every read, in the greenlet that read,
    outside every lock of the view. The view holds listeners weakly (a bound method's object
    may go away without unsubscribing): `listen` returns the callable to keep."""

    def __init__(self, reader: TopologyReader) -> None:
        self._reader = reader
        self._lock = threading.Lock()  # the fields below
        self._reading = threading.Lock()  # one read at a time
        self._current: Topology | None = None
        self._started = 0  # reads begun
        self._done = 0  # the number of the last read that succeeded
        self._listeners: weakref.WeakSet[_Listening] = weakref.WeakSet()

    @classmethod
    def of_seeds(cls, seeds: tuple[Address, ...], connect: Connect) -> ClusterView:
        return cls(TopologyReader(seeds, connect))

    def current(self) -> Topology:
        """The last read, or a first read; RedisError (or OSError) when no node answers."""
        with self._lock:
            current = self._current
        return current if current is not None else self.refresh()

    def peek(self) -> Topology | None:
        """The last read, if any, without reading."""
        with self._lock:
            return self._current

    def refresh(self, *, first: Address | None = None) -> Topology:
        """Read the topology again, unless a read begun after this call has finished meanwhile
        (then its answer). `first`: a node to ask before the others, e.g. the one a `MOVED`
        named (it knows it owns the slot; another node may not have heard yet). RedisError (or
        OSError) when no node answers."""
        with self._lock:
            asked_after = self._started
        with self._reading:
            with self._lock:
                if self._done > asked_after and self._current is not None:
                    return self._current
                self._started += 1
                number = self._started
            owners = self._reader.read(first=first)
            with self._lock:
                self._done = number
                self._current = topology = Topology(owners, number)
                listeners = list(self._listeners)
        for listening in listeners:
            listening.call(topology)
        return topology

    def listen(self, listener: Listener) -> object:
        """Call `listener` after every read from now on, for as long as the returned handle
        is kept (or until `unlisten`)."""
        listening = _Listening(listener)
        with self._lock:
            self._listeners.add(listening)
        return listening

    def unlisten(self, handle: object) -> None:
        with self._lock:
            if isinstance(handle, _Listening):
                self._listeners.discard(handle)


class _Listening:
    """A listener, held weakly through its object when it is a bound method: a RedisCluster
    or a reader nobody holds any more must not be kept alive by the view."""

    def __init__(self, listener: Listener) -> None:
        self._method: weakref.WeakMethod[Listener] | None = None
        self._function: Listener | None = None
        if hasattr(listener, "__self__"):
            self._method = weakref.WeakMethod(listener)
        else:
            self._function = listener

    def call(self, topology: Topology) -> None:
        listener = self._method() if self._method is not None else self._function
        if listener is not None:
            listener(topology)


_views: dict[tuple[int, str], ClusterView] = {}
_views_lock = threading.Lock()


def shared_view(url: str) -> ClusterView:
    """The one view of the cluster of `url` in this process (a forked child gets its own)."""
    key = (os.getpid(), url)
    with _views_lock:
        view = _views.get(key)
        if view is None:
            seeds = parse_cluster_url(url).seeds
            view = _views[key] = ClusterView(TopologyReader(seeds, node_connector(url)))
        return view


def node_connector(url: str) -> Connect:
    """New connections to the nodes of the cluster of `url` (its credentials and TLS), for
    topology reads."""
    parsed = parse_cluster_url(url)
    connection_class: type[redis.Connection] = (
        redis.SSLConnection if parsed.tls else redis.Connection
    )
    credentials = cluster_credentials(url)

    def connect(address: Address) -> redis.Connection:
        host, port = address
        return connection_class(
            host=host,
            port=port,
            socket_timeout=PROBE_TIMEOUT_S,
            socket_connect_timeout=PROBE_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            client_name="pushsvc-topology",
            **credentials,
        )

    return connect
