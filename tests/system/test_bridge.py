"""Producers on Redis: `PUBLISH {prefix}ingest:{topic}` into the event log through the bridge,
with the POST's validation; one bridge at a time, a standby taking over after kill -9."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
import redis
from harness.live import SRC, PushsvcProcess, SSEClient, request, wait_until
from harness.net import free_port
from harness.redis_server import RedisServer
from test_bad_input import CASES

pytestmark = pytest.mark.redis

JSON_TYPES = {"application/json", "application/x-ndjson"}


def _env(server: RedisServer, prefix: str) -> dict[str, str]:
    return {
        "PUSHSVC_REDIS_URL": server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_LEASE": "1s",
    }


def _aggregator(env: dict[str, str]) -> PushsvcProcess:
    return PushsvcProcess("aggregate", env=env, http=False).start()


def _bridging(process: PushsvcProcess) -> bool:
    return any("bridge: bridging" in line for line in process.output)


@pytest.fixture
def bridge(redis_server: RedisServer, prefix: str) -> Iterator[PushsvcProcess]:
    """An aggregator process, bridging."""
    aggregator = _aggregator(_env(redis_server, prefix))
    wait_until(lambda: _bridging(aggregator), timeout=10)
    yield aggregator
    aggregator.stop()


@pytest.fixture
def deployment(
    redis_server: RedisServer, prefix: str, bridge: PushsvcProcess
) -> Iterator[tuple[PushsvcProcess, str]]:
    """A web process beside the bridging aggregator, on one prefix."""
    web = PushsvcProcess("web", env=_env(redis_server, prefix)).start()
    yield web, prefix
    web.stop()


def _metrics(web: PushsvcProcess) -> str:
    return request(web.port, "GET", "/metrics")[2].decode()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


def test_redis_cli_and_redis_py_publish_into_the_statistics(
    deployment: tuple[PushsvcProcess, str], redis_server: RedisServer, topic: str
) -> None:
    web, prefix = deployment
    channel = f"{prefix}ingest:{topic}"
    with SSEClient(web.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        cli = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "PUBLISH", channel, '{"value": 3}'],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        assert cli.stdout.strip() == "1"  # one bridge received it
        client = redis.Redis(port=redis_server.port)
        client.publish(channel, orjson.dumps([{"value": 5}, {"value": 7, "tags": {"a": "b"}}]))
        client.publish(channel, b'{"value": 9}\n{"value": 11}\n')
        client.close()
        updates = [data for _, data in stream.take(5)]
    assert [u["event"]["value"] for u in updates] == [3.0, 5.0, 7.0, 9.0, 11.0]
    assert updates[2]["event"]["tags"] == {"a": "b"}
    window = updates[-1]["windows"]["1m"]
    assert (window["count"], window["sum"], window["mean"]) == (5, 35.0, 7.0)
    assert (window["min"], window["max"]) == (3.0, 11.0)
    assert _metric(_metrics(web), "pushsvc_bridge_events_total") == 5


def test_every_bad_message_is_refused_counted_by_reason_and_changes_nothing(
    deployment: tuple[PushsvcProcess, str],
    bridge: PushsvcProcess,
    redis_server: RedisServer,
    topic: str,
) -> None:
    web, prefix = deployment
    channel = f"{prefix}ingest:{topic}"
    client = redis.Redis(port=redis_server.port)
    rows = [(name, body, code) for name, body, ctype, _, code in CASES if ctype in JSON_TYPES]
    with SSEClient(web.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        for _, body, _ in rows:
            assert client.publish(channel, body) == 1
        for _ in range(50):  # a broken producer repeating itself: logged once, counted each time
            client.publish(channel, b'{"value": "NaN"}')
        client.publish(f"{prefix}ingest:-bad topic", b'{"value": 1}')
        client.publish(channel, b'{"value": 42}')  # the bridge is still there afterwards
        _, update = stream.next_data()
    client.close()
    # Nothing the bad messages carried reached the log: the next update is the good one's.
    assert update["event"]["value"] == 42.0 and update["windows"]["1m"]["count"] == 1
    # The bridge counts a batch's refusals after appending what it accepted, so the good
    # update can stream before the last counts are written: wait for them, then compare.
    expected = len(rows) + 50 + 1
    metrics, rejected = "", {}

    def counted() -> bool:
        nonlocal metrics, rejected
        metrics = _metrics(web)
        pattern = r'^pushsvc_bridge_rejected_total\{reason="(\w+)"\} (\S+)$'
        rejected = {reason: float(n) for reason, n in re.findall(pattern, metrics, re.M)}
        return sum(rejected.values()) >= expected

    wait_until(counted, what=f"{expected} refusals are counted")
    assert sum(rejected.values()) == expected
    # Many invalid events on this topic (the battery's and the 50): one log line.
    logged = [line for line in bridge.output if f"{topic!r} (invalid_event)" in line]
    assert len(logged) == 1, logged
    for name, _, code in rows:
        if code is not None:
            assert rejected.get(code, 0) >= 1, name
    assert rejected["invalid_topic"] == 1
    assert rejected["payload_too_large"] == 1
    assert _metric(metrics, "pushsvc_bridge_active") == 1


def test_a_late_message_in_a_burst_goes_to_the_late_stream_and_the_rest_keep_their_order(
    deployment: tuple[PushsvcProcess, str], redis_server: RedisServer, topic: str
) -> None:
    """A burst of one topic's messages is appended a few at a time: one message past the
    grace by the time it is appended goes to the topic's late stream, as a POST's would, and
    the others are appended in the order they were published."""
    web, prefix = deployment
    channel = f"{prefix}ingest:{topic}"
    now = time.time()
    late_at = 25  # the message there is 10 s behind the ones before it (grace 5 s)
    bodies = [
        json.dumps({"value": n, "ts": now - 10 if n == late_at else now + n / 1000})
        for n in range(60)
    ]
    bodies[40] = json.dumps([{"value": 40, "ts": now + 0.040}, {"value": 40.5, "ts": now + 0.0405}])
    client = redis.Redis(port=redis_server.port)
    with SSEClient(web.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        with client.pipeline(transaction=False) as pipe:  # one burst: they arrive together
            for body in bodies:
                pipe.publish(channel, body)
            assert pipe.execute() == [1] * len(bodies)
        client.close()
        values = [data["event"]["value"] for _, data in stream.take(60)]
    wanted = [float(n) for n in range(60) if n != late_at]
    assert values == [*wanted[:40], 40.5, *wanted[40:]]
    wait_until(
        lambda: _metric(_metrics(web), "pushsvc_bridge_events_total") == 61,
        what="every event bridged, the late one too",
    )
    late = orjson.loads(request(web.port, "GET", f"/topics/{topic}.late/history")[2])
    assert [u["event"]["value"] for u in late["updates"]] == [float(late_at)]
    assert 'pushsvc_bridge_rejected_total{reason="late_event"}' not in _metrics(web)


@dataclass
class TwoBridges:
    active: PushsvcProcess
    standby: PushsvcProcess
    web: PushsvcProcess


@pytest.fixture
def two_bridges(redis_server: RedisServer, prefix: str) -> Iterator[TwoBridges]:
    """Two aggregator processes, one bridging and one standing by, and a web process."""
    env = _env(redis_server, prefix)
    first, second = _aggregator(env), _aggregator(env)
    web = PushsvcProcess("web", env=env).start()
    try:
        wait_until(lambda: _bridging(first) or _bridging(second), timeout=10)
        active, standby = (first, second) if _bridging(first) else (second, first)
        yield TwoBridges(active, standby, web)
    finally:
        web.stop()
        for process in (first, second):
            process.kill()


class _Producer(threading.Thread):
    """PUBLISHes event n with value n every 10 ms; remembers how many bridges heard each."""

    def __init__(self, server: RedisServer, channel: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(port=server.port)
        self.channel = channel
        self.heard: list[tuple[float, int, float]] = []  # (value, receivers, sent at)
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(0.01):
            sent_at = time.monotonic()
            receivers = self.client.publish(self.channel, json.dumps({"value": n}))
            self.heard.append((float(n), receivers, sent_at))
            n += 1


def test_a_standby_bridge_takes_over_after_kill_9_and_nothing_logged_is_lost_or_doubled(
    two_bridges: TwoBridges, redis_server: RedisServer, prefix: str, topic: str
) -> None:
    active, standby, web = two_bridges.active, two_bridges.standby, two_bridges.web
    with SSEClient(web.port, f"/topics/{topic}/stream", timeout=20) as stream:
        stream.next_data("snapshot")
        producer = _Producer(redis_server, f"{prefix}ingest:{topic}")
        producer.start()
        wait_until(lambda: len(producer.heard) > 100, timeout=10)
        killed_at = time.monotonic()
        active.kill()
        wait_until(lambda: _bridging(standby), timeout=10)
        took_over = time.monotonic() - killed_at
        # Some load after the takeover too.
        wait_until(lambda: sum(t > killed_at + took_over for _, _, t in producer.heard) > 20)
        producer.stopping.set()
        producer.join(5)
        last_heard = max(v for v, r, _ in producer.heard if r)
        values = []
        while not values or values[-1] < last_heard:
            values.append(stream.next_data()[1]["event"]["value"])
    assert len(values) == len(set(values)), "an event was appended twice"
    assert values == sorted(values)
    unheard = {v for v, r, _ in producer.heard if not r}
    assert unheard, "the gap between the kill and the takeover went unnoticed"
    assert not unheard & set(values)
    # What a bridge heard, it appended, except what the killed one still held unappended:
    # its last messages, however far it lagged on a loaded machine (pub/sub is at most once).
    # So what is missing is one run of consecutive messages that ends at the kill: the next
    # one heard was sent after it. A hole anywhere else (a batch dropped while bridging,
    # or a message the standby heard) is a loss.
    appended = set(values)
    heard = [(v, t) for v, r, t in producer.heard if r]
    missing = [i for i, (v, _) in enumerate(heard) if v not in appended]
    lost = [heard[i][0] for i in missing]
    if missing:
        first, last = missing[0], missing[-1]
        assert missing == list(range(first, last + 1)), f"lost, not in one run: {lost}"
        assert last + 1 == len(heard) or heard[last + 1][1] > killed_at, (
            f"lost before the kill while later messages were appended: {lost}"
        )
        assert heard[last][1] < killed_at + took_over, f"heard by the standby, lost: {lost}"
    assert took_over < 3.0  # within the 1 s lease (plus a renewal period and start-up)
    assert _metric(_metrics(web), "pushsvc_bridge_active") == 1
    print(
        f"\nbridge takeover {took_over:.2f} s; {len(unheard)} messages published with no "
        f"bridge subscribed and {len(lost)} held by the killed one (lost, as pub/sub is); "
        f"{len(values)} appended once each"
    )


def test_pushsvc_publish_redis_url_goes_through_the_bridge_and_says_when_none_listens(
    deployment: tuple[PushsvcProcess, str], redis_server: RedisServer, topic: str
) -> None:
    web, prefix = deployment

    def publish(
        prefix: str, *values: str, url: str = redis_server.url
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pushsvc", "publish", "--redis-url", url]
        return subprocess.run(
            [*argv, "--prefix", prefix, topic, *values],
            env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    with SSEClient(web.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        done = publish(prefix, "4", "6")
        assert (done.returncode, done.stdout.strip()) == (0, "published 2 to Redis"), done.stderr
        updates = [data for _, data in stream.take(2)]
    assert updates[-1]["windows"]["1m"]["mean"] == 5.0
    unheard = publish("nobody-listens:", "1")
    assert unheard.returncode == 1
    assert "no bridge was subscribed" in unheard.stderr
    not_redis = publish(prefix, "1", url="http://127.0.0.1:1/")
    assert not_redis.returncode == 2 and "--redis-url" in not_redis.stderr
    assert "Traceback" not in not_redis.stderr
    unreachable = publish(prefix, "1", url=f"redis://127.0.0.1:{free_port()}/0")
    assert unreachable.returncode == 1 and "Redis:" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_a_bridge_paused_past_its_lease_appends_nothing_its_successor_did(
    two_bridges: TwoBridges, redis_server: RedisServer, prefix: str, topic: str
) -> None:
    # Pub/sub hands every message to both bridges while the paused one is subscribed still:
    # when it wakes, the append script's fence (its lease token) must refuse what it read.
    paused, successor, web = two_bridges.active, two_bridges.standby, two_bridges.web
    client = redis.Redis(port=redis_server.port)
    try:
        with SSEClient(web.port, f"/topics/{topic}/stream", timeout=20) as stream:
            stream.next_data("snapshot")
            paused.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            try:
                wait_until(lambda: _bridging(successor), timeout=10)
                for n in range(20):
                    assert client.publish(f"{prefix}ingest:{topic}", json.dumps({"value": n})) == 2
            finally:
                paused.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            # Awake, it reads what queued up, then finds its lease gone and stands by.
            wait_until(lambda: any("standing by" in line for line in paused.output))
            client.publish(f"{prefix}ingest:{topic}", json.dumps({"value": 99}))
            values = []
            while not values or values[-1] != 99:
                values.append(stream.next_data()[1]["event"]["value"])
        assert values == [*map(float, range(20)), 99.0]  # each once, none twice
    finally:
        client.close()
