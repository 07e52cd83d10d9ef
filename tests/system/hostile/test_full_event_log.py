"""A producer of 64 KiB messages faster than the embedded server's aggregator takes them
(docs/reliability.md, "Bounded in bytes"): the event log holds at most `--history-bytes` of
messages not yet published, past which a POST is a `503 broker_full` with `Retry-After`,
nothing logged, as on a full Redis. The server's RSS stays within what that bound allows;
every message answered `202` is delivered, once and in order, once the aggregator runs;
a legitimate producer's POSTs of plain events are taken and timed meanwhile, and once the
aggregator runs its messages come through beside the flood, timed as the other hostile tests
time them.

The aggregator is stopped by starting the real `pushsvc serve` under
`tests/support/held_aggregator.py`, which holds the aggregators until SIGUSR1.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from harness.live import PushsvcProcess, SSEClient, post, request
from harness.procfs import rss_kb

from support.legitimate import P99_BOUND_S, LegitimateClient, next_message

KIB = 1024
MIB = 1024 * KIB
HISTORY_BYTES = 16 * MIB
"""--history-bytes here, and so the bound of the messages the log holds unpublished."""
MESSAGE = 64 * KIB
PER_POST = 14
"""64 KiB messages per POST under the default --max-body (1 MiB)."""
LOGGED_COST = 3
"""What the RSS grows by per byte of message data the log keeps (as in test_big_messages.py:
the data, and the allocator's share of the copies made on its way)."""
HELD = str(Path(__file__).parents[2] / "support" / "held_aggregator.py")


def _data(n: int) -> str:
    head = f"{n:08d}"
    return head + "x" * (MESSAGE - 2 - len(head))


def _big_batch(first: int) -> list[dict[str, object]]:
    return [{"type": "big", "data": _data(first + i)} for i in range(PER_POST)]


def _rss(proc: PushsvcProcess) -> int:
    return rss_kb([proc.pid]) * KIB


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_a_full_event_log_refuses_posts_and_delivers_every_one_it_took(topic: str) -> None:
    proc = PushsvcProcess(
        "serve",
        "--tick", "0",
        "--history-bytes", str(HISTORY_BYTES),
        # The honest reader takes the whole backlog at once when the aggregator starts.
        "--max-stream-buffer", str(4 * HISTORY_BYTES),
        python_args=[HELD],
    ).start()  # fmt: skip
    big, plain = f"{topic}-big", f"{topic}-plain"
    honest = SSEClient(proc.port, f"/topics/{big}/messages", timeout=30)
    plain_stream = SSEClient(proc.port, f"/topics/{plain}/stream", timeout=30)
    legit = None
    try:
        plain_stream.next_data("snapshot")
        before = _rss(proc)
        accepted: list[int] = []
        refused = 0
        plain_latencies: list[float] = []
        plain_sent = 0
        n = 0
        # The aggregator is held: the log fills, then refuses (unbounded, it would take all
        # 40 POSTs, 36 MiB of data).
        for _ in range(40):
            status, body = post(proc.port, big, _big_batch(n))
            if status == 202:
                assert refused == 0, "taken after a refusal while nothing was published"
                accepted += range(n, n + PER_POST)
            else:
                assert (status, body["error"]["code"]) == (503, "broker_full"), (status, body)
                refused += 1
            n += PER_POST
            # A legitimate producer of plain events is taken meanwhile (events without a
            # message hold no bytes of messages), and fast.
            started = time.monotonic()
            assert post(proc.port, plain, [{"value": plain_sent}])[0] == 202
            plain_latencies.append(time.monotonic() - started)
            plain_sent += 1
        # Everything up to the bound was taken (one POST's worth under it, at most).
        taken_bytes = len(accepted) * (MESSAGE + len("big"))
        assert HISTORY_BYTES - PER_POST * (MESSAGE + 3) < taken_bytes <= HISTORY_BYTES
        assert refused == 40 - len(accepted) // PER_POST
        status, headers, _ = request(
            proc.port, "POST", f"/topics/{big}/events", json.dumps(_big_batch(n))
        )
        assert status == 503 and headers["retry-after"] == "5"
        grown = _rss(proc) - before
        assert grown < HISTORY_BYTES * LOGGED_COST + 16 * MIB, grown
        assert _p99(plain_latencies) < P99_BOUND_S, plain_latencies

        os.kill(proc.pid, signal.SIGUSR1)  # the aggregator starts
        got = [int(next_message(honest)[1][1:9]) for _ in accepted]
        assert got == accepted
        values = [u["event"]["value"] for _, u in plain_stream.take(plain_sent)]
        assert values == list(range(plain_sent))

        # Running, it takes the flood again beside a legitimate producer of messages.
        legit = LegitimateClient(proc.port, f"{topic}-legit", messages=True)
        stop = threading.Event()
        flooded: list[tuple[int, int]] = []

        def flood() -> None:
            first = n + PER_POST
            while not stop.is_set():
                flooded.append((first, post(proc.port, big, _big_batch(first))[0]))
                first += PER_POST

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            for _ in range(30):
                legit.round()
        finally:
            stop.set()
            flooder.join(30)
        assert {status for _, status in flooded} <= {202, 503}
        later = [f + i for f, status in flooded if status == 202 for i in range(PER_POST)]
        assert later, "nothing of the flood was taken once the aggregator ran"
        assert [int(next_message(honest)[1][1:9]) for _ in later] == later
        legit.assert_fast()
    finally:
        honest.close()
        plain_stream.close()
        if legit is not None:
            legit.close()
        proc.stop()
