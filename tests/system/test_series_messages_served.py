"""Series points count messages by type end to end, on the embedded broker and on Redis: every
point of every tier read from `/series` (JSON and CSV) carries `messages` equal to pandas'
count by bucket and type of the accepted messages, and count and sum of the events with a
value; a topic of messages only has points (of count 0) where its rule names tiers, and none
under the server's tiers (`--series`, kept from a topic's first value); a `?series=` stream's
points carry them; the Python client's frame has a `messages_<type>` column per type."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

from pushsvc.client import Client

S = 1_000_000
T0 = 1_763_700_000.25
LATENESS_S = 5
TYPES = ("shipped", "error", "refund")


RULES = """
[[rule]]
topics = ["series.messages.only"]
series = ["1s:15m", "1m:24h"]
"""
"""The messages-only topic's rule names the server's tiers: a rule asking for series."""


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    args = ["serve", "--tick", "0", "--series", "1s:15m,1m:24h"]
    args += ["--rules", str(rules)]
    redis_server = None
    if request.param == "redis":
        redis_server = RedisServer().start()
        args += ["--redis-url", redis_server.url, "--prefix", "series-messages:"]
    proc = PushsvcProcess(*args).start()
    yield proc
    proc.stop()
    if redis_server is not None:
        redis_server.stop()


def _mixed(seed: int, *, values: bool = True) -> list[dict[str, Any]]:
    """Ten minutes of event time: plain values, messages with a value, messages alone (of
    three types, errors in a burst), some late within the grace, in posting order."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    clock = T0
    while clock < T0 + 600:
        clock += rng.expovariate(1 / 0.8)
        ts = clock - rng.uniform(0, LATENESS_S - 0.5) if rng.random() < 0.05 else clock
        kind = rng.choice(["value", "both", "message", "message"] if values else ["message"])
        event: dict[str, Any] = {"ts": round(ts, 6)}
        if kind != "message":
            event["value"] = round(rng.uniform(0, 100), 3)
        if kind != "value":
            burst = T0 + 200 < clock < T0 + 260
            event["type"] = "error" if burst and rng.random() < 0.7 else rng.choice(TYPES)
            event["data"] = {"n": len(events)}
        events.append(event)
    return events


def _post_all(port: int, topic: str, events: list[dict[str, Any]]) -> None:
    """Post in batches, then an event late enough to close every bucket (its own stay open),
    and wait for its update: the points closed by it are published with it."""
    for start in range(0, len(events), 2000):
        status, body = post(port, topic, events[start : start + 2000])
        assert status == 202, body
    closer = {"type": "closer", "ts": max(e["ts"] for e in events) + 60 + LATENESS_S + 1}
    assert post(port, topic, closer)[0] == 202
    wait_until(lambda: _latest_type(port, topic) == "closer", what="the closing update")


def _latest_type(port: int, topic: str) -> str | None:
    status, _, body = request(port, "GET", f"/topics/{topic}/stats")
    event = json.loads(body).get("event") if status == 200 else None
    return None if event is None else event.get("type")


def _series(port: int, topic: str, query: str) -> dict[str, Any]:
    status, _, body = request(port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def _expected(events: list[dict[str, Any]], rule: str) -> dict[float, dict[str, Any]]:
    """pandas: per bucket start (epoch s) the count and sum of values and messages by type."""
    index = pd.to_datetime([round(e["ts"] * S) for e in events], unit="us", utc=True)
    frame = pd.DataFrame(
        {"value": [e.get("value") for e in events], "type": [e.get("type") for e in events]},
        index=index,
    )
    values = frame["value"].astype(float).resample(rule).agg(["count", "sum"])
    by_type = frame.dropna(subset=["type"]).groupby([pd.Grouper(freq=rule), "type"]).size()
    out: dict[float, dict[str, Any]] = {}
    for start, row in values.iterrows():
        t = pd.Timestamp(start).value / 1e9
        out[t] = {"count": int(row["count"]), "sum": float(row["sum"]), "messages": {}}
    for (start, kind), n in by_type.items():
        out[pd.Timestamp(start).value / 1e9]["messages"][kind] = int(n)
    return {t: b for t, b in out.items() if b["count"] or b["messages"]}


def _check(points: list[dict[str, Any]], want: dict[float, dict[str, Any]], width: int) -> None:
    assert [p["t"] for p in points] == pytest.approx(list(want), abs=1e-6)
    for point, bucket in zip(points, want.values(), strict=True):
        counts = {k: v["count"] for k, v in point.get("messages", {}).items()}
        assert counts == bucket["messages"], point["t"]
        assert all(
            v["rate"] == pytest.approx(v["count"] / width)
            for v in point.get("messages", {}).values()
        )
        assert point["count"] == bucket["count"]
        assert point["sum"] == pytest.approx(bucket["sum"], rel=1e-12, abs=1e-9)
        if not bucket["count"]:
            assert point["mean"] is None and point["p50"] is None and point["max"] is None


@pytest.mark.parametrize("values", [True, False], ids=["mixed", "messages-only"])
def test_every_points_messages_equal_pandas_per_bucket_and_type(
    server: PushsvcProcess, values: bool
) -> None:
    port = server.port
    topic = f"series.messages.{'mixed' if values else 'only'}"
    events = _mixed(seed=7 if values else 8, values=values)
    _post_all(port, topic, events)
    for resolution, rule, width in (("1s", "1s", 1), ("1m", "1min", 60)):
        answer = _series(port, topic, f"resolution={resolution}")
        _check(answer["points"], _expected(events, rule), width)
    minute = _series(port, topic, "resolution=1m")["points"]
    assert sum(p["messages"].get("error", {}).get("count", 0) for p in minute) == sum(
        e.get("type") == "error" for e in events
    )
    if not values:
        assert all(p["count"] == 0 for p in minute) and minute
    # CSV: one column of the counts, JSON-encoded as the points carry them.
    status, _, body = request(port, "GET", f"/topics/{topic}/series?resolution=1m&format=csv")
    assert status == 200
    table = pd.read_csv(io.BytesIO(body), keep_default_na=False)
    assert [json.loads(cell) if cell else {} for cell in table["messages"]] == [
        p.get("messages", {}) for p in minute
    ]
    # The client: a column of counts per type, 0 where a bucket held none of it.
    with Client(server.base) as client:
        frame = client.series(topic, resolution="1m")
    kinds = sorted({k for p in minute for k in p.get("messages", {})})
    assert [c for c in frame.columns if c.startswith("messages_")] == [
        f"messages_{k}" for k in kinds
    ]
    for kind in kinds:
        assert frame[f"messages_{kind}"].dtype == "int64"
        assert list(frame[f"messages_{kind}"]) == [
            p.get("messages", {}).get(kind, {}).get("count", 0) for p in minute
        ]


def test_a_series_stream_sends_points_with_their_messages(server: PushsvcProcess) -> None:
    port = server.port
    topic = "series.messages.live"
    with SSEClient(port, f"/topics/{topic}/stream?series=1s") as stream:
        stream.next_data("snapshot")
        batch = [
            {"type": "shipped", "data": {"order": 1}, "ts": T0},
            {"type": "shipped", "data": {"order": 2}, "ts": T0 + 0.5},
            {"value": 3.0, "type": "error", "data": None, "ts": T0 + 0.6},
            {"value": 5.0, "ts": T0 + 1.5},
        ]
        assert post(port, topic, batch)[0] == 202
        assert post(port, topic, {"value": 1.0, "ts": T0 + 8})[0] == 202  # closes both seconds
        _, first = stream.next_data("point")
        _, second = stream.next_data("point")
    assert first["point"]["t"] == pytest.approx(T0 - 0.25)
    assert first["point"]["count"] == 1 and first["point"]["sum"] == 3.0
    assert first["point"]["messages"] == {
        "error": {"count": 1, "rate": 1.0},
        "shipped": {"count": 2, "rate": 2.0},
    }
    assert "messages" not in second["point"] and second["point"]["count"] == 1


def test_a_topic_of_messages_only_keeps_no_series_of_the_servers_tiers(
    server: PushsvcProcess,
) -> None:
    """Under the server's tiers a topic's series start at its first value: one of messages
    only has no point, then its buckets from the POST of its first value on count both."""
    port = server.port
    topic = "plain.messages.only"
    events = _mixed(seed=9, values=False)
    _post_all(port, topic, events)
    for resolution in ("1s", "1m"):
        assert _series(port, topic, f"resolution={resolution}")["points"] == []
    valued = [{"value": 2.0, "type": "shipped", "data": None, "ts": T0 + 700}]
    valued.append({"type": "error", "data": None, "ts": T0 + 700.5})
    _post_all(port, topic, valued)
    points = _series(port, topic, "resolution=1s")["points"]
    assert [p["t"] for p in points] == [pytest.approx(T0 + 700 - 0.25)]
    assert points[0]["count"] == 1 and points[0]["sum"] == 2.0
    assert {k: v["count"] for k, v in points[0]["messages"].items()} == {
        "error": 1,
        "shipped": 1,
    }
