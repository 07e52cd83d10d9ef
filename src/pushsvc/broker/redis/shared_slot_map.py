"""redis-py's slot map, taken from the process's one `ClusterView` instead of read by each
`RedisCluster` for itself.

A process holds several cluster clients (the command pool, the lease group's, one per lease),
and each of redis-py's `NodesManager`s reads `CLUSTER SLOTS` on its own: on a lost connection,
on every fifth `MOVED`. During a failover they disagreed with one another and with the sharded
pub/sub readers. Here every `initialize` (what redis-py and `redirects.learn_topology` call to
re-read the slots) refreshes the one view instead, and every refresh of the view, whoever
asked for it, is copied into every client's map. A `MOVED` also refreshes the view, asking the
node it named first: it knows it owns the slot, when gossip may not have told another node yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

from redis.cluster import PRIMARY, REPLICA, ClusterNode, NodesManager, RedisCluster
from redis.exceptions import AskError, MovedError, RedisClusterException, RedisError

from pushsvc.broker.redis.cluster_view import ClusterView, Topology


class _ViewNodesManager(NodesManager):
    """A `NodesManager` whose slots and nodes are the view's (`follow_view` makes one)."""

    _view: ClusterView
    _generation: int
    _listening: object

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        more = kwargs.get("additional_startup_nodes_info") or (args[0] if args else None)
        first = (str(more[0][0]), int(more[0][1])) if more else None
        try:
            topology = self._view.refresh(first=first)
        except (RedisError, OSError) as exc:
            # What redis-py raises when no node answers.
            raise RedisClusterException(f"no Redis Cluster node answered ({exc})") from None
        self.apply(topology)

    def move_slot(self, e: AskError | MovedError) -> None:
        """A `MOVED` (redis-py >= 7): the view refreshed for everyone, then the slot patched
        as the redirect says, so that the retry goes where the owner itself said even when
        the read was answered by a node gossip has not reached yet."""
        self._learn_moved(e)
        super().move_slot(e)

    def update_moved_exception(self, exception: MovedError) -> None:
        """A `MOVED` (redis-py < 7, which patches the slot at its next lookup, after this)."""
        self._learn_moved(exception)
        getattr(super(), "update_moved_exception")(exception)  # noqa: B009 (not in >= 7)

    def _learn_moved(self, e: AskError | MovedError) -> None:
        with contextlib.suppress(RedisError, OSError):
            self._view.refresh(first=(e.host, e.port))

    def apply(self, topology: Topology) -> None:
        """Take the view's slot owners, unless a later read was taken already. A node keeps
        its connections from one map to the next (redis-py does the same)."""
        if topology.generation <= self._generation:
            return
        owners = topology.owners
        nodes: dict[str, ClusterNode] = {}
        get = cast(Callable[..., ClusterNode], self._get_or_create_cluster_node)
        roles = [(address, PRIMARY) for _, _, address in owners.ranges]
        for (host, port), role in [*roles, *((a, REPLICA) for a in owners.nodes)]:
            if f"{host}:{port}" not in nodes:
                # Added to `nodes` by redis-py >= 7 itself, returned only by earlier ones.
                node = get(host, port, role, nodes)
                nodes[node.name] = node
        slots: dict[int, list[ClusterNode]] = {}
        for first, last, (host, port) in owners.ranges:
            owner = [nodes[f"{host}:{port}"]]
            for slot in range(first, last + 1):
                slots[slot] = owner
        self.create_redis_connections(list(nodes.values()))  # type: ignore[no-untyped-call]
        with self._lock:
            if topology.generation <= self._generation:
                return  # a later one was applied while this one was built
            self._generation = topology.generation
            self.nodes_cache = nodes
            self.slots_cache = slots
            primaries = [n for n in nodes.values() if n.server_type == PRIMARY]
            self.default_node = primaries[0] if primaries else None
            self.startup_nodes = dict(nodes) or self.startup_nodes
            if hasattr(self, "_epoch"):  # redis-py >= 7.1 deduplicates initialize by it
                self._epoch += 1


def follow_view(cluster: RedisCluster, view: ClusterView) -> None:
    """Make `cluster` take its slot map from `view` from now on, and take the view's current
    one now (read if the view has none: `cluster` just answered, so some node does)."""
    manager = cluster.nodes_manager
    manager.__class__ = _ViewNodesManager  # the same object: pipelines share it already
    shared = cast(_ViewNodesManager, manager)
    shared._view = view
    shared._generation = 0
    shared._listening = view.listen(shared.apply)
    with contextlib.suppress(RedisError, OSError):
        shared.apply(view.current())
