"""`/metrics` of `pushsvc serve --workers N`: one scrape Prometheus can use, whichever worker
answers it, the aggregator's gauges included, through workers killed and started again."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness.live import SRC, PushsvcProcess, SSEClient, post, wait_until
from harness.procfs import descendants

from support.scrapes import Key, Scrapes, key

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PARTITIONS = 4
STREAMS = 4
ACCEPTED = key("pushsvc_events_accepted_total")
DELIVERIES = key("pushsvc_deliveries_total")
OWNED = key("pushsvc_partitions_owned")
MEMBERS = key("pushsvc_aggregators_live")
PUBLISHED = key("pushsvc_updates_published_total")


def _role_pids(server: PushsvcProcess, role: str) -> set[int]:
    assert server.proc is not None
    found = set()
    for pid in descendants(server.proc.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pushsvc" in argv and role.encode() in argv:
            found.add(pid)
    return found


def _metrics_dir(pid: int) -> str | None:
    """Where the supervisor had its children share their metrics."""
    for variable in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = variable.decode().partition("=")
        if name == "PROMETHEUS_MULTIPROC_DIR":
            return value
    return None


def _post_and_ask_who(port: int, topic: str, events: int) -> str:
    """POST `events` events and scrape on the same connection: the pid of the worker that
    accepted them."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = "[" + ",".join('{"value": 1}' for _ in range(events)) + "]"
        conn.request("POST", f"/topics/{topic}/events", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 202, reply.read()
        reply.read()
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    line = next(line for line in text.splitlines() if line.startswith("pushsvc_process_info{"))
    return line.split('pid="', 1)[1].split('"', 1)[0]


def _wait_for(scrapes: Scrapes, sample: Key, value: float, timeout: float = 10) -> None:
    """Scrape until `sample` reads `value` (a process's own counts reach its files within a
    second); fails naming the last reading."""
    deadline = time.monotonic() + timeout
    seen = scrapes.take().get(sample)
    while seen != value:
        assert time.monotonic() < deadline, f"{sample} read {seen}, not {value}"
        time.sleep(0.1)
        seen = scrapes.take().get(sample)


def test_workers_answer_metrics_as_one_through_killed_workers_and_aggregator(topic: str) -> None:
    # No series: a closed bucket's point is a published update too, and a bucket closes
    # whenever the events of this test come further apart than the lateness (a worker's
    # restart on a loaded machine), which would make the published count more than the events.
    server = PushsvcProcess(
        "serve", "--tick", "0", "--heartbeat", "1s", "--workers", "2",
        "--partitions", str(PARTITIONS), "--lease", "1s", "--series", "none",
    ).start()  # fmt: skip
    assert server.proc is not None
    streams: list[SSEClient] = []
    try:
        wait_until(lambda: len(_role_pids(server, "web")) == 2, timeout=20)
        wait_until(lambda: sum("web listening on" in x for x in server.output) == 2, timeout=20)
        server.wait_for_log("took the lease")
        shared = _metrics_dir(min(_role_pids(server, "web")))
        for _ in range(STREAMS):  # the kernel spreads them over the workers
            stream = SSEClient(server.port, f"/topics/{topic}/stream")
            stream.next_data("snapshot")
            streams.append(stream)
        scrapes = Scrapes(server.port)

        # Events posted between scrapes, each scrape answered by either worker: every counter
        # only grows, and the events accepted are those of both workers.
        posted = 0
        while scrapes.taken < 8 or len(scrapes.answered_by) < 2:
            assert scrapes.taken < 80, "every scrape reached one worker"
            batch = [{"value": float(n)} for n in range(scrapes.taken % 3 + 1)]
            assert post(server.port, topic, batch)[0] == 202
            posted += len(batch)
            assert scrapes.take()[ACCEPTED] == posted
        for stream in streams:
            assert len(stream.take(posted)) == posted

        # The aggregator runs in a process of its own, with no HTTP: its gauges are here.
        def aggregated(now: dict[Key, float]) -> bool:
            return (
                now.get(key("pushsvc_topics")) == 1
                and now.get(OWNED) == PARTITIONS
                and now.get(MEMBERS) == 1
                and now.get(PUBLISHED) == posted
                and now.get(DELIVERIES) == STREAMS * posted
            )

        wait_until(lambda: aggregated(scrapes.take()), timeout=10, interval=0.1)
        # Both workers' delivery latencies in one histogram, cumulative as Prometheus reads it.
        now = scrapes.take()
        buckets = sorted(
            (float(dict(labels)["le"]), count)
            for (name, labels), count in now.items()
            if name == "pushsvc_delivery_seconds_bucket"
        )
        assert [count for _, count in buckets] == sorted(count for _, count in buckets)
        assert buckets[-1] == (float("inf"), now[key("pushsvc_delivery_seconds_count")])
        assert buckets[-1][1] > 0

        # A web worker killed: what it counted stays counted, nothing goes backwards.
        victim = _post_and_ask_who(server.port, topic, 3)
        posted += 3
        for stream in streams:
            assert len(stream.take(3)) == 3
        wait_until(lambda: aggregated(scrapes.take()), timeout=10, interval=0.1)
        os.kill(int(victim), signal.SIGKILL)
        server.wait_for_log("pushsvc web exited with -9; starting it again")
        wait_until(lambda: sum("web listening on" in x for x in server.output) == 3, timeout=20)
        scrapes.answered_by.clear()
        while len(scrapes.answered_by) < 2:  # the survivor and the new worker
            assert scrapes.taken < 200, "the restarted worker answered no scrape"
            assert post(server.port, topic, {"value": 2.0})[0] == 202
            posted += 1
            assert scrapes.take()[ACCEPTED] == posted
        assert victim not in scrapes.answered_by
        _wait_for(scrapes, PUBLISHED, posted)

        # The aggregator killed: its counts stay, its gauges leave with it (or the partitions
        # would be owned twice once its successor holds them).
        (aggregator,) = _role_pids(server, "aggregate")
        os.kill(aggregator, signal.SIGKILL)
        server.wait_for_log("pushsvc aggregate exited with -9; starting it again")
        wait_until(
            lambda: sum("active from log entry" in x for x in server.output) >= 2 * PARTITIONS,
            timeout=30,
            what="the new aggregator held every partition",
        )
        published = scrapes.take()[PUBLISHED]
        assert post(server.port, topic, {"value": 3.0})[0] == 202
        posted += 1

        # Published by the new aggregator (the dead one's count is final), so its gauges are in
        # its files: with the dead one's, the partitions would be owned more than once.
        def succeeded(now: dict[Key, float]) -> bool:
            return (
                now[PUBLISHED] > published
                and now.get(key("pushsvc_topics")) == 1
                and now.get(OWNED) == PARTITIONS
                and now.get(MEMBERS) == 1
            )

        wait_until(
            lambda: succeeded(scrapes.take()),
            timeout=15,
            interval=0.1,
            what="the live aggregator's gauges alone",
        )
        assert scrapes.take()[ACCEPTED] == posted
        for stream in streams:
            stream.close()
    finally:
        for stream in streams:
            stream.close()
        assert server.stop() == 0
    # Removed: the next run starts from zero, as a restarted process does for Prometheus.
    assert shared is not None and not Path(shared).exists()


def test_an_unusable_prometheus_multiproc_dir_stops_serve_with_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent")
    result = subprocess.run(
        [sys.executable, "-m", "pushsvc", "serve", "--port", "0"],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": missing},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PROMETHEUS_MULTIPROC_DIR" in lines[0] and missing in lines[0]


def test_a_scrape_while_another_process_creates_its_metrics_file_still_answers(
    tmp_path: Path, topic: str
) -> None:
    """A process creates its file empty, then sizes it: a scrape in between skips it."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    server = PushsvcProcess(
        "serve", "--tick", "0", env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    ).start()
    try:
        assert post(server.port, topic, [{"value": 1.0}, {"value": 2.0}])[0] == 202
        (shared / "counter_4194305.db").touch()  # above any pid: no process writes it
        assert Scrapes(server.port).take()[ACCEPTED] == 2
    finally:
        assert server.stop() == 0
    assert not list(shared.glob(f"gauge_*_{server.pid}.db"))  # it took its gauges with it
