"""Which node of a Redis Cluster plain (not sharded) pub/sub goes to: the producers' ingest
channels, which keep `PUBLISH` on a cluster.

A cluster broadcasts every `PUBLISH` to all its nodes, primaries and replicas alike, so one
live node is enough to hear every producer. Which one is chosen again for every connection,
from the topology as the cluster sees it now (`CLUSTER SLOTS`, asked of the URL's seeds and of
every node seen since), never once for good: a node killed would otherwise be dialled for ever
while its replica, promoted, serves its slots, and the bridge would hear nothing any more.

`BroadcastNodes` is the factory a `PubSubReader` asks for a client at each (re)connection.
`node_client` and `cluster_nodes` are what `pushsvc publish --redis-url` uses to find the node
the bridge listens on (`publisher.py`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from pushsvc.broker.redis.cluster_topology import Address, TopologyReader
from pushsvc.broker.redis.url import cluster_credentials, parse_cluster_url, redact_url

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
"""How long a node may take to accept a connection and answer one command before the next is
tried: a dead host (not a refused port) would otherwise hold a reconnection up for minutes."""


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


def _topology(url: str) -> TopologyReader:
    parsed = parse_cluster_url(url)
    connection_class: type[redis.Connection] = (
        redis.SSLConnection if parsed.tls else redis.Connection
    )

    def connect(address: Address) -> redis.Connection:
        host, port = address
        return connection_class(
            host=host,
            port=port,
            socket_timeout=PROBE_TIMEOUT_S,
            socket_connect_timeout=PROBE_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            **cluster_credentials(url),
        )

    return TopologyReader(parsed.seeds, connect)


def ordered_nodes(seeds: tuple[Address, ...], known: tuple[Address, ...]) -> list[Address]:
    """The seeds the topology names, in the URL's order (a healthy cluster's first seed is
    chosen, as before), then the other nodes it names, then the seeds it does not name: the
    topology may be unreadable, or name the nodes by other addresses than the URL does."""
    named = set(known)
    return [
        *(s for s in seeds if s in named),
        *(n for n in known if n not in seeds),
        *(s for s in seeds if s not in named),
    ]


def cluster_nodes(url: str, topology: TopologyReader | None = None) -> list[Address]:
    """Every node worth trying now, best first (see `ordered_nodes`); the seeds alone when no
    node answers `CLUSTER SLOTS`."""
    reader = topology or _topology(url)
    try:
        known = reader.read().nodes
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

    def __init__(self, url: str, *, client_name: str) -> None:
        self._url = url
        self._client_name = client_name
        self._topology = _topology(url)
        self._current: Address | None = None

    def __call__(self) -> redis.Redis:
        candidates = cluster_nodes(self._url, self._topology)
        if self._current in candidates:
            candidates.remove(self._current)
            candidates.append(self._current)
        chosen = self._choose(candidates)
        if self._current is not None and chosen != self._current:
            log.warning(
                "redis pub/sub: moving to cluster node %s:%d (%s:%d failed)",
                *chosen,
                *self._current,
            )
        self._current = chosen
        return node_client(self._url, chosen, socket_timeout=None, client_name=self._client_name)

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
