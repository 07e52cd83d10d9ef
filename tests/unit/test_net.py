"""harness.net.free_port: ports no connection or `bind` to port 0 takes, a share per worker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from harness import net

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    return int(RANGE.read_text().split()[0]) if RANGE.exists() else 0


# Where the ephemeral range starts below 21,024, free_port falls back to the kernel's pick.
pytestmark = pytest.mark.skipif(
    _ephemeral_low() - 20_000 < 1024, reason="no room below the ephemeral range here"
)


def test_ports_lie_below_the_ephemeral_range_clear_of_the_cluster_bus_ports() -> None:
    low = _ephemeral_low()
    ports = [net.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    # A Redis Cluster node's bus port (+10000) is never one free_port hands out either.
    assert all(low - 20_000 <= port < low - 10_000 for port in ports), ports


def test_each_worker_has_a_share_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "6")
    shares = []
    for worker in range(6):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
        share = net._ports()
        assert share is not None and len(share) > 1000
        shares.append(set(share))
    assert sum(map(len, shares)) == len(set().union(*shares))


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    share = net._ports()
    assert share is not None
    index = next(i for i, port in enumerate(share) if net._bindable(port))
    monkeypatch.setattr(net, "_next", index)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", share[index]))
        taken.listen()
        port = net.free_port()
    assert port != share[index] and port in share
