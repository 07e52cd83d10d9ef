"""Which node of a Redis Cluster plain (not sharded) pub/sub goes to: the producers' ingest
channels, which keep `PUBLISH` on a cluster.

A cluster broadcasts every `PUBLISH` to all its nodes, primaries and replicas alike, so one
live node is enough to hear every producer. Which one is chosen again for every connection,
from the topology as the cluster sees it now (`CLUSTER SLOTS`, asked of the URL's seeds and of
every node seen since), never once for good: a node killed would otherwise be dialled for ever
while its replica, promoted, serves its slots, and the bridge would hear nothing any more.

`BroadcastNodes` is the factory a `PubSubReader` asks for a client at each (re)connection. It
takes the nodes from the process's one view of the cluster (`cluster_view.py`), refreshed at
each reconnection (a lost connection may be a failover), and follows that view: when a refresh,
whoever asked for it, no longer names the node it listens on (a node failed over is left out
of `CLUSTER SLOTS`), it tells the reader to reconnect (`pubsub.MovingClients`), so that the
reader moves at once rather than after the PINGs that find a hung node dead.
`node_client` and `cluster_nodes` are what `pushsvc publish --redis-url` uses to find the node
the bridge listens on (`publisher.py`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from pushsvc.broker.redis.cluster_topology import Address, TopologyReader
from pushsvc.broker.redis.cluster_view import PROBE_TIMEOUT_S, ClusterView, Topology
from pushsvc.broker.redis.cluster_view import node_connector as _node_connector
from pushsvc.broker.redis.url import cluster_credentials, parse_cluster_url, redact_url

log = logging.getLogger(__name__)

__all__ = ["PROBE_TIMEOUT_S", "BroadcastNodes", "cluster_nodes", "node_client", "ordered_nodes"]


def _options(url: str) -> dict[str, Any]:
    return {
        **cluster_credentials(url),
        "ssl": parse_cluster_url(url).tls,
        # No retries of redis-py's own: a pub/sub reader starts over by itself, elsewhere.
        "retry": Retry(NoBackoff(), 0, supported_errors=()),
    }


def node_client(
    url: str,
    address: Address,
    *,
    socket_timeout: float | None,
    client_name: str | None = None,
) -> redis.Redis:
    """A plain client of one node of the cluster of `url` (its credentials and TLS)."""
    host, port = address
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=socket_timeout,
        socket_connect_timeout=PROBE_TIMEOUT_S if socket_timeout is None else socket_timeout,
        socket_keepalive=True,  # notices a peer that vanished while the connection is quiet
        client_name=client_name,
        **_options(url),
    )


def _view(url: str) -> ClusterView:
    return ClusterView(TopologyReader(parse_cluster_url(url).seeds, _node_connector(url)))


def ordered_nodes(seeds: tuple[Address, ...], known: tuple[Address, ...]) -> list[Address]:
    """The seeds the topology names, in the URL's order (a healthy cluster's first seed is
    chosen), then the other nodes it names, then the seeds it does not name: the
    topology may be unreadable, or name the nodes by other addresses than the URL does."""
    named = set(known)
    return [
        *(s for s in seeds if s in named),
        *(n for n in known if n not in seeds),
        *(s for s in seeds if s not in named),
    ]


def cluster_nodes(url: str, view: ClusterView | None = None) -> list[Address]:
    """Every node worth trying now (`view` refreshed), best first (see `ordered_nodes`); the
    seeds alone when no node answers `CLUSTER SLOTS`."""
    try:
        known = (view or _view(url)).refresh().owners.nodes
    except (RedisError, OSError):
        known = ()
    return ordered_nodes(parse_cluster_url(url).seeds, known)


class BroadcastNodes:
    """Called at each (re)connection of a pub/sub reader: a new client (named `client_name`,
    no socket timeout: the reader polls with its own) of a node that answers now.

    A node that reports `cluster_state:ok` is preferred: one cut off from the majority does
    not receive the others' broadcasts. The node of the previous connection is tried last, as
    it just failed. Raises RedisError when no node answers (the reader backs off and asks
    again)."""

    def __init__(self, url: str, *, client_name: str, view: ClusterView | None = None) -> None:
        self._url = url
        self._client_name = client_name
        self._view = view or _view(url)
        self._lock = threading.Lock()  # _current
        self._current: Address | None = None
        self._moved: Callable[[], None] = lambda: None
        self._listening = self._view.listen(self._follow)

    def on_moved(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the node of the last client handed out leaves the topology."""
        self._moved = callback

    def __call__(self) -> redis.Redis:
        candidates = cluster_nodes(self._url, self._view)
        with self._lock:
            current = self._current
        if current in candidates:
            candidates.remove(current)
            candidates.append(current)
        chosen = self._choose(candidates)
        if current is not None and chosen != current:
            log.warning(
                "redis pub/sub: moving to cluster node %s:%d (%s:%d failed)", *chosen, *current
            )
        with self._lock:
            self._current = chosen
        return node_client(self._url, chosen, socket_timeout=None, client_name=self._client_name)

    def _follow(self, topology: Topology) -> None:
        """Have the reader leave a node the cluster no longer names (a topology read without
        any node says nothing); it reconnects through `__call__`."""
        with self._lock:
            current = self._current
        if current is not None and topology.owners.nodes and current not in topology.owners.nodes:
            self._moved()

    def _choose(self, candidates: list[Address]) -> Address:
        fallback: Address | None = None
        error: Exception = redis.ConnectionError(f"{redact_url(self._url)}: no node to ask")
        for address in candidates:
            probe = node_client(self._url, address, socket_timeout=PROBE_TIMEOUT_S)
            try:
                state = probe.cluster("INFO").get("cluster_state")
            except ResponseError:
                state = None  # it answers, but may not say (an ACL without CLUSTER INFO)
            except (RedisError, OSError) as failed:
                error = failed
                continue
            finally:
                probe.close()
            if state == "ok":
                return address
            fallback = fallback or address
        if fallback is not None:
            return fallback  # some broadcasts reach it; the next lost connection moves it
        if isinstance(error, RedisError):
            raise error
        raise redis.ConnectionError(str(error))
