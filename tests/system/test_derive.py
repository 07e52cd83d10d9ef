"""Derived metrics (`[[derive]]`) end to end, on the embedded broker and on Redis: the derived
events equal the pandas oracle (`support.derive_oracle`) to 1e-9, undefined values append
nothing, producers cannot post to a derived topic, `GET /rules` shows the rules, and the
derived topic has windows, series, alerts and streams like any topic."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

from support.derive_oracle import Term, assert_close, derived_events, divide, expected

S = 1_000_000
BASE = 1_763_700_000 * S
LATENESS = 5 * S

MIX = (
    "(sum[20s](shop.paid) - 2.5 * mean[10s](shop.checkout)) / "
    "(max[10s](shop.paid) - min[10s](shop.paid)) + rate[20s](shop.checkout) * -1"
)
RULES = f"""
[[rule]]
topics = ["shop.*"]
windows = ["10s"]
stats = ["count", "mean", "max"]
series = ["1s:15m", "10s:1h"]

[[derive]]
topic = "shop.conversion"
every = "1s"
value = "count[5s](shop.paid) / count[5s](shop.checkout)"

[[derive]]
topic = "shop.mix"
every = "10s"
value = "{MIX}"

[[alert]]
name = "low_conversion"
topics = ["shop.conversion"]
when = "mean[10s] < 0.5"
"""


def _events(seed: int) -> dict[str, list[tuple[float, int]]]:
    """Two sources over 90 s, with no checkout in [30 s, 45 s) (conversions there are
    undefined: nothing is appended) and one paid value repeated (min == max: shop.mix
    divides by zero in some buckets)."""
    rng = random.Random(seed)
    checkout, paid = [], []
    for i in range(900):
        ts = BASE + i * 100_000 + rng.randrange(100_000)
        if not 30 * S <= ts - BASE < 45 * S and rng.random() < 0.6:
            checkout.append((round(rng.uniform(1, 100), 3), ts))
        if rng.random() < 0.25:
            value = 7.0 if 60 * S <= ts - BASE < 80 * S else round(rng.uniform(-5, 50), 3)
            paid.append((value, ts))
    return {"shop.checkout": checkout, "shop.paid": paid}


def _post_in_time_order(port: int, sources: dict[str, list[tuple[float, int]]]) -> None:
    merged = sorted((ts, topic, value) for topic, events in sources.items() for value, ts in events)
    for ts, topic, value in merged:
        status, body = post(port, topic, {"value": value, "ts": ts / S})
        assert status == 202, body


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[PushsvcProcess]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    env = {}
    redis_server = None
    if request.param == "redis":
        redis_server = RedisServer().start()
        env = {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix}
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules), env=env).start()
    yield proc
    proc.stop()
    if redis_server is not None:
        redis_server.stop()


def _conversion(term: Term) -> float | None:
    return divide(term("count", 5 * S, "shop.paid"), term("count", 5 * S, "shop.checkout"))


def _mix(term: Term) -> float | None:
    paid_sum, mean = term("sum", 20 * S, "shop.paid"), term("mean", 10 * S, "shop.checkout")
    high, low = term("max", 10 * S, "shop.paid"), term("min", 10 * S, "shop.paid")
    rate = term("rate", 20 * S, "shop.checkout")
    if paid_sum is None or mean is None or high is None or low is None or rate is None:
        return None
    ratio = divide(paid_sum - 2.5 * mean, high - low)
    return None if ratio is None else ratio + rate * -1


def test_derived_values_equal_the_pandas_oracle(server: PushsvcProcess) -> None:
    sources = _events(seed=7)
    _post_in_time_order(server.port, sources)
    # Close every bucket: both clocks move 20 s on.
    for topic in sources:
        assert post(server.port, topic, {"value": 1.0, "ts": (BASE + 110 * S) / S})[0] == 202
        sources[topic].append((1.0, BASE + 110 * S))
    conversion = expected(sources, S, _conversion, lateness_us=LATENESS)
    mix = expected(sources, 10 * S, _mix, lateness_us=LATENESS)
    assert len(conversion) > 60 and len(mix) >= 5
    # Undefined values appended nothing: a hole where checkout had no events.
    assert not [t for t, _ in conversion if BASE + 36 * S <= t < BASE + 45 * S]
    wait_until(
        lambda: (
            len(derived_events(server.port, "shop.conversion")) >= len(conversion)
            and len(derived_events(server.port, "shop.mix")) >= len(mix)
        ),
        timeout=30,
        what="every boundary was derived",
    )
    assert_close(derived_events(server.port, "shop.conversion"), conversion)
    assert_close(derived_events(server.port, "shop.mix"), mix)
    # Nothing more comes, and nothing twice.
    assert_close(derived_events(server.port, "shop.conversion"), conversion)
    text = request(server.port, "GET", "/metrics")[2].decode()
    counted = dict(
        re.findall(r'^pushsvc_derived_boundaries_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    )
    assert counted == {
        "appended": f"{len(conversion) + len(mix)}.0",
        "replayed": "0.0",
        "late": "0.0",
    }

    # A producer cannot post to a derived topic: 400 with a JSON error, nothing changed.
    before = request(server.port, "GET", "/topics/shop.conversion/stats")[2]
    status, body = post(server.port, "shop.conversion", {"value": 1.0, "ts": BASE / S + 200})
    assert status == 400 and body["error"]["code"] == "derived_topic", body
    assert "derived metric" in body["error"]["message"]
    assert request(server.port, "GET", "/topics/shop.conversion/stats")[2] == before
    assert_close(derived_events(server.port, "shop.conversion"), conversion)


def test_get_rules_shows_the_derive_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    try:
        status, _, body = request(proc.port, "GET", "/rules")
        assert status == 200
        assert json.loads(body)["derive"] == [
            {
                "derive": 1,
                "topic": "shop.conversion",
                "every": "1s",
                "value": "count[5s](shop.paid) / count[5s](shop.checkout)",
                "sources": ["shop.paid", "shop.checkout"],
            },
            {
                "derive": 2,
                "topic": "shop.mix",
                "every": "10s",
                "value": MIX,
                "sources": ["shop.paid", "shop.checkout"],
            },
        ]
    finally:
        proc.stop()


def test_a_derived_topic_streams_windows_series_and_alerts(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    try:
        with SSEClient(proc.port, "/topics/shop.conversion/stream?series=1s") as stream:
            stream.next_data("snapshot")
            # One checkout and one paid a second for 8 s, then checkouts only: conversion is
            # 1.0, then falls to 0 (the alert fires).
            for i in range(30):
                ts = (BASE + i * S) / S
                assert post(proc.port, "shop.checkout", {"value": 1.0, "ts": ts})[0] == 202
                if i < 8 or i == 29:
                    assert post(proc.port, "shop.paid", {"value": 1.0, "ts": ts})[0] == 202
            updates: list[dict[str, Any]] = []
            points: list[dict[str, Any]] = []
            while len(points) < 3:
                message = stream.next(timeout=20)
                if message.event == "stats":
                    updates.append(json.loads(message.data))
                elif message.event == "point":
                    points.append(json.loads(message.data))
        first = updates[0]
        assert first["topic"] == "shop.conversion" and first["reason"] == "event"
        assert first["event"] == {"value": 1.0, "ts": (BASE + S) / S, "tags": {}}
        assert first["windows"]["10s"]["count"] == 1
        assert points[0]["resolution"] == "1s" and points[0]["point"]["mean"] == 1.0
        status, _, body = request(proc.port, "GET", "/topics/shop.conversion/series?resolution=1s")
        assert status == 200 and json.loads(body)["points"][0]["t"] == (BASE + S) / S

        def fired() -> list[dict[str, object]]:
            status, _, body = request(proc.port, "GET", "/topics/_alerts/history")
            assert status == 200
            return [u for u in json.loads(body)["updates"] if u["topic"] == "shop.conversion"]

        wait_until(lambda: fired(), timeout=20, what="the derived topic's alert changed")
        assert fired()[0]["alert"] == "low_conversion"
    finally:
        proc.stop()


@pytest.mark.redis
def test_a_redis_producer_cannot_post_to_a_derived_topic_either(
    tmp_path: Path, prefix: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    redis_server = RedisServer().start()
    env = {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix}
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules), env=env).start()
    try:
        wait_until(lambda: any("bridge: bridging" in line for line in proc.output), timeout=10)
        client = redis.Redis(port=redis_server.port)
        assert client.publish(f"{prefix}ingest:shop.conversion", b'{"value": 1}') == 1
        assert client.publish(f"{prefix}ingest:shop.paid", b'{"value": 1}') == 1
        client.close()

        def rejected() -> float:
            text = request(proc.port, "GET", "/metrics")[2].decode()
            found = re.search(
                r'^pushsvc_bridge_rejected_total\{reason="derived_topic"\} (\S+)$', text, re.M
            )
            return float(found[1]) if found else 0.0

        wait_until(lambda: rejected() == 1, timeout=10, what="the message was refused")
        wait_until(
            lambda: request(proc.port, "GET", "/topics/shop.paid/stats")[0] == 200, timeout=10
        )
        assert request(proc.port, "GET", "/topics/shop.conversion/stats")[0] == 404
    finally:
        proc.stop()
        redis_server.stop()
