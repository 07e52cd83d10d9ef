"""Callers looping on the topic listing, against a real `pushsvc serve` holding thousands of
topics, while a legitimate producer POSTs: a listing call costs the server a page of CPU, not
every topic (`pushsvc.core.topic_pages`), and the producer is served throughout.

What decides is the server's CPU per listing call (read from /proc: CPU time, which a loaded
machine stretches far less than wall time); the producer's latency beside it is a liveness
bound, generous for a 2-core machine running the rest of the suite.

Most callers ask `GET /topics` as a script would (the default page, again and again); one
crawls every page at the largest `?limit=`, the most a caller may ask per call; one loops on
`GET /anomalies` (no rule scores anomalies here: it has no topic to read). Before pages, every
such call read every topic while the producer's POST waited behind it (docs/performance.md,
"Hostile clients", has the figures at scale).
"""

from __future__ import annotations

import contextlib
import http.client
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, request
from harness.procfs import cpu_seconds

from pushsvc.core.topic_pages import MAX_LIMIT

pytestmark = pytest.mark.slow

TOPICS = 10_000
DEFAULT_PAGE_CALLERS = 6
CRAWLERS = 1
ANOMALY_CALLERS = 1
PRODUCING_S = 3.0
# A call of these callers cost the server 0.54 ms of CPU on average; 14.4 ms when every call
# listed every topic (the code before pages, put back for a run). The producer's POSTs among
# them took 4-37 ms on average, and 27-750 ms before pages: too close, under the whole
# suite's load, to tell the two apart (a liveness bound only).
CPU_PER_CALL_BOUND_S = 0.005
MEAN_BOUND_S = 0.5


@pytest.fixture(scope="module")
def crowded() -> Iterator[PushsvcProcess]:
    """`pushsvc serve` holding TOPICS topics, one event each."""
    # One client makes them all: its share of the topics is the table.
    table = str(TOPICS + 10)
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--max-topics", table, "--max-topics-per-publisher", table
    ).start()
    try:
        names = [f"crowd.{n:05d}" for n in range(TOPICS)]
        makers = [threading.Thread(target=_create, args=(proc.port, names[i::4])) for i in range(4)]
        for maker in makers:
            maker.start()
        for maker in makers:
            maker.join()
        status, _, body = request(proc.port, "GET", f"/topics?limit=1&after=crowd.{TOPICS - 2:05d}")
        assert status == 200 and b"crowd.%05d" % (TOPICS - 1) in body  # all of them made
        yield proc
    finally:
        proc.stop()


def _create(port: int, names: Sequence[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for name in names:
            _post(conn, name)
    finally:
        conn.close()


def _post(conn: http.client.HTTPConnection, topic: str) -> None:
    conn.request(
        "POST", f"/topics/{topic}/events", b'{"value": 1}', {"Content-Type": "application/json"}
    )
    answer = conn.getresponse()
    answer.read()
    assert answer.status == 202


# A caller, in a process of its own (threads of this one would share its GIL with the
# producer, and throttle the attack to what one interpreter parses): it prints "ready" once
# its first call is answered, and calls until the file named by its last argument exists.
CALLER = """
import http.client, os, re, sys
port, mode, limit, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
crawl = mode == "crawl"
next_ = re.compile(rb'"next":"([^"]+)"')
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
after, calls = None, 0
while calls == 0 or not os.path.exists(stop):
    path = "/anomalies" if mode == "anomalies" else "/topics"
    if crawl:
        path += "?limit=" + limit + ("" if after is None else "&after=" + after)
    conn.request("GET", path)
    answer = conn.getresponse()
    body = answer.read()
    assert answer.status == 200, body[:200]
    calls += 1
    if calls == 1:
        print("ready", flush=True)
    found = next_.search(body) if crawl else None
    after = found.group(1).decode() if found else None
print(calls, flush=True)
"""


@contextlib.contextmanager
def _callers(port: int, stop: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """DEFAULT_PAGE_CALLERS callers of the default page, CRAWLERS of every page and
    ANOMALY_CALLERS of the anomaly ranking, each under way (its first call answered) on
    entry; stopped, and waited for, on exit."""
    modes = ["page"] * DEFAULT_PAGE_CALLERS + ["crawl"] * CRAWLERS
    modes += ["anomalies"] * ANOMALY_CALLERS
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CALLER, str(port), mode, str(MAX_LIMIT), str(stop)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield procs
    finally:
        stop.touch()
        for proc in procs:
            try:
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()


def _produce(port: int, seconds: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    took = []
    try:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            started = time.perf_counter()
            _post(conn, "producer")
            took.append(time.perf_counter() - started)
    finally:
        conn.close()
    return took


def test_a_producer_stays_fast_while_callers_loop_on_the_topic_listing(
    crowded: PushsvcProcess, tmp_path: Path
) -> None:
    with _callers(crowded.port, tmp_path / "stop") as callers:
        cpu_before = cpu_seconds(crowded.pid)
        took = _produce(crowded.port, PRODUCING_S)
        cpu = (cpu_seconds(crowded.pid) or 0.0) - (cpu_before or 0.0)
    calls = sum(int(proc.communicate()[0]) for proc in callers)
    cuts = statistics.quantiles(took, n=100, method="inclusive")
    mean, p50, p99 = statistics.fmean(took), cuts[49], cuts[98]
    seen = (
        f"the server spent {cpu:.2f} s of CPU while {len(callers)} callers made {calls} "
        f"listing calls and the producer's {len(took)} POSTs took {mean * 1000:.1f} ms on "
        f"average (p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.0f} ms)"
    )
    assert calls > len(callers), seen
    # The callers' calls, and the producer's few POSTs, are all the server did meanwhile.
    assert cpu / calls < CPU_PER_CALL_BOUND_S, seen
    assert mean < MEAN_BOUND_S, seen
