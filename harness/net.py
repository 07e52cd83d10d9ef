"""Sockets for tests and benchmarks."""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 10_000
"""free_port hands out the `_SPAN` ports that lie `2 * _SPAN` to `_SPAN` below the kernel's
ephemeral range, and leaves the `_SPAN` just below it to Redis Cluster's bus ports (a node's
port + 10000, harness.redis_cluster), so that no bus port is ever handed out."""


def _ports() -> range | None:
    """This process's share of free_port's ports: a slice per pytest-xdist worker (a
    benchmark or tool it starts inherits the worker's); None where the ephemeral range is
    unknown or starts too low to leave room below it."""
    try:
        low = int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    first = low - 2 * _SPAN
    if first < 1024:
        return None
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = _SPAN // workers
    return range(first + worker * size, first + (worker + 1) * size)


_SHARE = _ports()
# From a random place in the share, then onwards: a worker and the programs it starts do not
# walk the same ports, and a port handed out is not handed out again until the share wraps.
_next = random.randrange(len(_SHARE)) if _SHARE else 0
_lock = threading.Lock()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing uses right now, for a server the caller starts soon.

    Taken below the kernel's ephemeral range (`ip_local_port_range`), where neither a client's
    connection nor a `bind` to port 0 anywhere on the machine picks ports: one the kernel
    picked could be taken by any connection before the server bound it (one picked before a
    Docker stack's minute-long build was lost that way), and the suite opens thousands a
    minute. Elsewhere, the kernel's pick."""
    global _next
    if _SHARE is not None:
        with _lock:
            for _ in range(len(_SHARE)):
                port = _SHARE[_next % len(_SHARE)]
                _next += 1
                if _bindable(port):
                    return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
