"""Streams that never read: each holds at most its byte bound (`--max-stream-buffer`) and one
page or run more (a stream of many topics, as much again in their latest updates), is ended as
slow within the slow-client timeout (or sooner, once those latest updates pass its bound), and
all of them together hold at most the process's budget (32 times `--max-stream-buffer`), past
which new streams get a 503 — while a legitimate producer keeps its latency and a legitimate
subscriber gets every update in order.

Each attack would, without those bounds, hold tens of MB in the server (a whole replay or
snapshot rendered per stream, a batch queued per POST): the RSS bounds below sit well under
that and well over what the bounded server grows by (its history is filled first, so its own
growth is not counted against the attack).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

from support.legitimate import LegitimateClient, never_reader
from support.tls_pairs import self_signed

KIB = 1024
MIB = 1024 * KIB
BOUND = 64 * KIB
"""--max-stream-buffer of every server here."""
PAGE = 16 * KIB
"""The head page at that bound (a quarter of it: `stream_response.head_page_size`)."""
SLOW_S = 1.0
_TAGS = {f"k{i}": "v" * 200 for i in range(16)}
"""Tags that make each update about 3.6 kB on the wire."""
_PENDING = "pushsvc_stream_pending_bytes"
_SLOW = "pushsvc_slow_disconnects_total"


def _serve(*args: str, body_timeout: str = f"{int(SLOW_S * 1000)}ms") -> PushsvcProcess:
    return PushsvcProcess(
        "serve",
        "--tick",
        "0",
        "--max-stream-buffer",
        str(BOUND),
        "--body-timeout",  # the slow-client timeout
        body_timeout,
        *args,
    ).start()


def _rss(proc: PushsvcProcess) -> int:
    return rss_kb([proc.pid]) * KIB


def _oldest_id(port: int, topic: str) -> str:
    status, _, body = request(port, "GET", f"/topics/{topic}/history?since=0&limit=1")
    assert status == 200
    return str(json.loads(body)["updates"][0]["id"])


def _ended(port: int) -> dict[str, float]:
    """How many streams ended, by the reasons a stream of these tests may end for."""
    return {
        reason: metric_sample(port, "pushsvc_stream_disconnects_total", f'{{reason="{reason}"}}')
        for reason in ("slow", "behind", "gone", "error")
    }


def _newest_value(port: int, topic: str) -> float | None:
    """The value of the topic's newest update in the history (None before its first)."""
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=1")
    assert status == 200
    updates = json.loads(body)["updates"]
    return float(updates[0]["event"]["value"]) if updates else None


MAX_RESUMES = 3
"""How often the honest replay reader below may be ended as slow and resume."""


@dataclass
class ReplayReader:
    """An honest client reading a replay of `count` updates in a thread of its own, as an
    EventSource does: should the server end its stream, it resumes with its `Last-Event-ID`.

    The server ends as slow a stream whose socket takes nothing for the slow-client timeout,
    a second here (docs/reliability.md): a thread of a test process on a loaded machine can
    pause that long, scheduled out or held by the interpreter's garbage collector, with the
    kernel's buffers full. Its client then resumes where it was, and must get the rest
    exactly once, in order. `resumes` says how often it did; `error` what ended it
    otherwise (it never dies in its thread)."""

    port: int
    path: str
    last_event_id: str
    count: int
    values: list[float] = field(default_factory=list)
    resumes: int = 0
    error: str | None = None
    stream: SSEClient | None = None
    _thread: threading.Thread | None = None
    _closed: bool = False

    def start(self) -> None:
        self.stream = SSEClient(self.port, self.path, headers={"Last-Event-ID": self.last_event_id})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while len(self.values) < self.count:
                assert self.stream is not None
                try:
                    _, update = self.stream.next_data()
                except (EOFError, http.client.IncompleteRead, ConnectionResetError):
                    if self.resumes == MAX_RESUMES or self._closed:
                        raise
                    self.resumes += 1
                    resume_from = self.stream.last_event_id
                    self.stream.close()
                    self.stream = SSEClient(
                        self.port, self.path, headers={"Last-Event-ID": resume_from}
                    )
                    assert self.stream.status == 200, self.stream.status
                    continue
                self.values.append(update["event"]["value"])
        except Exception as exc:  # the test reads it: a thread's exception would be lost
            self.error = f"after {len(self.values)} updates: {exc!r}"

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the honest replay took longer than {timeout} s"

    def close(self) -> None:
        """End its stream (its thread, reading it, then ends with an error, and resumes no
        more)."""
        self._closed = True
        if self.stream is not None:
            self.stream.close()


def test_a_live_stream_that_never_reads_is_conflated_then_cut_off(topic: str) -> None:
    proc = _serve("--history", "300")
    attacker = None
    legit = LegitimateClient(proc.port, f"{topic}-legit")
    try:
        big = f"{topic}-big"
        batch = [{"value": i, "tags": _TAGS} for i in range(150)]  # one run of ~550 kB
        for _ in range(2):  # the history (300 updates) is full: the server's own growth stops
            assert post(proc.port, big, batch)[0] == 202
        before = _rss(proc)
        attacker = never_reader(proc.port, f"/topics/{big}/stream")
        wait_until(lambda: subscribers(proc.port) == 2)
        highest = 0.0
        # Unbounded, the stream would hold every batch: 60 runs, ~33 MB.
        for _ in range(60):
            assert post(proc.port, big, batch)[0] == 202
            legit.round()
            highest = max(highest, metric(proc.port, _PENDING))
        wait_until(lambda: metric(proc.port, _SLOW) >= 1, timeout=SLOW_S + 5)
        read_until_closed(attacker)
        # The bound, plus one run (taken whole) and its topic's latest update.
        assert highest <= BOUND + 700 * KIB, highest
        # The server's own growth besides the stream: the event log keeps each batch's events
        # (these tags, parsed, take about 5 kB an event) for the widest window and the
        # lateness, until its partition's aggregator trims it (docs/reliability.md).
        logged = 60 * len(batch) * 6 * KIB
        assert _rss(proc) - before < 12 * MIB + logged
        legit.round()
        legit.assert_fast()
    finally:
        legit.close()
        if attacker is not None:
            attacker.close()
        proc.stop()


def test_a_wildcard_stream_that_never_reads_is_cut_off_once_its_latest_updates_pass_its_bound(
    topic: str,
) -> None:
    """A stream of many topics conflates to one latest update a topic: past its bound in
    those it is ended as slow, long before the slow-client timeout (a minute here)."""
    proc = _serve(body_timeout="60s")
    attacker = None
    legit = LegitimateClient(proc.port, f"{topic}-legit")
    try:
        attacker = never_reader(proc.port, f"/stream?topic={topic}-many.*")
        wait_until(lambda: subscribers(proc.port) == 2)
        opened, highest = time.monotonic(), 0.0
        # Unbounded, it would hold an update (~3.6 kB) of each of 300 topics, 1 MB, for the
        # minute: 16 times its bound.
        for n in range(300):
            assert post(proc.port, f"{topic}-many.{n}", [{"value": n, "tags": _TAGS}])[0] == 202
            legit.round()
            highest = max(highest, metric(proc.port, _PENDING))
            if metric(proc.port, _SLOW) >= 1:
                break
        assert metric(proc.port, _SLOW) == 1, "the wildcard never-reader was not cut off"
        assert time.monotonic() - opened < 30
        read_until_closed(attacker)
        # Its bound in runs and its bound in latest updates, a run and an update more, and
        # the legitimate stream's few bytes.
        assert highest <= 2 * BOUND + 12 * KIB, highest
        for _ in range(10):
            legit.round()
        legit.assert_fast()
    finally:
        legit.close()
        if attacker is not None:
            attacker.close()
        proc.stop()


def test_replays_from_the_oldest_id_that_never_read_hold_a_page_and_are_cut_off(
    topic: str,
) -> None:
    # Room past the 2,000 updates replayed: the legitimate rounds must not trim the oldest.
    proc = _serve("--history", "2400")
    attackers: list[socket.socket] = []
    legit = LegitimateClient(proc.port, f"{topic}-legit")
    honest = None
    try:
        kept = f"{topic}-kept"
        for first in range(0, 2000, 100):  # ~7 MB of history
            events = [{"value": first + i, "tags": _TAGS} for i in range(100)]
            assert post(proc.port, kept, events)[0] == 202
        # A POST is answered once its events are logged; the aggregator publishes them after.
        # The oldest id and the replays below are of the whole history, so it is awaited.
        wait_until(lambda: _newest_value(proc.port, kept) == 1999.0, what="all 2,000 published")
        oldest = _oldest_id(proc.port, kept)
        before = _rss(proc)
        path = f"/topics/{kept}/stream"
        # An honest client asking the same replay, beside them, reads all of it, exactly once
        # and in order (resuming as an EventSource does, should a pause of its thread past the
        # slow-client timeout have had its stream ended: `ReplayReader`).
        honest = ReplayReader(proc.port, path, oldest, 1999)
        honest.start()
        opened = time.monotonic()
        # Unbounded, each would render its whole replay: 6 x 7 MB.
        attackers = [never_reader(proc.port, path, {"Last-Event-ID": oldest}) for _ in range(6)]
        highest = 0.0

        def all_cut_off() -> bool:
            nonlocal highest
            highest = max(highest, metric(proc.port, _PENDING))
            return metric(proc.port, _SLOW) >= len(attackers)

        # At most 400 legitimate updates: the history keeps room for them past the replay.
        while legit.sent < 400 and not all_cut_off():
            legit.round()
        wait_until(
            all_cut_off,
            timeout=max(0.0, opened + SLOW_S + 5 - time.monotonic()),
            what="the never-readers were cut off",
        )
        for attacker in attackers:
            read_until_closed(attacker)
        assert highest <= len(attackers) * (BOUND + PAGE), highest
        assert _rss(proc) - before < 16 * MIB
        honest.join(timeout=30)
        assert honest.error is None, honest.error
        assert honest.values == [float(v) for v in range(1, 2000)]
        # Every stream that ended was ended as slow: the never-readers, and the honest one
        # each time it resumed (never as behind, gone or an error).
        # (Counted once each stream's response is over, a moment after its socket closed.)
        expected = {"slow": len(attackers) + honest.resumes, "behind": 0, "gone": 0, "error": 0}
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _ended(proc.port) == expected, timeout=5)
        assert _ended(proc.port) == expected
        legit.assert_fast()
    finally:
        legit.close()
        if honest is not None:
            honest.close()
        for attacker in attackers:
            attacker.close()
        proc.stop()


_WINDOWS = "1s,2s,3s,4s,5s,6s,7s,8s,9s,10s,20s,30s,1m,2m,5m"
"""Fifteen windows: ~2 kB per topic in a snapshot."""


def _make_topics(port: int, prefix: str, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for n in range(count):
            body = json.dumps({"value": n})
            conn.request(
                "POST",
                f"/topics/{prefix}{n:05d}/events",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            assert response.status == 202
    finally:
        conn.close()


def _read_snapshot(port: int, path: str) -> Any:
    """The first message of a stream, a snapshot, read as fast as it comes (a 6 MB line is
    slow work for the WHATWG parser, which a loaded machine could make slower than the
    slow-client timeout)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        body = bytearray()
        while not body.endswith(b"}}\n\n"):
            chunk = response.read1(1 << 20)
            assert chunk, "the stream ended before its snapshot did"
            body += chunk
    finally:
        conn.close()
    message = body[body.index(b"event: snapshot\n") :]
    return json.loads(message.split(b"data: ", 1)[1])


def test_snapshots_of_every_topic_that_never_read_hold_a_page_and_are_cut_off(
    topic: str,
) -> None:
    proc = _serve("--windows", _WINDOWS)
    attackers: list[socket.socket] = []
    legit = LegitimateClient(proc.port, f"{topic}-legit")
    try:
        _make_topics(proc.port, f"{topic}-", 3000)  # a snapshot of `*`: ~6 MB
        # An honest client reads the snapshot whole (its pages make one message), and the
        # topics' updates are parsed once for every snapshot after it: not the attack's cost.
        snapshot = _read_snapshot(proc.port, "/stream?topic=*")
        assert len(snapshot["topics"]) == 3000
        before = _rss(proc)
        opened = time.monotonic()
        # Unbounded, each would render its whole snapshot, and its JSON before that.
        attackers = [never_reader(proc.port, "/stream?topic=*") for _ in range(4)]
        highest = 0.0
        while metric(proc.port, _SLOW) < len(attackers):
            assert time.monotonic() - opened < SLOW_S + 5, "the never-readers were not cut off"
            legit.round()
            highest = max(highest, metric(proc.port, _PENDING))
        for attacker in attackers:
            read_until_closed(attacker)
        # Each: a page of its snapshot, and the legitimate topic's updates queued meanwhile.
        assert highest <= len(attackers) * (BOUND + PAGE), highest
        assert _rss(proc) - before < 12 * MIB
        legit.assert_fast()
    finally:
        legit.close()
        for attacker in attackers:
            attacker.close()
        proc.stop()


def test_once_the_budget_is_spent_new_streams_get_503_and_producers_keep_their_latency(
    topic: str,
) -> None:
    budget = 32 * BOUND  # the process's budget: 32 streams' --max-stream-buffer
    # A long slow-client timeout (--body-timeout): the never-readers stay while the budget is
    # looked at.
    proc = _serve("--history", "300", body_timeout="60s")
    attackers: list[socket.socket] = []
    legit = LegitimateClient(proc.port, f"{topic}-legit")
    try:
        big = f"{topic}-big"
        path = f"/topics/{big}/stream"
        # More streams than the budget holds at their bound (32), and runs smaller than the
        # bound (15 updates, ~54 kB): a run that would pass the budget is conflated, so the
        # total stops short of it by less than a run, and so by less than a stream's bound.
        attackers = [never_reader(proc.port, path) for _ in range(48)]
        wait_until(lambda: subscribers(proc.port) == 1 + len(attackers))
        batch = [{"value": i, "tags": _TAGS} for i in range(15)]
        # Spent once less of it is left than one stream may hold; never passed.
        for _ in range(200):
            if metric(proc.port, _PENDING) > budget - BOUND:
                break
            assert post(proc.port, big, batch)[0] == 202
            legit.round()
        pending = metric(proc.port, _PENDING)
        # At most the budget, and one conflated update on top (pushsvc.deliver.conflating_queue:
        # the stream whose conflated update takes the total past it is ended): one update here
        # is about 4 kB, its counts' digits growing with the run.
        assert budget - BOUND < pending <= budget + 5 * KIB, "the budget was not spent"

        with SSEClient(proc.port, f"/topics/{topic}-new/stream") as refused:
            assert refused.status == 503
            assert int(refused.response_headers["retry-after"]) > 0
        for _ in range(20):  # producers and the streams already open carry on
            legit.round()
        legit.assert_fast()

        for attacker in attackers:  # they leave: their bytes go, and streams are taken again
            attacker.close()
        attackers = []
        wait_until(lambda: metric(proc.port, _PENDING) == 0)
        with SSEClient(proc.port, f"/topics/{topic}-new/stream") as admitted:
            assert admitted.status == 200
    finally:
        legit.close()
        for attacker in attackers:
            attacker.close()
        proc.stop()


def test_over_tls_never_reading_replays_and_live_streams_are_cut_off_too(
    tmp_path: Path, topic: str
) -> None:
    """On TLS a stream is written by its greenlet (its head and every write through the WSGI
    server), not by the hub and the event loop: the same bounds hold."""
    pair = self_signed(tmp_path, "server")
    proc = _serve("--history", "1000", "--certfile", str(pair.cert), "--keyfile", str(pair.key))
    context = ssl.create_default_context(cafile=str(pair.cert))
    attackers: list[socket.socket] = []

    def https(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("localhost", proc.port, context=context, timeout=30)
        try:
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def tls_metric(name: str) -> float:
        text = https("GET", "/metrics")[1].decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found[1]) if found else 0.0

    def tlsnever_reader(path: str, headers: Mapping[str, str] | None = None) -> socket.socket:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", proc.port))
        sock = context.wrap_socket(raw, server_hostname="localhost")
        lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{lines}\r\n".encode())
        return sock

    try:
        kept = f"{topic}-kept"
        for first in range(0, 1000, 100):  # ~3.6 MB of history
            events = [{"value": first + i, "tags": _TAGS} for i in range(100)]
            assert https("POST", f"/topics/{kept}/events", events)[0] == 202
        status, body = https("GET", f"/topics/{kept}/history?since=0&limit=1")
        assert status == 200
        oldest = json.loads(body)["updates"][0]["id"]
        path = f"/topics/{kept}/stream"
        attackers = [tlsnever_reader(path, {"Last-Event-ID": oldest}) for _ in range(3)]
        attackers.append(tlsnever_reader(path))  # and a live one, under large batches
        highest = 0.0
        opened = time.monotonic()
        batch = [{"value": i, "tags": _TAGS} for i in range(150)]
        while tls_metric(_SLOW) < len(attackers):
            assert time.monotonic() - opened < SLOW_S + 5, "the never-readers were not cut off"
            assert https("POST", f"/topics/{kept}/events", batch)[0] == 202
            highest = max(highest, tls_metric(_PENDING))
        # Each: a page of its head, or one run taken whole (~550 kB), and the bound.
        assert highest <= 3 * (BOUND + PAGE) + BOUND + 700 * KIB, highest
        wait_until(lambda: tls_metric("pushsvc_subscribers") == 0)
    finally:
        for attacker in attackers:
            attacker.close()
        proc.stop()
