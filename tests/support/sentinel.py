"""A Redis primary, its replicas and three sentinels on free ports, for the high-availability
tests: the same `redis-server` binary runs the sentinels (`--sentinel`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from harness.net import free_port
from harness.redis_server import RedisServer, find_redis_server

from pushsvc.ops.children import terminate

SERVICE = "pushsvc"


class SentinelCluster:
    """`start()`, `url` (the `redis+sentinel://` one), `kill_primary()`, `stop()`."""

    def __init__(self, *, replicas: int = 2, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.binary = find_redis_server()
        if self.binary is None:
            raise RuntimeError("no redis-server to run a Sentinel cluster with")
        self.primary = RedisServer(self.binary)
        self.replicas = [
            RedisServer(self.binary, args=("--replicaof", "127.0.0.1", str(self.primary.port)))
            for _ in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.down_after_ms = down_after_ms
        self._dir = Path(tempfile.mkdtemp(prefix="pushsvc-sentinel-"))
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def nodes(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        for node in self.nodes:
            node.start()
        for index, port in enumerate(self.sentinel_ports):
            config = self._dir / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {self._dir}\n"
                f"logfile {self._dir / f'sentinel-{index}.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 2\n"
            )
            assert self.binary is not None
            self._sentinels.append(
                subprocess.Popen(
                    [self.binary, str(config), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )
        self.wait_until_settled(timeout)
        return self

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels' majority reports it."""
        seen: dict[int, int] = {}
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
            try:
                address: Any = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.exceptions.RedisError:
                continue
            finally:
                client.close()
            if address:
                found = int(address[1])
                seen[found] = seen.get(found, 0) + 1
        majority = [port for port, votes in seen.items() if votes * 2 > len(self.sentinel_ports)]
        return majority[0] if majority else None

    def wait_until_settled(self, timeout: float = 30.0) -> None:
        """Until the sentinels agree on a primary that is up and that every live replica
        follows with its link up (the state a failover test starts from and waits for)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._settled():
                return
            time.sleep(0.1)  # the sentinels' view changes on their own schedule
        raise RuntimeError(f"the Sentinel cluster did not settle:\n{self.log_tail()}")

    def _settled(self) -> bool:
        port = self.primary_port()
        if port is None:
            return False
        live = [n for n in self.nodes if n.pid is not None]
        if port not in {n.port for n in live}:
            return False
        for node in live:
            client = redis.Redis(port=node.port, socket_timeout=1, socket_connect_timeout=1)
            try:
                info = client.info("replication")
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
            if node.port == port:
                if info["role"] != "master" or info["connected_slaves"] != len(live) - 1:
                    return False
            elif (info["role"], info.get("master_port"), info.get("master_link_status")) != (
                "slave",
                port,
                "up",
            ):
                return False
        return self._sentinels_know_replicas(port, len(live) - 1)

    def _sentinels_know_replicas(self, primary: int, replicas: int) -> bool:
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
            try:
                known: Any = client.sentinel_slaves(SERVICE)
                master: Any = client.sentinel_master(SERVICE)
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
            if int(master["port"]) != primary:
                return False
            healthy = [r for r in known if not r["is_sdown"] and not r["is_odown"]]
            if len(healthy) < replicas:
                return False
        return True

    def current_primary(self) -> RedisServer:
        port = self.primary_port()
        return next(n for n in self.nodes if n.port == port)

    def kill_primary(self) -> RedisServer:
        """kill -9 of the node that is primary now; returns it."""
        node = self.current_primary()
        node.kill()
        return node

    def log_tail(self) -> str:
        lines = []
        for log in sorted(self._dir.glob("sentinel-*.log")):
            lines += [f"--- {log.name}", *log.read_text(errors="replace").splitlines()[-15:]]
        return "\n".join(lines)

    def stop(self) -> None:
        for proc in self._sentinels:
            terminate(proc)
        self._sentinels.clear()
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
