"""Anomaly scores end to end, on the embedded broker (`pushsvc serve`) and on Redis (`web` and
`aggregate`): the points of a rule's `every` tier in `/series` carry the scores the detector
module gives the series of their bucket means (which equal pandas' `resample`), each group's
its own; other tiers carry none; `?series=` streams carry the same scores as the buckets close;
`GET /rules` describes the field."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from typing import Any

import jsonschema
import pandas as pd
import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until

from pushsvc.client import Client, Point, Snapshot, StreamUpdate
from pushsvc.series.anomaly import Detector, Params
from support.rules_deployment import rules_deployment

S = 1_000_000
LEARN = 20
RULES = f"""
[[rule]]
topics = ["scored.grouped.*"]
windows = ["10s"]
stats = ["count", "mean"]
group_by = ["station"]
series = ["1s:1h", "10s:1h"]
anomaly = {{ every = "1s", stat = "mean", learn = "{LEARN}s", threshold = 0.5 }}

[[rule]]
topics = ["scored.*"]
windows = ["10s"]
stats = ["count", "mean"]
series = ["1s:1h", "10s:1h"]
anomaly = {{ every = "1s", stat = "max", learn = "{LEARN}s" }}
"""
T0 = 1_763_700_000.0


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("anomaly") / "rules.toml"
    rules.write_text(RULES)
    with rules_deployment(request.param, rules, "anomaly:") as proc:
        yield proc


def _events(seconds: int) -> list[dict[str, Any]]:
    """Three events a second on a slow wave, two stations, and a spike at 200 s."""
    out = []
    for i in range(seconds):
        for j in range(3):
            value = 50 + 5 * math.sin(i / 25) + j + (60 if i == 200 and j == 1 else 0)
            station = "grill" if (i + j) % 2 else "fry"
            out.append({"value": value, "ts": T0 + i + j / 3, "tags": {"station": station}})
    return out


def _post_all(port: int, topic: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 200):
        assert post(port, topic, events[start : start + 200])[0] == 202


def _series(port: int, topic: str, resolution: str, group: str = "") -> list[dict[str, Any]]:
    query = f"resolution={resolution}&limit=10000" + (f"&group=station:{group}" if group else "")
    status, _, body = request(port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200, body
    points: list[dict[str, Any]] = json.loads(body)["points"]
    return points


def _scores(values: list[float], threshold: float = 0.5) -> list[tuple[float, bool]]:
    detector = Detector(Params(learn=LEARN, threshold=threshold))
    return [(s, s >= threshold) for s in map(detector.score, values)]


def _resampled(events: list[dict[str, Any]], stat: str, station: str = "") -> pd.Series:
    frame = pd.DataFrame(events)
    if station:
        frame = frame[[tags["station"] == station for tags in frame["tags"]]]
    index = pd.to_datetime(frame["ts"], unit="s")
    by_second = pd.Series(frame["value"].to_numpy(), index=index).resample("1s")
    return by_second.mean() if stat == "mean" else by_second.max()


def test_every_point_of_the_tier_carries_the_detectors_score(server: PushsvcProcess) -> None:
    topic = "scored.plain"
    events = _events(300)
    _post_all(server.port, topic, events)
    # The last event's clock closes every bucket up to 5 s (the lateness) before it.
    wait_until(lambda: len(_series(server.port, topic, "1s")) >= 294, timeout=20, what="points")
    points = _series(server.port, topic, "1s")
    values = [p["max"] for p in points]
    assert values == pytest.approx(list(_resampled(events, "max")[: len(points)]), rel=1e-12)
    assert [(p["anomaly"], p["anomalous"]) for p in points] == _scores(values)
    assert [p["t"] for p in points if p["anomalous"]][:1] == [T0 + 200]
    assert not any("anomaly" in p for p in _series(server.port, topic, "10s"))
    # The CSV has a column for each, empty on the tier not scored.
    scored, coarse = (_csv(server.port, topic, resolution) for resolution in ("1s", "10s"))
    assert list(scored["anomaly"]) == [p["anomaly"] for p in points]
    assert list(scored["anomalous"]) == [p["anomalous"] for p in points]
    assert len(coarse) and coarse["anomaly"].isna().all()


def _csv(port: int, topic: str, resolution: str) -> pd.DataFrame:
    path = f"/topics/{topic}/series?format=csv&limit=10000&resolution={resolution}"
    status, _, body = request(port, "GET", path)
    assert status == 200
    return pd.read_csv(io.StringIO(body.decode()))


def test_each_group_is_scored_as_a_series_of_its_own(server: PushsvcProcess) -> None:
    topic = "scored.grouped.kitchen"
    events = _events(300)
    _post_all(server.port, topic, events)
    for station in ("grill", "fry"):
        wait_until(
            lambda s=station: len(_series(server.port, topic, "1s", s)) >= 294,  # type: ignore[misc]
            timeout=20,
            what="group points",
        )
        points = _series(server.port, topic, "1s", station)
        values = [p["mean"] for p in points]
        oracle = _resampled(events, "mean", station)[: len(points)]
        assert values == pytest.approx(list(oracle), rel=1e-12)
        assert [(p["anomaly"], p["anomalous"]) for p in points] == _scores(values)
        # The spike is grill's only.
        assert (T0 + 200 in [p["t"] for p in points if p["anomalous"]]) == (station == "grill")
    # The topic's own series is scored too, from every station's events.
    mine = _series(server.port, topic, "1s")
    assert [(p["anomaly"], p["anomalous"]) for p in mine] == _scores([p["mean"] for p in mine])


def test_a_series_stream_carries_the_scores_as_buckets_close(server: PushsvcProcess) -> None:
    topic = "scored.live"
    events = _events(60)
    with SSEClient(server.port, f"/topics/{topic}/stream?series=1s") as stream:
        stream.next_data("snapshot")
        _post_all(server.port, topic, events)
        streamed = []
        while len(streamed) < 54:
            message = stream.next()
            if message.event == "point":
                streamed.append(json.loads(message.data)["point"])
    assert streamed == _series(server.port, topic, "1s")[:54]
    assert all("anomaly" in p and "anomalous" in p for p in streamed)


def test_get_rules_describes_the_anomaly_field(server: PushsvcProcess) -> None:
    status, _, body = request(server.port, "GET", "/rules")
    assert status == 200
    described = json.loads(body)["rules"]
    assert described[1]["anomaly"] == {
        "every": "1s",
        "stat": "max",
        "learn": "20s",
        "learn_points": 20,
        "threshold": 0.5,
    }


def test_the_openapi_document_describes_the_scored_points(server: PushsvcProcess) -> None:
    topic = "scored.described"
    _post_all(server.port, topic, _events(40))
    wait_until(lambda: len(_series(server.port, topic, "1s")) >= 34, timeout=20, what="points")
    status, _, body = request(server.port, "GET", "/openapi.json")
    assert status == 200
    document = json.loads(body)
    point = document["components"]["schemas"]["Series"]["properties"]["points"]["items"]
    assert {"anomaly", "anomalous"} <= set(point["properties"])
    status, _, answer = request(server.port, "GET", f"/topics/{topic}/series?resolution=1s")
    series = {"$ref": "#/components/schemas/Series", "components": document["components"]}
    jsonschema.Draft202012Validator(series).validate(json.loads(answer))
    wrong = json.loads(answer)
    wrong["points"][0]["anomaly"] = 2.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(series).validate(wrong)


def test_windows_give_anomaly_rate_in_updates_stats_snapshots_and_the_client(
    server: PushsvcProcess,
) -> None:
    """The rule's 10s window: `anomaly_rate` over the scored buckets that closed in it, in
    the updates (and a `?stats=anomaly_rate` projection), `/stats`, a snapshot, and the
    Python client's typed models and DataFrames."""
    topic = "scored.rated"
    events = _events(240)
    base = f"http://127.0.0.1:{server.port}"
    with Client(base) as client:
        stream = client.subscribe(topic, stats=["anomaly_rate"], series=["1s"], max_retries=0)
        assert isinstance(next(stream), Snapshot)
        _post_all(server.port, topic, events)
        updates: list[StreamUpdate] = []
        points: list[Point] = []
        while len(updates) < len(events):
            message = next(stream)
            if isinstance(message, StreamUpdate):
                updates.append(message)
            elif isinstance(message, Point):
                points.append(message)
        stream.close()
        # Each update: the share of anomalous points among those closed in (ts - 10 s, ts],
        # counting those its own event closed (streamed right after it).
        flagged = [(p.time.timestamp(), p.anomalous) for p in points]
        # A bucket [t, t + 1) closes at t + 6 (its end and the 5 s lateness): an event's time.
        for update in updates[-60:]:
            inside = [f for t, f in flagged if update.ts - 10 < t + 1 + 5 <= update.ts]
            assert _rate_is(update.anomaly_rate("10s"), inside), update.ts
            assert set(update.windows["10s"]) == {"anomaly_rate"}
        assert any(p.anomalous for p in points) and all(p.anomaly is not None for p in points)
        last = updates[-1].anomaly_rate("10s")
        stats = client.stats(topic)
        assert stats["windows"]["10s"]["anomaly_rate"] == last
        frame = client.series(topic, resolution="1s")
        assert str(frame["anomalous"].dtype) == "boolean"
        assert list(frame["anomaly"]) == [p["anomaly"] for p in _series(server.port, topic, "1s")]
        with SSEClient(server.port, f"/topics/{topic}/stream") as fresh:
            _, snapshot = fresh.next_data("snapshot")
        assert snapshot["topics"][topic]["windows"]["10s"]["anomaly_rate"] == last


def _rate_is(rate: float | None, inside: list[bool | None]) -> bool:
    if not inside:
        return rate is None
    return rate == pytest.approx(sum(bool(f) for f in inside) / len(inside))


def test_get_anomalies_ranks_the_scored_series_on_either_broker(server: PushsvcProcess) -> None:
    topic = "scored.grouped.ranked"
    events = _events(260)
    _post_all(server.port, topic, events)
    for station in ("grill", "fry"):
        wait_until(
            lambda s=station: len(_series(server.port, topic, "1s", s)) >= 254,  # type: ignore[misc]
            timeout=20,
            what="group points",
        )
    status, _, body = request(server.port, "GET", "/anomalies?limit=1000")
    assert status == 200, body
    entries = [e for e in json.loads(body)["anomalies"] if e["topic"] == topic]
    assert {json.dumps(e.get("group")) for e in entries} == {
        "null",
        json.dumps({"station": "grill"}),
        json.dumps({"station": "fry"}),
    }
    for entry in entries:
        station = (entry.get("group") or {}).get("station", "")
        points = _series(server.port, topic, "1s", station)
        flagged = sum(p["anomalous"] for p in points)
        assert (entry["scored"], entry["anomalous"]) == (len(points), flagged)
        assert entry["rate"] == flagged / len(points)
