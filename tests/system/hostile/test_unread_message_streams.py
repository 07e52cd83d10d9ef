"""Hundreds of messages streams that never read, against the process's budget
(32 times `--max-stream-buffer`, docs/security.md#limits) and its priming (`deliver/priming`):

* live: 60 KiB messages posted to their topic take the streams' pending bytes up to the budget
  and never past it (a stream that would pass it is ended as `behind`, its client free to
  resume from the history);
* replaying (`?replay=1000` of 500 such messages): they are primed in turns, client after
  client, so that a new stream of a third client gets its head (`200`, or `503` with
  `Retry-After` over the budget) within the bound, not after every one of them.

Either way the server's RSS grows by no more than the budget allows, and once the attackers
leave their memory comes back — while a legitimate producer's POSTs and its subscriber's
messages, and a new stream's head, are served within their bounds. At the default budget and
at a small one.
"""

from __future__ import annotations

import http.client
import socket
import time

import pytest
from harness.live import PushsvcProcess, metric, post, subscribers, wait_until
from harness.procfs import rss_kb

from support.legitimate import LegitimateClient

KIB = 1024
MIB = 1024 * KIB
STREAMS = 500
ATTACKERS = ("127.0.0.2", "127.0.0.3")
"""Two addresses: 250 streams each, under the default --max-streams-per-ip."""
THIRD = "127.0.0.4"
"""The new stream's address: neither the attackers' nor the legitimate client's."""
MESSAGE = 60 * KIB
PER_POST = 14
"""60 KiB messages in one POST under the default --max-body (1 MiB)."""
BOUND_S = 2.0
"""A legitimate POST's and a new stream's head's latency, at most."""
STREAM_COST = 256 * KIB
"""What a stream costs besides its pending bytes, at most (docs/security.md#limits): its
greenlet, parked in its head's write, and the buffers of its request and connection."""
SERVER_OWN = 48 * MIB
"""What the server keeps of the attack besides the streams (the messages' history and event
log, 12 MB of data, and the allocator's slack): the bound on the RSS it keeps after."""
_PENDING = "pushsvc_stream_pending_bytes"


def _never_reader(port: int, source: str, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _rss(proc: PushsvcProcess) -> int:
    return rss_kb([proc.pid]) * KIB


def _head_s(port: int, path: str, source: str | None = None) -> tuple[float, int]:
    """How long a new stream's head took (from `source`, if given), and its status; a `503`
    must say when to retry."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=None if source is None else (source, 0)
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        took = time.monotonic() - start
        if response.status == 503:
            assert int(response.getheader("Retry-After") or 0) > 0
        return took, response.status
    finally:
        conn.close()


def _within_budget(highest: int, rss_up: int, budget: int) -> None:
    """The streams together never held more than the budget, nor the process more than it,
    the streams' own costs and its own."""
    assert highest <= budget, highest / MIB
    assert rss_up <= budget + STREAMS * STREAM_COST + SERVER_OWN, rss_up / MIB


def _leave(attackers: list[socket.socket], proc: PushsvcProcess) -> None:
    """The attackers close their streams; the server sees only the legitimate one's left."""
    for attacker in attackers:
        attacker.close()
    attackers.clear()
    wait_until(lambda: subscribers(proc.port) == 1, timeout=30)


@pytest.mark.parametrize("budget", [256 * MIB, 32 * MIB], ids=["default", "32MiB"])
def test_unread_messages_streams_hold_the_budget_and_give_their_memory_back(
    topic: str, budget: int
) -> None:
    args = [] if budget == 256 * MIB else ["--max-stream-buffer", str(budget // 32)]
    proc = PushsvcProcess("serve", "--tick", "0", *args).start()
    attackers: list[socket.socket] = []
    legit = LegitimateClient(proc.port, f"{topic}-legit", messages=True)
    try:
        legit.round()
        before = _rss(proc)
        big = f"{topic}-big"
        attackers = [
            _never_reader(proc.port, ATTACKERS[n % 2], f"/topics/{big}/messages")
            for n in range(STREAMS)
        ]
        wait_until(lambda: subscribers(proc.port) == 1 + STREAMS, timeout=30)
        highest = peak_rss = 0
        batch = [{"type": "big", "data": "x" * (MESSAGE - 2)} for _ in range(PER_POST)]
        for _ in range(200 // PER_POST):
            start = time.monotonic()
            assert post(proc.port, big, batch)[0] == 202
            assert time.monotonic() - start < BOUND_S
            highest = max(highest, metric(proc.port, _PENDING))
            peak_rss = max(peak_rss, _rss(proc))
            legit.round()
        head_s, status = _head_s(proc.port, f"/topics/{topic}-new/messages", THIRD)
        assert head_s < BOUND_S and status in (200, 503)
        _within_budget(highest, peak_rss - before, budget)

        _leave(attackers, proc)
        wait_until(lambda: metric(proc.port, _PENDING) == 0)
        # Their memory comes back at the hub's next sweep.
        wait_until(
            lambda: _rss(proc) - before <= SERVER_OWN,
            timeout=10,
            what=f"the streams' memory back (RSS {(_rss(proc) - before) / MIB:.0f} MiB up)",
        )
        assert _head_s(proc.port, f"/topics/{topic}-new/messages")[1] == 200
        for _ in range(5):
            legit.round()
        legit.assert_fast()
    finally:
        legit.close()
        for attacker in attackers:
            attacker.close()
        proc.stop()


@pytest.mark.parametrize("budget", [256 * MIB, 32 * MIB], ids=["default", "32MiB"])
def test_unread_replays_take_turns_and_a_new_stream_gets_its_head(topic: str, budget: int) -> None:
    args = [] if budget == 256 * MIB else ["--max-stream-buffer", str(budget // 32)]
    proc = PushsvcProcess("serve", "--tick", "0", *args).start()
    attackers: list[socket.socket] = []
    legit = LegitimateClient(proc.port, f"{topic}-legit", messages=True)
    try:
        big = f"{topic}-big"
        for first in range(0, 500, PER_POST):
            count = min(PER_POST, 500 - first)
            batch = [{"type": "big", "data": "x" * (MESSAGE - 2)} for _ in range(count)]
            assert post(proc.port, big, batch)[0] == 202
        legit.round()
        wait_until(lambda: metric(proc.port, "pushsvc_updates_published_total") >= 502)
        before = _rss(proc)
        attackers = [
            _never_reader(proc.port, ATTACKERS[n % 2], f"/topics/{big}/messages?replay=1000")
            for n in range(STREAMS)
        ]
        # While they are primed: a new stream of another topic from a third address, and the
        # legitimate producer, are served within the bound; the streams never hold more than
        # the budget.
        highest = peak_rss = 0
        for _ in range(10):
            head_s, status = _head_s(proc.port, f"/topics/{topic}-new/messages", THIRD)
            assert head_s < BOUND_S and status in (200, 503), (head_s, status)
            legit.round()
            highest = max(highest, metric(proc.port, _PENDING))
            peak_rss = max(peak_rss, _rss(proc))
        assert max(legit.latencies) < BOUND_S
        _within_budget(highest, peak_rss - before, budget)

        _leave(attackers, proc)
        wait_until(
            lambda: _rss(proc) - before <= SERVER_OWN,
            timeout=10,
            what=f"the streams' memory back (RSS {(_rss(proc) - before) / MIB:.0f} MiB up)",
        )
        assert _head_s(proc.port, f"/topics/{topic}-new/messages", THIRD)[1] == 200
        legit.round()
        legit.assert_fast()
    finally:
        legit.close()
        for attacker in attackers:
            attacker.close()
        proc.stop()
