"""Distinct counts and top values end to end, on the embedded broker and on a real
redis-server: every streamed update (the topic's windows and the event's group) against
pandas' `nunique` and `value_counts` over the same windows (time, long and count windows),
exactly for a few values and within the sketches' promises for many; `/stats`, snapshots,
`GET /rules`; and an alert on a distinct count."""

from __future__ import annotations

import json
import random
import statistics
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pandas as pd
import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.client import Client, Snapshot, StreamUpdate, TopValue
from pushsvc.core.event import Event
from pushsvc.core.rules_shape import RuleView
from pushsvc.rules.analytics import default_rule, parse_rules
from support.tag_oracle import Kind, distinct, frame, held, top, top_problems

S = 1_000_000
RULES = """
[[rule]]
topics = ["shop.*"]
windows = ["10s", "2m"]
exact_percentiles_up_to = "10s"
last = [50]
stats = ["count"]
distinct = ["user"]
top = [{ tag = "product", k = 3 }]
group_by = ["region"]

[[alert]]
name = "crowd"
topics = ["shop.*"]
when = "distinct_user[10s] > 1100"
"""
KINDS = (Kind("10s", 10 * S), Kind("2m", 120 * S, long=True), Kind("last50", last=50))
TAGS = ("user", "product", "region")
T0 = 1_763_700_000 * S


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("tags") / "rules.toml"
    rules.write_text(RULES)
    # Each test posts every batch before it reads (several MB of updates with their top
    # lists): a stream may hold them all, not conflate past the default 1 MiB.
    args = ["serve", "--tick", "0", "--rules", str(rules)]
    args += ["--max-stream-buffer", str(64 << 20)]
    server = None
    if request.param == "redis":
        server = RedisServer().start()
        args += ["--redis-url", server.url, "--prefix", "tags:"]
    proc = PushsvcProcess(*args).start()
    yield proc
    proc.stop()
    if server is not None:
        server.stop()


def _events(n: int, seed: int, users: int, products: int, rate: float) -> list[dict[str, Any]]:
    """n events at `rate` a second from T0, one in ten late by up to 3 s (within the allowed
    lateness), a few without one of the tags."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + int(i * S / rate)
        if i and rng.random() < 0.1:
            ts -= rng.randrange(3 * S)
        tags = {
            "user": f"u{rng.randrange(users)}",
            "product": f"p{int(products * rng.random() ** 3)}",
            "region": rng.choice(["eu", "us", "asia"]),
        }
        if rng.random() < 0.05:
            del tags[rng.choice(TAGS)]
        out.append({"value": 1.0, "ts": ts / S, "tags": tags})
    return out


def _stream(port: int, topic: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with SSEClient(port, f"/topics/{topic}/stream", timeout=60) as stream:
        stream.next_data("snapshot")
        for start in range(0, len(events), 1000):
            assert post(port, topic, events[start : start + 1000])[0] == 202
        return [data for _, data in stream.take(len(events))]


def _rows(events: list[dict[str, Any]]) -> pd.DataFrame:
    return frame([(round(e["ts"] * S), e["tags"]) for e in events], TAGS)


def test_few_values_are_exact_in_every_window_of_the_topic_and_its_groups(
    shop: PushsvcProcess,
) -> None:
    events = _events(700, seed=1, users=40, products=12, rate=4.0)
    updates = _stream(shop.port, "shop.few", events)
    data = _rows(events)
    clock = 0
    for i, update in enumerate(updates):
        assert update["event"]["tags"] == events[i]["tags"]
        clock = max(clock, round(events[i]["ts"] * S))
        seen = data.iloc[: i + 1]
        region = update["group"]["key"]["region"]
        mine = seen[seen["region"].isna()] if region is None else seen[seen["region"] == region]
        for windows, rows in ((update["windows"], seen), (update["group"]["windows"], mine)):
            for kind in KINDS:
                inside = held(rows, clock, kind)
                got = windows[kind.label]
                assert got["distinct_user"] == distinct(inside, "user"), (i, kind)
                assert got["top_product"] == top(inside, "product", 3), (i, kind)
    # /stats is the latest update; a snapshot carries the same windows and groups.
    _, _, body = request(shop.port, "GET", "/topics/shop.few/stats")
    stats = json.loads(body)
    assert stats["windows"] == updates[-1]["windows"]
    with SSEClient(shop.port, "/topics/shop.few/stream") as again:
        _, snapshot = again.next_data("snapshot")
    assert snapshot["topics"]["shop.few"]["windows"] == updates[-1]["windows"]
    grouped = {g["key"]["region"]: g["windows"] for g in snapshot["topics"]["shop.few"]["groups"]}
    assert "top_product" in grouped["eu"]["2m"]


def test_many_values_keep_the_sketches_promises(shop: PushsvcProcess) -> None:
    events = _events(8000, seed=2, users=20_000, products=6000, rate=2000.0)
    updates = _stream(shop.port, "shop.many", events)
    data = _rows(events)
    errors = []
    approximate = 0
    clock = 0
    clocks = []
    for e in events:
        clock = max(clock, round(e["ts"] * S))
        clocks.append(clock)
    for i in range(1200, len(events), 97):
        seen = data.iloc[: i + 1]
        for kind in KINDS[:2]:
            inside = held(seen, clocks[i], kind)
            got = updates[i]["windows"][kind.label]
            want = distinct(inside, "user")
            if not kind.long:  # it holds its events: exact at any number of values
                assert got["distinct_user"] == want, (i, kind.label)
            errors.append(abs(got["distinct_user"] - want) / want)
            assert errors[-1] <= 0.04, (i, kind.label, got["distinct_user"], want)
            assert not top_problems(got["top_product"], inside, "product", 3), (i, kind)
            approximate += any("error" in entry for entry in got["top_product"])
        last = held(seen, clocks[i], KINDS[2])
        assert updates[i]["windows"]["last50"]["distinct_user"] == distinct(last, "user")
    assert statistics.fmean(errors) <= 0.015
    assert approximate  # the long window's sub-buckets ran out of counters


def test_get_rules_describes_distinct_and_top(shop: PushsvcProcess) -> None:
    _, _, body = request(shop.port, "GET", "/rules")
    (rule,) = json.loads(body)["rules"]
    # What /openapi.json promises of it (its schema is generated from RuleView), strictly.
    assert msgspec.to_builtins(msgspec.convert(rule, RuleView)) == rule
    # 10s and last50 hold their events (counted exactly at any count); 2m is a long window.
    assert rule["distinct"] == [
        {
            "tag": "user",
            "stat": "distinct_user",
            "exact_in": ["10s", "last50"],
            "exact_up_to": 1000,
            "relative_error": 0.01,
        }
    ]
    assert rule["top"] == [
        {
            "tag": "product",
            "k": 3,
            "stat": "top_product",
            "exact_in": ["10s", "last50"],
            "exact_up_to": 1000,
        }
    ]


def test_a_distinct_count_fires_an_alert(shop: PushsvcProcess) -> None:
    events = _events(1500, seed=3, users=100_000, products=10, rate=500.0)
    with SSEClient(shop.port, "/topics/_alerts/stream", timeout=60) as alerts:
        alerts.next_data("snapshot")
        assert post(shop.port, "shop.crowd", events)[0] == 202
        _, change = alerts.next_data("alert")
    assert (change["alert"], change["topic"], change["state"]) == ("crowd", "shop.crowd", "firing")
    assert change["value"] > 1100


def test_a_projection_may_name_them(shop: PushsvcProcess) -> None:
    path = "/topics/shop.proj/stream?stats=distinct_user,top_product&windows=10s"
    with SSEClient(shop.port, path) as stream:
        stream.next_data("snapshot")
        post(shop.port, "shop.proj", {"value": 1, "tags": {"user": "a", "product": "b"}})
        _, update = stream.next_data()
    assert update["windows"] == {
        "10s": {"distinct_user": 1, "top_product": [{"value": "b", "count": 1}]}
    }


@pytest.mark.redis
@pytest.mark.slow
def test_a_data_dir_restart_answers_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """`serve --data-dir`: stopped halfway through and started again, every update after the
    restart is byte for byte what one aggregator fed every event computes (long and count
    windows and groups come back from the checkpoint, the exact windows from the log)."""
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES)
    args = ("serve", "--tick", "0", "--rules", str(rules_path), "--data-dir", str(tmp_path / "d"))
    events = _events(3000, seed=4, users=1500, products=2000, rate=400.0)
    topic = "shop.restart"
    first = PushsvcProcess(*args, "--series", "none").start()
    try:
        before = _stream(first.port, topic, events[:1800])
    finally:
        assert first.stop() == 0
    second = PushsvcProcess(*args, "--series", "none").start()
    try:
        after = _stream(second.port, topic, events[1800:])
    finally:
        assert second.stop() == 0
    rules = parse_rules(tomllib.loads(RULES), default_rule((10 * S,), ("count",)))
    reference = Aggregator(rules=rules, wall_clock=lambda: 0, topic_ttl_us=3600 * S)
    expected = []
    for e in events:
        event = Event(e["value"], round(e["ts"] * S), e["tags"])
        drafts = reference.apply_events(topic, [event])
        expected += [orjson.loads(d.body) for d in drafts if d.topic == topic]
    got = [{k: v for k, v in u.items() if k != "id"} for u in before + after]
    assert len(got) == len(expected)
    for i, (update, want) in enumerate(zip(got, expected, strict=True)):
        assert update == want, i


def test_the_python_client_types_them(shop: PushsvcProcess) -> None:
    topic = "shop.client"
    batch = [
        {"value": 1, "ts": T0 / S + i, "tags": {"user": f"u{i % 3}", "product": f"p{i % 2}"}}
        for i in range(5)
    ]
    with Client(shop.base) as client:
        messages = client.subscribe(topic)
        assert isinstance(next(messages), Snapshot)
        assert post(shop.port, topic, batch)[0] == 202
        updates = [next(messages) for _ in batch]
        messages.close()
        last = updates[-1]
        assert isinstance(last, StreamUpdate)
        assert last.distinct("10s", "user") == 3 and last.distinct("10s", "nobody") is None
        assert last.top("2m", "product") == [TopValue("p0", 3), TopValue("p1", 2)]
        # History: the updates as streamed, and a table with the distinct counts.
        frame = client.history(topic)
        assert list(frame["10s_distinct_user"]) == [1, 2, 3, 3, 3]
        assert "10s_top_product" not in frame.columns


def test_series_points_carry_the_distinct_count_of_their_bucket(shop: PushsvcProcess) -> None:
    """The server's tiers (1 s for 15 min, 1 m for a day): each closed bucket's point counts
    its different users, as pandas' `resample(...).nunique()` does, on both brokers."""
    events = _events(3000, seed=5, users=300, products=10, rate=20.0)  # 150 s of events
    topic = "shop.series"
    for start in range(0, len(events), 1000):
        assert post(shop.port, topic, events[start : start + 1000])[0] == 202
    closing = {"value": 1.0, "ts": events[-1]["ts"] + 600, "tags": {"user": "late"}}
    assert post(shop.port, topic, closing)[0] == 202

    def applied() -> bool:  # on Redis a 202 means logged: the aggregator applies it soon
        status, _, body = request(shop.port, "GET", f"/topics/{topic}/stats")
        return status == 200 and json.loads(body)["ts"] == closing["ts"]

    wait_until(applied, what="the closing event applied")
    data = pd.DataFrame(
        {"user": [e["tags"].get("user") for e in events]},
        index=pd.to_datetime([round(e["ts"] * S) for e in events], unit="us", utc=True),
    )
    for resolution, rule in (("1s", "1s"), ("1m", "1min")):
        want = data["user"].resample(rule).nunique()[data["user"].resample(rule).size() > 0]
        _, _, body = request(shop.port, "GET", f"/topics/{topic}/series?resolution={resolution}")
        points = [p for p in json.loads(body)["points"] if p["t"] < events[-1]["ts"] + 1]
        assert [round(p["t"] * S) for p in points] == list(want.index.as_unit("us").asi8)
        assert [p["distinct_user"] for p in points] == list(want)
