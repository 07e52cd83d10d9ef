"""Forecasts end to end, on the embedded broker (`pushsvc serve`) and on Redis (`web` and
`aggregate`): `GET /topics/{topic}/forecast` gives the forecast the model module makes from the
series' own closed points (their means equal pandas' `resample`), each group's its own;
`?forecast=` streams carry the forecasts as buckets close, and `?series=` streams never do;
bad requests are a 400 or 404 naming what is wrong; the spec's schema fits the answer; the
Python client gives it as a DataFrame."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

from pushsvc.client import ApiError, Client
from pushsvc.series.forecast_holt_winters import HoltWinters, HwParams
from pushsvc.series.forecast_linear import LinearModel
from support.rules_deployment import rules_deployment

RULES = """
[[rule]]
topics = ["fc.grouped.*"]
windows = ["10s"]
stats = ["count", "mean"]
group_by = ["station"]
series = ["1s:1h", "10s:1h"]
forecast = { tier = "1s", model = "linear", stat = "max", range = "15s", horizon = "5s" }

[[rule]]
topics = ["fc.*"]
windows = ["10s"]
stats = ["count", "mean"]
series = ["1s:1h", "10s:1h"]
forecast = { tier = "1s", season = "20s", horizon = "30s", alpha = 0.1, gamma = 0.2 }
"""
T0 = 1_763_700_000.0
HW = HwParams(0.1, 0.0, 0.2)


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("forecast") / "rules.toml"
    rules.write_text(RULES)
    with rules_deployment(request.param, rules, "forecast:") as proc:
        yield proc


def _events(seconds: int) -> list[dict[str, Any]]:
    """Three events a second on a wave of 20 s with a drift, two stations."""
    return [
        {
            "value": 50 + 5 * math.sin(2 * math.pi * i / 20) + 0.02 * i + j,
            "ts": T0 + i + j / 3,
            "tags": {"station": "grill" if (i + j) % 2 else "fry"},
        }
        for i in range(seconds)
        for j in range(3)
    ]


def _post_all(port: int, topic: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 200):
        assert post(port, topic, events[start : start + 200])[0] == 202


def _get(port: int, path: str) -> tuple[int, Any]:
    status, _, body = request(port, "GET", path)
    return status, json.loads(body)


def _series(port: int, topic: str, group: str = "") -> list[dict[str, Any]]:
    query = "resolution=1s&limit=10000" + (f"&group=station:{group}" if group else "")
    status, answer = _get(port, f"/topics/{topic}/series?{query}")
    assert status == 200, answer
    points: list[dict[str, Any]] = answer["points"]
    return points


def _forecast_of(port: int, topic: str, closed: int, group: str = "") -> dict[str, Any]:
    """The forecast once it was made after `closed` points of the tier closed."""
    query = f"?group=station:{group}" if group else ""
    answer: dict[str, Any] = {}

    def made() -> bool:
        nonlocal answer
        status, answer = _get(port, f"/topics/{topic}/forecast{query}")
        return status == 200 and answer["from"] == int((T0 + closed - 1) * 1000)

    wait_until(made, timeout=20, what=f"the forecast after {closed} points")
    return answer


def _resampled(events: list[dict[str, Any]], stat: str, station: str = "") -> list[float]:
    frame = pd.DataFrame(events)
    if station:
        frame = frame[[tags["station"] == station for tags in frame["tags"]]]
    index = pd.to_datetime(frame["ts"], unit="s")
    by_second = pd.Series(frame["value"].to_numpy(), index=index).resample("1s")
    values = by_second.mean() if stat == "mean" else by_second.max()
    return [float(v) for v in values.dropna()]


def test_the_forecast_is_the_models_of_the_closed_points(server: PushsvcProcess) -> None:
    topic = "fc.kitchen"
    events = _events(120)
    _post_all(server.port, topic, events)
    # The last event's clock closes the buckets up to 120 - 1 - lateness (5 s).
    answer = _forecast_of(server.port, topic, 114)
    means = [p["mean"] for p in _series(server.port, topic)]
    assert means == pytest.approx(_resampled(events, "mean")[:114], rel=1e-12)
    model = HoltWinters(20, HW)
    for value in means:
        model.learn(value)
    expected = model.predict(30)
    assert answer["topic"] == topic and answer["model"] == "holt_winters"
    assert [p["t"] for p in answer["points"]] == [int((T0 + 114 + i) * 1000) for i in range(30)]
    assert [(p["mean"], p["lo80"], p["hi95"]) for p in answer["points"]] == [
        (p.mean, p.lo80, p.hi95) for p in expected
    ]
    # The wave comes back: the forecast follows it (amplitude 5) within the drift the model,
    # without a trend, leaves out (0.02 a second: 0.6 over the horizon, plus the level's lag).
    truth = [50 + 5 * math.sin(2 * math.pi * t / 20) + 0.02 * t + 1 for t in range(114, 144)]
    assert max(abs(p["mean"] - v) for p, v in zip(answer["points"], truth, strict=True)) < 1.0
    _, spec = _get(server.port, "/openapi.json")
    schema = {**spec["components"]["schemas"]["Forecast"], "components": spec["components"]}
    jsonschema.validate(answer, schema)


def test_each_group_has_its_own_linear_forecast(server: PushsvcProcess) -> None:
    topic = "fc.grouped.line"
    events = _events(60)
    _post_all(server.port, topic, events)
    for station in ("grill", "fry"):
        answer = _forecast_of(server.port, topic, 54, station)
        assert answer["group"] == {"station": station}
        maxima = [p["max"] for p in _series(server.port, topic, station)]
        assert maxima == _resampled(events, "max", station)[:54]
        model = LinearModel(15)
        for value in maxima:
            model.learn(value)
        assert [p["mean"] for p in answer["points"]] == [p.mean for p in model.predict(5)]


def test_a_forecast_stream_carries_the_forecasts_as_buckets_close(server: PushsvcProcess) -> None:
    topic = "fc.live"
    events = _events(60)
    with (
        SSEClient(server.port, f"/topics/{topic}/stream?forecast=1s") as forecasts,
        SSEClient(server.port, f"/topics/{topic}/stream?series=1s") as points,
    ):
        forecasts.next_data("snapshot")
        points.next_data("snapshot")
        _post_all(server.port, topic, events)
        streamed: list[dict[str, Any]] = []
        while len(streamed) < 54:
            message = forecasts.next()
            if message.event == "point":
                streamed.append(json.loads(message.data))
        seen: list[dict[str, Any]] = []
        while len(seen) < 54:
            message = points.next()
            if message.event == "point":
                seen.append(json.loads(message.data))
    assert all("point" in m and "forecast" not in m for m in seen)
    assert [m["forecast"]["from"] for m in streamed] == [int((T0 + i) * 1000) for i in range(54)]
    # Learning for two seasons, then forecasting; the last is what the API gives.
    assert [bool(m["forecast"]["points"]) for m in streamed] == [i >= 39 for i in range(54)]
    last = _forecast_of(server.port, topic, 54)
    # The API's answer adds how current it is (`clock`, `pending`) to the forecast streamed.
    made = {k: v for k, v in last.items() if k not in ("topic", "clock", "pending")}
    assert made == streamed[-1]["forecast"]


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/topics/plain/forecast", 404, "has no forecast"),
        ("/topics/fc.never/forecast", 404, "no forecast of topic 'fc.never'"),
        ("/topics/fc.kitchen/forecast?horizon=1h", 400, "unknown parameter ?horizon="),
        ("/topics/fc.kitchen/forecast?group=station:grill", 400, "does not group"),
        ("/topics/fc.grouped.line/forecast?group=desk:a", 400, "'desk'"),
        ("/topics/fc.kitchen/stream?forecast=5m", 400, "?forecast= takes a resolution"),
        ("/topics/fc.kitchen/messages?forecast=1s", 400, "?forecast= is for statistics"),
    ],
)
def test_a_bad_request_says_what_is_wrong(
    server: PushsvcProcess, path: str, status: int, words: str
) -> None:
    got, _, body = request(server.port, "GET", path)
    assert got == status, body
    assert words in json.loads(body)["error"]["message"]


def test_the_python_client_gives_the_forecast_as_a_dataframe(server: PushsvcProcess) -> None:
    topic = "fc.grouped.client"
    _post_all(server.port, topic, _events(40))
    answer = _forecast_of(server.port, topic, 34, "grill")
    with Client(f"http://127.0.0.1:{server.port}") as client:
        frame = client.forecast(topic, group={"station": "grill"})
        with pytest.raises(ApiError) as refused:
            client.forecast("plain")
    assert list(frame.columns) == ["mean", "lo80", "hi80", "lo95", "hi95"]
    kept = ("model", "stat", "resolution", "from", "clock", "pending")
    assert frame.attrs == {k: answer[k] for k in kept}
    assert [t.timestamp() * 1000 for t in frame.index] == [p["t"] for p in answer["points"]]
    assert frame["hi95"].tolist() == [p["hi95"] for p in answer["points"]]
    assert refused.value.status == 404 and refused.value.code == "not_found"


def test_frames_carry_the_latest_forecast_as_buckets_close(server: PushsvcProcess) -> None:
    topic = "fc.frames"
    events = _events(90)
    _post_all(server.port, topic, events[: 60 * 3])
    _forecast_of(server.port, topic, 54)
    with Client(f"http://127.0.0.1:{server.port}") as client:
        frames = client.frames(topic, every=0.1, forecast="1s")
        first = next(frames)
        pd.testing.assert_frame_equal(first.attrs["forecast"], client.forecast(topic))
        _post_all(server.port, topic, events[60 * 3 :])
        later = _forecast_of(server.port, topic, 84)
        # The forecast after 84 points comes with the first event of second 89 (its clock
        # closes bucket 83), before that second's two later events: a frame may hold it
        # without them, so the frame awaited holds both.
        for frame in frames:
            if frame.attrs["forecast"].attrs["from"] == later["from"] and len(frame) == len(events):
                break
        frames.close()
    assert frame.attrs["forecast"]["mean"].tolist() == [p["mean"] for p in later["points"]]
    plain = Client(f"http://127.0.0.1:{server.port}")
    with plain:
        unforecast = plain.frames(topic, every=0.1)
        assert "forecast" not in next(unforecast).attrs
        unforecast.close()


@pytest.mark.redis
def test_the_answer_says_how_current_the_forecast_is(tmp_path: Path) -> None:
    """`clock` (the topic's clock) and `pending` (entries of its partition logged and not yet
    applied): with the aggregator away, what is posted meanwhile waits in the log, and the
    answer says so rather than pass an old forecast off as current."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    redis_server = RedisServer().start()
    env = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_RULES": str(rules),
    }
    topic = "fc.current"
    web = PushsvcProcess("web", env=env).start()
    try:
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
        try:
            aggregator.wait_for_log("took the lease")
            events = _events(60)
            _post_all(web.port, topic, events)
            answer = _forecast_of(web.port, topic, 54)
        finally:
            aggregator.stop()
        _, stats = _get(web.port, f"/topics/{topic}/stats")
        assert answer["clock"] == int(stats["ts"] * 1000) == int(events[-1]["ts"] * 1000)
        assert answer["pending"] == 0
        later = [{**e, "ts": e["ts"] + 60} for e in events]
        _post_all(web.port, topic, later)  # one log entry a POST; no aggregator to apply it
        status, behind = _get(web.port, f"/topics/{topic}/forecast")
        assert status == 200
        assert behind == {**answer, "pending": -(-len(later) // 200)}
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
        try:
            caught_up = _forecast_of(web.port, topic, 114)
        finally:
            aggregator.stop()
        assert caught_up["clock"] == int(later[-1]["ts"] * 1000)
        assert caught_up["pending"] == 0
    finally:
        web.stop()
        redis_server.stop()
