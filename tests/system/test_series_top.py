"""Top values in series points end to end: on the embedded broker (`pushsvc serve`) and on a
real redis-server (a web process and an aggregator), every stored point of the 1 s and 1 m
tiers, of a topic and of its groups, against pandas' `value_counts` of the bucket's events:
exact for a few values, each count within its own error of the true one (at most N/m) and
missing no value that beats the k-th listed count where one second holds 3,000 different
values (k = 10, m = 1,000). The CSV, the
`?series=` stream and the Python client carry the same lists. Through a `kill -9` of the
aggregator (the open minute, Space-Saving already, comes back from the checkpoint) and a stop
and start of `serve --data-dir`, the stored points equal an uninterrupted run's."""

from __future__ import annotations

import csv
import io
import json
import random
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pandas as pd
import pytest
import redis
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.broker.redis.keys import Keys
from pushsvc.client import Client, TopValue
from pushsvc.client.models import Point as PointMessage
from pushsvc.client.models import typed_message
from pushsvc.core.event import Event
from pushsvc.rules.analytics import default_rule, parse_rules
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.stats.top import SpaceSaving
from support.tag_oracle import top_problems

S = 1_000_000
K = 10
RULES = """
[[rule]]
topics = ["shop.*"]
windows = ["10s"]
stats = ["count"]
distinct = ["user"]
top = [{ tag = "product", k = 10 }]
group_by = ["region"]
series = ["1s:15m", "1m:24h"]
"""
TIERS = {"1s": "1s", "1m": "1min"}
REGIONS = ("eu", "us")
T0 = 1_763_700_000  # a whole minute, epoch seconds


def _steady(seed: int, start: float, seconds: int, rate: int) -> list[dict[str, Any]]:
    """`rate` events a second: 30 products (a few frequent), one event in ten late by up to
    3 s (within the allowed lateness)."""
    rng = random.Random(seed)
    out = []
    for i in range(seconds * rate):
        ts = start + i / rate
        if i and rng.random() < 0.1:
            ts -= rng.uniform(0, 3)
        tags = {
            "product": f"p{int(30 * rng.random() ** 3)}",
            "user": f"u{rng.randrange(200)}",
            "region": rng.choice(REGIONS),
        }
        out.append({"value": float(i % 7), "ts": round(ts, 6), "tags": tags})
    return out


def _crowded(seed: int, second: int) -> list[dict[str, Any]]:
    """One second of 3,000 different products once each and five hot ones 200 times each,
    shuffled: beyond m = 1,000 in that second's bucket, in each region's, and in its minute."""
    rng = random.Random(seed)
    products = [f"tail{i}" for i in range(3000)] + [f"hot{i % 5}" for i in range(1000)]
    rng.shuffle(products)
    return [
        {
            "value": 1.0,
            "ts": round(second + i / len(products), 6),
            "tags": {
                "product": p,
                "user": f"u{rng.randrange(5000)}",
                "region": rng.choice(REGIONS),
            },
        }
        for i, p in enumerate(products)
    ]


def _day(seed: int) -> tuple[list[dict[str, Any]], ...]:
    """Three parts: 150 s steady and the crowded second at T0 + 190, then 10 s steady (which
    close that second; its minute stays open), 10 s more, and 45 s more (which close it)."""
    return (
        _steady(seed, T0, 150, 8) + _crowded(seed, T0 + 190) + _steady(seed + 1, T0 + 195, 10, 8),
        _steady(seed + 2, T0 + 205, 10, 8),
        _steady(seed + 3, T0 + 215, 45, 8),
    )


def _closing(events: list[dict[str, Any]]) -> dict[str, Any]:
    """An event 10 minutes on: every bucket before it closes (the 1 s tier keeps 15)."""
    return {"value": 0.0, "ts": round(events[-1]["ts"] + 600, 6), "tags": {"region": "eu"}}


def _post(port: int, topic: str, events: list[dict[str, Any]]) -> None:
    """In batches; then until the last is applied (on Redis a 202 means logged)."""
    for start in range(0, len(events), 1000):
        status, body = post(port, topic, events[start : start + 1000])
        assert status == 202, body
    last = events[-1]

    def applied() -> bool:
        status, _, body = request(port, "GET", f"/topics/{topic}/stats")
        event = json.loads(body).get("event") if status == 200 else None
        return (
            event is not None
            and event["tags"] == last["tags"]
            and abs(event["ts"] - last["ts"]) < 1e-6
        )

    wait_until(applied, timeout=60, what="the last event applied")


def _series(port: int, topic: str, resolution: str, region: str | None) -> list[dict[str, Any]]:
    group = "" if region is None else f"&group=region:{region}"
    path = f"/topics/{topic}/series?resolution={resolution}{group}"
    status, _, body = request(port, "GET", path)
    assert status == 200, body
    answer = json.loads(body)
    assert not answer["more"]
    points: list[dict[str, Any]] = answer["points"]
    return points


def _stored(port: int, topic: str) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """Every stored point, by (tier, region: None for the topic's own)."""
    return {
        (resolution, region): _series(port, topic, resolution, region)
        for resolution in TIERS
        for region in (None, *REGIONS)
    }


def _frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product": [e["tags"].get("product") for e in events],
            "user": [e["tags"].get("user") for e in events],
            "region": [e["tags"].get("region") for e in events],
        },
        index=pd.to_datetime([round(e["ts"] * S) for e in events], unit="us", utc=True),
    )


def _check_pandas(
    stored: dict[tuple[str, str | None], list[dict[str, Any]]], events: list[dict[str, Any]]
) -> int:
    """Every stored point before the closing event against pandas; how many were counted by
    Space-Saving."""
    data = _frame(events)
    approximate = 0
    for (resolution, region), points in stored.items():
        rows = data if region is None else data[data["region"] == region]
        counts = rows["product"].resample(TIERS[resolution]).size()
        starts = counts[counts > 0].index.as_unit("us").asi8
        closed = [p for p in points if p["t"] <= events[-1]["ts"]]
        assert [round(p["t"] * S) for p in closed] == list(starts), (resolution, region)
        width = pd.Timedelta(TIERS[resolution])
        for point in closed:
            start = pd.Timestamp(round(point["t"] * S), unit="us", tz="UTC")
            inside = rows[(rows.index >= start) & (rows.index < start + width)]
            inside = inside.reset_index(drop=True)
            got = point["top_product"]
            assert top_problems(got, inside, "product", K) == [], (resolution, region, point["t"])
            approximate += any("error" in entry for entry in got)
            users = inside["user"].nunique()
            if users <= 1000:
                assert point["distinct_user"] == users
            else:
                assert abs(point["distinct_user"] - users) <= 0.04 * users
    return approximate


def _reference(
    topic: str, events: list[dict[str, Any]]
) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """The points an uninterrupted run publishes, as `_stored` holds them."""
    rules = parse_rules(tomllib.loads(RULES), default_rule((10 * S,), ("count",)))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, topic_ttl_us=3600 * S)
    out: dict[tuple[str, str | None], list[dict[str, Any]]] = {
        (resolution, region): [] for resolution in TIERS for region in (None, *REGIONS)
    }
    for e in events:
        event = Event(e["value"], round(e["ts"] * S), e["tags"])
        for draft in aggregator.apply_events(topic, [event]):
            if draft.series is not None:
                message = orjson.loads(draft.body)
                region = (message.get("group") or {}).get("region")
                out[message["resolution"], region].append(message["point"])
    return out


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("series-top") / "rules.toml"
    rules.write_text(RULES)
    if request.param == "memory":
        proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
        yield proc
        proc.stop()
        return
    with RedisServer() as server:
        env = {
            "PUSHSVC_REDIS_URL": server.url,
            "PUSHSVC_PREFIX": "series-top:",
            "PUSHSVC_TICK": "0",
            "PUSHSVC_RULES": str(rules),
        }
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
        web = PushsvcProcess("web", env=env).start()
        try:
            aggregator.wait_for_log("took the lease")
            yield web
        finally:
            web.stop()
            aggregator.stop()


def test_every_point_lists_its_buckets_top_values_as_pandas_counts_them(
    shop: PushsvcProcess,
) -> None:
    topic = "shop.day"
    events = [e for part in _day(seed=1) for e in part]
    _post(shop.port, topic, [*events, _closing(events)])
    stored = _stored(shop.port, topic)
    # The crowded second in the topic's and each region's 1 s and 1 m tiers.
    assert _check_pandas(stored, events) == 6
    assert stored == _reference(topic, [*events, _closing(events)])
    crowded = next(p for p in stored["1s", None] if p["count"] == 4000)
    assert [e["value"] for e in crowded["top_product"][:5]] == [f"hot{i}" for i in range(5)]
    # Each entry's error is the bucket's floor, the tightest bound its Space-Saving counters
    # know (a summary fed that second's products apart), below N/m = 4,000 / 1,000.
    alone = SpaceSaving(1_000)
    for event in _crowded(1, T0 + 190):
        alone.add(event["tags"]["product"])
    assert 0 < alone.floor < 4
    assert all(entry["error"] == alone.floor for entry in crowded["top_product"])

    # CSV: a column per distinct count and per top list, the list JSON-encoded.
    status, _, body = request(shop.port, "GET", f"/topics/{topic}/series?resolution=1m&format=csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert list(rows[0])[-2:] == ["distinct_user", "top_product"]
    for row, point in zip(rows, stored["1m", None], strict=True):
        assert json.loads(row["top_product"]) == point["top_product"]
        assert int(row["distinct_user"]) == point["distinct_user"]

    # The Python client: a column of TopValue lists.
    with Client(shop.base) as client:
        frame = client.series(topic, resolution="1m", group="region:us")
    want = [msgspec.convert(p["top_product"], list[TopValue]) for p in stored["1m", "us"]]
    assert list(frame["top_product"]) == want
    assert list(frame["distinct_user"]) == [p["distinct_user"] for p in stored["1m", "us"]]


def test_point_messages_carry_the_top_values_the_series_keeps(shop: PushsvcProcess) -> None:
    topic = "shop.live"
    events = _steady(seed=9, start=T0, seconds=12, rate=3)
    with SSEClient(shop.port, f"/topics/{topic}/stream?series=1s", timeout=30) as stream:
        stream.next_data("snapshot")
        _post(shop.port, topic, events)
        # Seconds T0 .. T0 + 5 closed by the clock T0 + 11.67 (each closes 5 s after its end),
        # the topic's and each region's with an event in it.
        want = [(None, p) for p in _series(shop.port, topic, "1s", None)]
        want += [(r, p) for r in REGIONS for p in _series(shop.port, topic, "1s", r)]
        got = [stream.next_data("point") for _ in want]
    typed = [typed_message("point", message_id, orjson.dumps(data)) for message_id, data in got]
    assert all(isinstance(m, PointMessage) for m in typed)
    by_key = {
        ((m.group or {}).get("region"), m.point["t"]): m
        for m in typed
        if isinstance(m, PointMessage)
    }
    assert len(by_key) == len(want) >= 8
    for region, point in want:
        message = by_key[region, point["t"]]
        assert message.point == point
        assert message.top("product") == msgspec.convert(point["top_product"], list[TopValue])
        assert message.top("product") and message.distinct("user") == point["distinct_user"]


def _checkpointed_top_error(client: redis.Redis, keys: Keys, topic: str) -> bool:
    """Whether the topic's checkpoint holds an open minute counted by Space-Saving."""
    state = client.hget(keys.of(topic).checkpoint(topic), "series")
    if not state:
        return False
    tiers = parse_tiers("1s:15m,1m:24h")
    series = SeriesBuckets.restored(tiers, 5 * S, state, ("user",), (("product", K),))
    return any(point.top[0].error is not None for _, point in series.close(2**62))


@pytest.mark.redis
def test_top_values_survive_a_kill_9_of_the_aggregator(tmp_path: Path, prefix: str) -> None:
    topic = "shop.killed"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    first, while_down, rest = _day(seed=2)
    with RedisServer() as server:
        env = {
            "PUSHSVC_REDIS_URL": server.url,
            "PUSHSVC_PREFIX": prefix,
            "PUSHSVC_TICK": "0",
            "PUSHSVC_LEASE": "1s",
            "PUSHSVC_PARTITIONS": "1",
            "PUSHSVC_RULES": str(rules),
        }
        keys = Keys(prefix, 1)
        client = redis.Redis.from_url(server.url)
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
        web = PushsvcProcess("web", env=env).start()
        try:
            aggregator.wait_for_log("took the lease")
            _post(web.port, topic, first)
            # A checkpoint (every 5 s while the topic changes) with the crowded minute open.
            wait_until(
                lambda: _checkpointed_top_error(client, keys, topic),
                timeout=30,
                what="a checkpoint of the open minute",
            )
            aggregator.kill()
            for start in range(0, len(while_down), 1000):
                assert post(web.port, topic, while_down[start : start + 1000])[0] == 202
            aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
            aggregator.wait_for_log("took the lease")
            events = [*first, *while_down, *rest]
            _post(web.port, topic, [*rest, _closing(events)])
            stored = _stored(web.port, topic)
        finally:
            web.stop()
            aggregator.stop()
    assert _check_pandas(stored, events) == 6
    assert stored == _reference(topic, [*events, _closing(events)])


def test_top_values_survive_a_stop_and_start_with_a_data_dir(tmp_path: Path) -> None:
    topic = "shop.kept"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    data = tmp_path / "data"
    data.mkdir()
    args = ("serve", "--tick", "0", "--data-dir", str(data), "--rules", str(rules))
    first, second, third = _day(seed=3)
    events = [*first, *second, *third]
    server = PushsvcProcess(*args).start()
    try:
        _post(server.port, topic, first)
        before = _stored(server.port, topic)
    finally:
        server.stop()
    server = PushsvcProcess(*args).start()
    try:
        assert _stored(server.port, topic) == before
        _post(server.port, topic, [*second, *third, _closing(events)])
        stored = _stored(server.port, topic)
    finally:
        server.stop()
    assert _check_pandas(stored, events) == 6
    assert stored == _reference(topic, [*events, _closing(events)])
