"""Publishing events straight into Redis, for producers that would rather not use HTTP (the
bridge in every aggregator process appends them to the event log).

`PUBLISH` answers how many subscribers received the message, which is how `pushsvc publish`
tells that no bridge heard it. On a Redis Cluster the message reaches every node, but the
answer counts only the subscribers of the node that received it: a publish on any other node
than the bridge's would answer 0 for a message the bridge heard. So on a cluster it publishes
on the bridge's node, found by its connection's name (`Keys.bridge_connection`) in each
node's `CLIENT LIST`. Where no node names it, no bridge listens: it publishes on the first node
that answers, whose answer is then 0 unless a bridge subscribed there meanwhile. Where a node
refuses `CLIENT LIST` (an ACL without it) the bridge may be there unseen: the answer says
nothing, and the count of unheard events is None (unknown). A bridge that moves to another
node between the look-up and a `PUBLISH` (its node died) makes that answer 0 for a message it
may have heard: reported as unheard, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis
from redis.exceptions import RedisError, ResponseError

from pushsvc.broker.redis.broadcast_node import PROBE_TIMEOUT_S, cluster_nodes, node_client
from pushsvc.broker.redis.cluster_topology import Address
from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.url import is_cluster, redact_url

_TIMEOUT_S = 5.0


def publish_to_redis(
    url: str, prefix: str, topic: str, batches: Sequence[Sequence[dict[str, object]]]
) -> tuple[int, int | None]:
    """PUBLISH each batch as one JSON array on `{prefix}ingest:{topic}`; (events sent, events
    no bridge received, or None when that cannot be known). There is no acknowledgement: a
    rejected batch is only counted by the bridge (`pushsvc_bridge_rejected_total` in
    /metrics)."""
    keys = Keys(prefix)
    channel = keys.ingest_channel + topic.encode()
    if is_cluster(url):
        client, counted = _bridge_node_client(url, keys.bridge_connection)
    else:
        client, counted = single_client(url, socket_timeout=_TIMEOUT_S), True
    sent = unheard = 0
    try:
        for batch in batches:
            receivers = client.publish(channel, orjson.dumps(list(batch)))
            sent += len(batch)
            if not receivers:
                unheard += len(batch)
    finally:
        client.close()
    return sent, unheard if counted else None


def _bridge_node_client(url: str, name: str) -> tuple[redis.Redis, bool]:
    """A client of the cluster node whose pub/sub connection named `name` (the youngest, if
    a paused bridge's lingers too) has a pattern subscription, else of the first node that
    answers; and whether its answers to PUBLISH count the bridge (see the module's doc)."""
    bridge: tuple[int, Address] | None = None  # (age in s, node)
    first: Address | None = None
    seen_all = True
    for address in cluster_nodes(url):
        probe = node_client(url, address, socket_timeout=PROBE_TIMEOUT_S)
        try:
            clients = probe.client_list(_type="pubsub")
        except ResponseError:  # it answered, but not this
            first, seen_all = first or address, False
            continue
        except (RedisError, OSError):
            continue  # down: nobody listens there
        finally:
            probe.close()
        first = first or address
        for listener in clients:
            if listener.get("name") == name and int(listener.get("psub", 0)) > 0:
                age = int(listener.get("age", 0))
                if bridge is None or age < bridge[0]:
                    bridge = (age, address)
    if bridge is not None:
        return node_client(url, bridge[1], socket_timeout=_TIMEOUT_S), True
    if first is None:
        raise redis.ConnectionError(f"{redact_url(url)}: no node of the cluster answered")
    return node_client(url, first, socket_timeout=_TIMEOUT_S), seen_all
