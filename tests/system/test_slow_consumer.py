"""A client that stops reading never holds up the others, and is disconnected in the end."""

from __future__ import annotations

import json
import re
import socket

from support.live import (
    PushsvcProcess,
    SSEClient,
    post,
    request,
    stalled_reader,
    wait_until,
)


def _slow_disconnects(port: int) -> float:
    body = request(port, "GET", "/metrics")[2].decode()
    match = re.search(r"^pushsvc_slow_disconnects_total (\S+)$", body, re.M)
    return float(match[1]) if match else 0.0


def test_stalled_reader_is_cut_off_while_others_get_everything(topic: str) -> None:
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--queue-size", "8", "--slow-client-timeout", "500ms"
    ).start()
    stalled = stalled_reader(proc.port, f"/topics/{topic}/stream")
    try:
        healthy = SSEClient(proc.port, f"/topics/{topic}/stream")
        healthy.next_data("snapshot")

        tags = {f"k{i}": "v" * 200 for i in range(16)}  # ~4 KB per update
        total = 0
        while _slow_disconnects(proc.port) == 0:
            assert total < 20_000, "the stalled client was never disconnected"
            # Batches smaller than the queue: a reader that keeps up sees every update.
            assert post(proc.port, topic, [{"value": i, "tags": tags} for i in range(5)])[0] == 202
            received = healthy.take(5)
            assert [u["event"]["value"] for _, u in received] == [float(i) for i in range(5)]
            total += 5
        wait_until(lambda: _topic_subscribers(proc.port, topic) == 1)
        healthy.close()
        assert _server_closed(stalled)
    finally:
        stalled.close()
        proc.stop()


def _server_closed(sock: socket.socket) -> bool:
    """Drain what the server had sent: the stream ends (EOF or reset) instead of hanging."""
    sock.settimeout(10)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    return True


def _topic_subscribers(port: int, topic: str) -> int:
    listed = json.loads(request(port, "GET", "/topics")[2])["topics"]
    return next((t["subscribers"] for t in listed if t["topic"] == topic), 0)
