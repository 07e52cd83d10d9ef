"""`pushsvc serve --workers N` and `--data-dir`: several processes on one port and a private
redis-server, supervised; state that survives a restart."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.net import free_port
from harness.procfs import descendants

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _listening_workers(server: PushsvcProcess) -> int:
    return sum("web listening on" in line for line in server.output)


def _serve(*args: str) -> PushsvcProcess:
    return PushsvcProcess("serve", "--tick", "0", "--heartbeat", "1s", *args).start()


def test_workers_serve_on_one_port_and_stop_cleanly(topic: str) -> None:
    server = _serve("--workers", "2")
    assert server.proc is not None
    try:
        # Two web workers, an aggregator and the private redis-server; and both workers
        # listening, or the kernel has only one socket to hand connections to.
        wait_until(lambda: len(descendants(server.proc.pid)) >= 4, timeout=20)
        wait_until(lambda: _listening_workers(server) == 2, timeout=20)
        pids = set()
        streams = []
        for _ in range(8):  # the kernel spreads connections over the workers
            stream = SSEClient(server.port, f"/topics/{topic}/stream")
            stream.next_data("snapshot")
            streams.append(stream)
        for value in range(5):
            assert post(server.port, topic, {"value": float(value)}) == (202, {"accepted": 1})
        for stream in streams:
            received = stream.take(5)
            assert [u["event"]["value"] for _, u in received] == [0.0, 1.0, 2.0, 3.0, 4.0]
            assert received[-1][1]["windows"]["5m"]["count"] == 5
        last_id = received[2][0]
        for _ in range(20):
            metrics = request(server.port, "GET", "/metrics")[2].decode()
            pids.add(
                next(
                    line
                    for line in metrics.splitlines()
                    if line.startswith("pushsvc_process_info{")
                )
            )
        assert len(pids) == 2, "connections reached one worker only"
        resumed = SSEClient(server.port, f"/topics/{topic}/stream", {"Last-Event-ID": last_id})
        assert [u["event"]["value"] for _, u in resumed.take(2)] == [3.0, 4.0]
        for stream in [*streams, resumed]:
            stream.close()
        left = descendants(server.proc.pid)
    finally:
        assert server.stop() == 0
    assert not {pid for pid in left if Path(f"/proc/{pid}").exists()}


def _in_time_wait(port: int) -> int:
    """How many TCP connections whose local port is `port` wait in TIME-WAIT (/proc/net/tcp,
    state 06)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                waiting += int(local.rsplit(":", 1)[1], 16) == port and state == "06"
    return waiting


def test_workers_start_on_a_port_a_stopped_server_left_in_time_wait() -> None:
    """A stopped `serve` ends its streams itself, so its side of each waits in TIME-WAIT for a
    minute; `serve --workers 2` right after, on that port, starts as a plain `serve` does."""
    port = free_port()
    plain = _serve("--port", str(port))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stream:
        stream.sendall(b"GET /topics/t/stream HTTP/1.1\r\nHost: pushsvc\r\n\r\n")
        assert stream.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert plain.stop() == 0
        # Read to the server's end, then close: unread bytes would make the close a reset.
        while stream.recv(65536):
            pass
    wait_until(lambda: _in_time_wait(port) > 0, what="the server's side in TIME-WAIT")
    workers = _serve("--workers", "2", "--port", str(port))
    try:
        wait_until(lambda: _listening_workers(workers) == 2, timeout=20)
        assert request(port, "GET", "/healthz")[0] == 200
    finally:
        assert workers.stop() == 0


def test_a_worker_that_dies_is_started_again(topic: str) -> None:
    server = _serve("--workers", "2")
    assert server.proc is not None
    try:
        wait_until(lambda: len(descendants(server.proc.pid)) >= 4, timeout=20)
        server.wait_for_log("took the lease")
        victim = max(descendants(server.proc.pid))  # any one of them
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log("exited with -9; starting it again")
        wait_until(lambda: len(descendants(server.proc.pid)) >= 4, timeout=20)
        wait_until(lambda: post(server.port, topic, {"value": 1.0})[0] == 202, timeout=20)
    finally:
        assert server.stop() == 0


def test_data_dir_keeps_windows_and_history_across_a_restart(tmp_path: Path, topic: str) -> None:
    data = str(tmp_path / "data")
    server = _serve("--data-dir", data)
    try:
        stream = SSEClient(server.port, f"/topics/{topic}/stream")
        stream.next_data("snapshot")
        assert post(server.port, topic, [{"value": 1.0}, {"value": 2.0}])[0] == 202
        seen = stream.take(2)
        stream.close()
        assert post(server.port, topic, {"value": 3.0})[0] == 202  # missed by the client
        wait_until(lambda: request(server.port, "GET", f"/topics/{topic}/stats")[0] == 200)
    finally:
        assert server.stop() == 0

    restarted = _serve("--data-dir", data)
    try:
        assert post(restarted.port, topic, {"value": 4.0})[0] == 202
        resumed = SSEClient(
            restarted.port, f"/topics/{topic}/stream", {"Last-Event-ID": seen[-1][0]}
        )
        received = resumed.take(2)
        # Exactly what it missed, across the restart, and the windows carried on.
        assert [u["event"]["value"] for _, u in received] == [3.0, 4.0]
        assert received[-1][1]["windows"]["5m"]["count"] == 4
        assert received[-1][1]["windows"]["5m"]["sum"] == 10.0
        resumed.close()
    finally:
        assert restarted.stop() == 0


def test_a_normal_start_and_stop_log_one_info_line_per_phase_not_per_partition() -> None:
    """Taking the leases of 16 partitions, rebuilding them, going active and handing them over
    at a clean stop is routine: one INFO line per phase, naming the partitions, and no
    WARNING but the supervisor's and the stopping processes' own; each partition's line is
    DEBUG (`pushsvc.partitions`), not logged by default."""
    server = PushsvcProcess(
        "serve", "--tick", "0", "--workers", "2", env={"PUSHSVC_LOG_LEVEL": "info"}
    ).start()
    try:
        wait_until(lambda: _listening_workers(server) == 2, timeout=20)
        server.wait_for_log(r"pushsvc\.partitions: 16 partitions active: 0-15$", timeout=30)
        started = list(server.output)
    finally:
        assert server.stop() == 0
    stopped = server.output[len(started) :]
    infos = [line for line in started if " INFO " in line]
    # Before, 48 lines: a lease taken, a rebuild and an activation per partition.
    assert len(infos) < 16, "".join(infos)
    phases = [line.split(": ", 1)[1] for line in infos if " pushsvc.partitions: " in line]
    assert [p.split(":")[0] for p in phases] == [
        "took the leases of 16 partitions",
        "rebuilt 16 partitions",
        "16 partitions active",
    ], phases
    warnings = [line for line in started if " WARNING " in line]
    assert len(warnings) <= 1, "".join(warnings)
    assert not any(re.search(r"\bpartition \d+/16\b", line) for line in server.output)
    assert not any(re.search(r"\bshard \d+/\d+", line) for line in server.output)
    # A clean stop: one line for the 16 partitions handed over, no warning about them.
    handed = [line for line in stopped if " pushsvc.partitions: " in line]
    assert [line.split(": ", 1)[1].strip() for line in handed] == [
        "stopping: handed over 16 partitions (0-15)"
    ], handed
    troubled = [line for line in stopped if " WARNING " in line and "lease" in line]
    assert not troubled, "".join(troubled)


def test_with_partition_details_each_partition_says_its_lease_rebuild_and_hand_over() -> None:
    """`--log-level info,pushsvc.partitions=debug` (the harness's default): one line per
    partition and phase, as the fault tests read them."""
    server = _serve("--workers", "2", "--log-level", "info,pushsvc.partitions=debug")
    try:
        wait_until(lambda: _listening_workers(server) == 2, timeout=20)
        wait_until(
            lambda: sum("active from log entry" in line for line in server.output) == 16,
            timeout=30,
            what="the aggregator went active on all 16 partitions",
        )
        started = list(server.output)
    finally:
        assert server.stop() == 0
    took = re.compile(r" DEBUG pushsvc\.partitions: took the lease \S+$")
    assert sum(took.search(line) is not None for line in started) == 16
    rebuilt = re.compile(r" DEBUG pushsvc\.partitions: partition \d+/16: rebuilt ")
    assert sum(rebuilt.search(line) is not None for line in started) == 16
    gave_up = re.compile(r" DEBUG pushsvc\.partitions: gave up the lease \S+$")
    assert sum(gave_up.search(line) is not None for line in server.output) == 16
