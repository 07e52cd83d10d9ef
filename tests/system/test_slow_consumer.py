"""A client that stops reading never holds up the others, and is disconnected in the end."""

from __future__ import annotations

import json
import re
import socket

import pytest
from harness.live import (
    PushsvcProcess,
    SSEClient,
    post,
    request,
    stalled_reader,
    wait_until,
)
from harness.raw_streams import read_until_closed


def _slow_disconnects(port: int) -> float:
    body = request(port, "GET", "/metrics")[2].decode()
    match = re.search(r"^pushsvc_slow_disconnects_total (\S+)$", body, re.M)
    return float(match[1]) if match else 0.0


def test_stalled_reader_is_cut_off_while_others_get_everything(topic: str) -> None:
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--max-stream-buffer", "64KiB", "--body-timeout", "1s"
    ).start()
    stalled = stalled_reader(proc.port, f"/topics/{topic}/stream")
    try:
        healthy = SSEClient(proc.port, f"/topics/{topic}/stream")
        healthy.next_data("snapshot")

        tags = {f"k{i}": "v" * 200 for i in range(16)}  # ~4 KB per update
        total = 0
        while _slow_disconnects(proc.port) == 0:
            assert total < 20_000, "the stalled client was never disconnected"
            # Batches smaller than a stream's buffer: a reader that keeps up sees every update.
            assert post(proc.port, topic, [{"value": i, "tags": tags} for i in range(5)])[0] == 202
            received = healthy.take(5)
            assert [u["event"]["value"] for _, u in received] == [float(i) for i in range(5)]
            total += 5
        wait_until(lambda: _topic_subscribers(proc.port, topic) == 1)
        healthy.close()
        read_until_closed(stalled)
    finally:
        stalled.close()
        proc.stop()


def test_the_closed_check_fails_on_a_connection_that_stays_open() -> None:
    """The check above can fail: a peer that keeps the connection open (and has sent data)
    is not taken for one that closed it; one that closes it is."""
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"data: still here\n\n")
        with pytest.raises(AssertionError, match="never closed"):
            read_until_closed(left, within=0.2)
        right.close()
        read_until_closed(left, within=0.2)


def _topic_subscribers(port: int, topic: str) -> int:
    listed = json.loads(request(port, "GET", "/topics")[2])["topics"]
    return next((t["subscribers"] for t in listed if t["topic"] == topic), 0)
