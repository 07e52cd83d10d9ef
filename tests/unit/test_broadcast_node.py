"""The order in which a cluster's nodes are tried for the bridge's pub/sub connection."""

from __future__ import annotations

from pushsvc.broker.redis.broadcast_node import ordered_nodes

A, B, C, D = (("10.0.0.1", 6379), ("10.0.0.2", 6379), ("10.0.0.3", 6379), ("10.0.0.4", 6379))


def test_the_seeds_first_in_the_urls_order_then_the_other_nodes_then_unknown_seeds() -> None:
    # A healthy cluster: the URL's first seed, as before the topology was read.
    assert ordered_nodes((B, A), (A, B, C)) == [B, A, C]
    # A seed the topology does not name (gone, or named by another address) comes last.
    assert ordered_nodes((D, A), (A, B, C)) == [A, B, C, D]


def test_an_unreadable_topology_leaves_the_seeds() -> None:
    assert ordered_nodes((B, A), ()) == [B, A]
