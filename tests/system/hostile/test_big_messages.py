"""Big messages against the bounds (docs/reliability.md, "Messages"; docs/security.md,
"Limits"): a messages stream of 64 KiB messages that never reads is ended as `behind` at its
byte bound (a messages stream never conflates); a producer posting messages at the size limit
(a sixteenth of `--max-body`) is served and one byte past it refused, the history holding no
more than its bytes (`--history-bytes`); replays of big messages (`?replay=1000`, and
`Last-Event-ID` from the oldest) that never read hold a page each and are cut off as slow, while
an honest client of the same replay gets every message in order. Beside each attack a
legitimate producer posts messages, timed, and a legitimate subscriber reads them back in order
(as the other hostile tests do), and the server's RSS stays within what the bounds allow.
"""

from __future__ import annotations

import json
import socket
import threading
import time

from harness.live import (
    PushsvcProcess,
    SSEClient,
    metric,
    metric_sample,
    post,
    request,
    subscribers,
    wait_until,
)
from harness.procfs import rss_kb
from harness.raw_streams import read_until_closed

from support.legitimate import LegitimateClient, never_reader, next_message

KIB = 1024
MIB = 1024 * KIB
BOUND = 256 * KIB
"""--max-stream-buffer of every server here: four 64 KiB messages."""
SLOW_S = 1.0
HISTORY_BYTES = 16 * MIB
MESSAGE = 64 * KIB
"""The default largest message (a sixteenth of --max-body): its data as compact JSON."""
PER_POST = 14
"""64 KiB messages per POST under the default --max-body (1 MiB)."""
LOGGED_COST = 3
"""What the embedded server's RSS grows by per byte of message data its event log keeps (until
the message is published; a bound, as it once kept them for the widest window): the data, and
the allocator's share of the copies made on its way (measured: 2.7 for a flood of 64 KiB
messages)."""
_PENDING = "pushsvc_stream_pending_bytes"
_SLOW = "pushsvc_slow_disconnects_total"


def _serve(*args: str) -> PushsvcProcess:
    return PushsvcProcess(
        "serve",
        "--tick", "0",
        "--max-stream-buffer", str(BOUND),
        "--body-timeout", f"{int(SLOW_S * 1000)}ms",  # the slow-client timeout
        "--history-bytes", str(HISTORY_BYTES),
        *args,
    ).start()  # fmt: skip


def _data(n: int, size: int = MESSAGE) -> str:
    """A string whose compact JSON is `size` bytes, numbered `n` at its start."""
    head = f"{n:08d}"
    return head + "x" * (size - 2 - len(head))


def _big_batch(first: int, count: int = PER_POST) -> list[dict[str, object]]:
    return [{"type": "big", "data": _data(first + i)} for i in range(count)]


def _rss(proc: PushsvcProcess) -> int:
    return rss_kb([proc.pid]) * KIB


def _fill_history(port: int, topic: str) -> int:
    """Post 64 KiB messages past the history's bytes (its own growth stops); how many."""
    posted = 0
    while posted * MESSAGE < HISTORY_BYTES + 2 * MIB:
        assert post(port, topic, _big_batch(posted))[0] == 202
        posted += PER_POST
    return posted


def test_a_messages_stream_of_64_kib_messages_that_never_reads_is_ended_as_behind(
    topic: str,
) -> None:
    proc = _serve()
    attacker = None
    legit = LegitimateClient(proc.port, f"{topic}-legit", messages=True)
    try:
        big = f"{topic}-big"
        posted = _fill_history(proc.port, big)
        before = _rss(proc)
        attacker = never_reader(proc.port, f"/topics/{big}/messages")
        wait_until(lambda: subscribers(proc.port) == 2, what="the attacker's stream")
        highest = 0.0
        rounds = 0
        # Unbounded, the stream would hold every message: 40 POSTs, ~36 MB.
        while rounds < 40:
            assert post(proc.port, big, _big_batch(posted))[0] == 202
            posted += PER_POST
            legit.round()
            highest = max(highest, metric(proc.port, _PENDING))
            rounds += 1
        wait_until(
            lambda: (
                metric_sample(proc.port, "pushsvc_stream_disconnects_total", '{reason="behind"}')
                >= 1
            ),
            timeout=SLOW_S + 5,
            what="the never-reader ended as behind",
        )
        read_until_closed(attacker)
        # The bound, plus one run taken whole (a POST's messages: under 1 MiB).
        assert highest <= BOUND + MIB, highest
        # The server's own growth besides the stream: the event log keeps each message until
        # it is published (docs/reliability.md), the history no more than its bytes, filled
        # before.
        logged = rounds * PER_POST * MESSAGE * LOGGED_COST
        assert _rss(proc) - before < 16 * MIB + logged
        legit.round()
        legit.assert_fast()
    finally:
        legit.close()
        if attacker is not None:
            attacker.close()
        proc.stop()


def test_a_producer_at_the_size_limit_is_served_and_the_history_keeps_its_bytes(
    topic: str,
) -> None:
    proc = _serve()
    legit = LegitimateClient(proc.port, f"{topic}-legit", messages=True)
    try:
        big = f"{topic}-big"
        # One byte past the limit: the whole batch is a 413, nothing logged.
        over = [*_big_batch(0, 2), {"type": "big", "data": _data(2, MESSAGE + 1)}]
        status, body = post(proc.port, big, over)
        assert (status, body["error"]["code"], body["error"]["index"]) == (
            413,
            "payload_too_large",
            2,
        )
        assert request(proc.port, "GET", f"/topics/{big}/stats")[0] == 404
        posted = _fill_history(proc.port, big)
        before = _rss(proc)
        rounds = 0
        stop = threading.Event()
        statuses: list[int] = []

        def flood() -> None:
            n = posted
            while not stop.is_set():
                statuses.append(post(proc.port, big, _big_batch(n))[0])
                n += PER_POST

        attacker = threading.Thread(target=flood, daemon=True)
        attacker.start()
        try:
            while rounds < 40:
                legit.round()
                rounds += 1
        finally:
            stop.set()
            attacker.join(30)
        assert set(statuses) == {202}, statuses
        flooded = len(statuses) * PER_POST
        # The history holds its bytes (the newest 16 MiB of 64 KiB messages), whatever came.
        status, _, body = request(proc.port, "GET", f"/topics/{big}/history?limit=10000")
        kept = json.loads(body)["updates"]
        assert status == 200 and 0 < len(kept) * MESSAGE <= HISTORY_BYTES
        assert kept[-1]["event"]["data"] == _data(posted + flooded - 1)
        logged = flooded * MESSAGE * LOGGED_COST
        assert _rss(proc) - before < 16 * MIB + logged
        legit.assert_fast()
    finally:
        legit.close()
        proc.stop()


def test_replays_of_big_messages_that_never_read_hold_a_page_and_are_cut_off(
    topic: str,
) -> None:
    proc = _serve()
    attackers: list[socket.socket] = []
    legit = LegitimateClient(proc.port, f"{topic}-legit", messages=True)
    honest = None
    try:
        kept = f"{topic}-kept"
        posted = _fill_history(proc.port, kept)
        body = request(proc.port, "GET", f"/topics/{kept}/history?limit=10000")[2]
        history = json.loads(body)["updates"]
        oldest = history[0]["id"]
        first = int(history[0]["event"]["data"][:8])
        before = _rss(proc)
        path = f"/topics/{kept}/messages"
        # An honest client asking the same replay, beside them, reads all of it in order.
        honest = SSEClient(proc.port, path, headers={"Last-Event-ID": oldest})
        replayed: list[int] = []
        wanted = posted - first - 1

        def read() -> None:
            replayed.extend(int(next_message(honest)[1][1:9]) for _ in range(wanted))

        reading = threading.Thread(target=read, daemon=True)
        reading.start()
        opened = time.monotonic()
        # Unbounded, each would render its whole replay: 8 x 16 MiB.
        attackers = [
            *(never_reader(proc.port, path, {"Last-Event-ID": oldest}) for _ in range(4)),
            *(never_reader(proc.port, f"{path}?replay=1000") for _ in range(4)),
        ]
        highest = 0.0

        def all_cut_off() -> bool:
            nonlocal highest
            highest = max(highest, metric(proc.port, _PENDING))
            return metric(proc.port, _SLOW) >= len(attackers)

        while legit.sent < 100 and not all_cut_off():
            legit.round()
        wait_until(
            all_cut_off,
            timeout=max(0.0, opened + SLOW_S + 5 - time.monotonic()),
            what="the never-readers were cut off",
        )
        for attacker in attackers:
            read_until_closed(attacker)
        # Each holds its bound and one message past it (a page holds one message at least).
        assert highest <= len(attackers) * (BOUND + 2 * MESSAGE), highest
        assert _rss(proc) - before < 16 * MIB
        reading.join(timeout=30)
        assert replayed == list(range(first + 1, posted))
        legit.assert_fast()
    finally:
        legit.close()
        if honest is not None:
            honest.close()
        for attacker in attackers:
            attacker.close()
        proc.stop()
