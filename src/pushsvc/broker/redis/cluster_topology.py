"""Who serves which slot of a Redis Cluster, read on demand (`CLUSTER SLOTS`), and the hash-tag
rule a sharded channel's slot follows.

A reader asks for the topology when it has reason to think it changed (a `sunsubscribe` pushed
by a slot move, a `MOVED`, a lost connection, an idle probe), not on a timer. Each read asks
the nodes the last answer named one after another, starting one further along each time, so
that a node with a stale view (gossip reaches nodes one by one) does not answer every read;
then the seeds it did not name.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import RedisError

Address = tuple[str, int]
"""A node's (host, port) as the cluster announces it."""

Connect = Callable[[Address], redis.Connection]
"""A new, not yet connected, connection to a node."""


@dataclass(frozen=True)
class SlotOwners:
    """The primary of every covered slot: sorted, non-overlapping `(first, last, primary)`
    ranges, and every node the answer named (primaries and replicas)."""

    ranges: tuple[tuple[int, int, Address], ...]
    nodes: tuple[Address, ...]

    def owner(self, slot: int) -> Address | None:
        """The primary serving `slot`, or None while no primary covers it."""
        index = bisect.bisect_right(self.ranges, (slot, 1 << 30)) - 1
        if index >= 0:
            first, last, primary = self.ranges[index]
            if first <= slot <= last:
                return primary
        return None

    def primaries(self) -> set[Address]:
        return {primary for _, _, primary in self.ranges}


def parse_cluster_slots(reply: Sequence[Any], asked: Address) -> SlotOwners:
    """A raw `CLUSTER SLOTS` reply: rows of first, last, then the primary `[host, port, id,
    …]` and its replicas likewise. An empty host (the node does not know its own address)
    means the node asked."""

    def address(node: Sequence[Any]) -> Address:
        host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
        if host in ("", "?"):
            host = asked[0]
        return host, int(node[1])

    ranges = []
    nodes: dict[Address, None] = {}
    for row in reply:
        primary = address(row[2])
        ranges.append((int(row[0]), int(row[1]), primary))
        for node in row[2:]:
            nodes[address(node)] = None
    return SlotOwners(tuple(sorted(ranges)), tuple(nodes))


class TopologyReader:
    """Reads `SlotOwners` from the seeds and every node seen since; thread-safe."""

    def __init__(self, seeds: Iterable[Address], connect: Connect) -> None:
        self._seeds = tuple(dict.fromkeys(seeds))
        if not self._seeds:
            raise ValueError("a Redis Cluster needs at least one seed node")
        self._connect = connect
        self._lock = threading.Lock()
        self._named: tuple[Address, ...] = ()  # by the last answer
        self._turn = 0

    def read(self, *, first: Address | None = None) -> SlotOwners:
        """The slot owners as the first node that answers sees them, `first` asked first if
        given; RedisError (or OSError) from the last node tried when none answers."""
        with self._lock:
            candidates = self._named or self._seeds
            start = self._turn % len(candidates)
            self._turn += 1
        order = candidates[start:] + candidates[:start]
        # Then the seeds the last answer did not name: a node failed over is left out of
        # `CLUSTER SLOTS`, and a hung one would hold every read up for its timeout.
        order += tuple(s for s in self._seeds if s not in order)
        if first is not None:
            order = (first, *(a for a in order if a != first))
        error: Exception = RedisError("no node to ask")
        for address in order:
            try:
                owners = self._ask(address)
            except (RedisError, OSError) as failed:
                error = failed
                continue
            if owners.ranges:
                with self._lock:
                    self._named = owners.nodes
                return owners
        raise error

    def _ask(self, address: Address) -> SlotOwners:
        connection = self._connect(address)
        try:
            connection.send_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            reply = connection.read_response()
        finally:
            with contextlib.suppress(RedisError, OSError):
                connection.disconnect()  # type: ignore[no-untyped-call]
        return parse_cluster_slots(reply, address)


def hash_tag(channel: bytes) -> bytes | None:
    """The part of `channel` Redis Cluster hashes when it has one: the text between the first
    `{` and the first `}` after it, if not empty."""
    start = channel.find(b"{")
    if start < 0:
        return None
    end = channel.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return channel[start + 1 : end]


def channel_slot(channel: bytes) -> int:
    return int(key_slot(channel))


def probe_channel(channel: bytes, prefix: bytes = b"pushsvc:probe:") -> bytes:
    """A channel in the slot of `channel`, for idle probes: `prefix{tag}` with `channel`'s own
    hash tag (the whole name when it has none). ValueError when no such name has the slot (a
    name with a `{` but no valid tag, e.g. `a{}b`)."""
    tag = hash_tag(channel)
    probe = prefix + b"{" + (channel if tag is None else tag) + b"}"
    if channel_slot(probe) != channel_slot(channel):
        raise ValueError(f"no probe channel for {channel!r}: give it a {{tag}}")
    return probe
