"""Per-stream options: projection (`?windows=&stats=`), precision (`?precision=`) and
conflation (`?max_hz=`); `?delta=`, withdrawn, is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from harness.live import PushsvcProcess, SSEClient, post, request

from conftest import MakeApp


def test_projection_sends_only_the_asked_fields(server: PushsvcProcess, topic: str) -> None:
    post(server.port, topic, [{"value": 1}, {"value": 3}])
    with SSEClient(server.port, f"/topics/{topic}/stream?windows=5m,1m&stats=p99,mean") as stream:
        _, snapshot = stream.next_data("snapshot")
        assert snapshot["topics"][topic]["windows"] == {
            "1m": {"mean": 2.0, "p99": pytest.approx(2.98)},
            "5m": {"mean": 2.0, "p99": pytest.approx(2.98)},
        }
        post(server.port, topic, {"value": 5, "tags": {"a": "b"}})
        update_id, update = stream.next_data()
        assert update["windows"] == {
            "1m": {"mean": 3.0, "p99": pytest.approx(4.96)},
            "5m": {"mean": 3.0, "p99": pytest.approx(4.96)},
        }
        assert update["event"]["tags"] == {"a": "b"} and update["id"] == update_id
        full = json.loads(request(server.port, "GET", f"/topics/{topic}/stats")[2])
        assert full["id"] == update_id and set(full["windows"]) == {"10s", "1m", "5m"}


def test_projection_applies_to_replay(server: PushsvcProcess, topic: str) -> None:
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        post(server.port, topic, [{"value": 1}, {"value": 2}])
        first_id, _ = stream.next_data()
    with SSEClient(
        server.port, f"/topics/{topic}/stream?stats=count", {"Last-Event-ID": first_id}
    ) as resumed:
        _, update = resumed.next_data()
        assert update["windows"] == {"10s": {"count": 2}, "1m": {"count": 2}, "5m": {"count": 2}}


@pytest.mark.parametrize(
    "query",
    [
        "windows=2m",
        "stats=median",
        "stats=",
        "windows=1m,,x",
        "max_hz=0",
        "max_hz=fast",
        "presence=2",
    ],
)
def test_bad_options_are_400(client: FlaskClient, query: str) -> None:
    response = client.get(f"/topics/t/stream?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "path", ["/topics/t/stream", "/stream?topic=t", "/topics/t/messages", "/messages?topic=t"]
)
@pytest.mark.parametrize("value", ["positional", "", "merge"])
def test_delta_is_withdrawn_and_the_400_points_to_gzip(
    client: FlaskClient, path: str, value: str
) -> None:
    """`?delta=` was withdrawn: a client written for it is told so, and what saves bytes
    instead, rather than being sent whole updates it does not expect."""
    separator = "&" if "?" in path else "?"
    response = client.get(f"{path}{separator}delta={value}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_request"
    assert "?delta= was withdrawn" in error["message"]
    assert "Accept-Encoding: gzip" in error["message"]


def test_precision_rounds_every_statistic_and_nothing_else(
    server: PushsvcProcess, topic: str
) -> None:
    """?precision=N sends statistics to N significant digits (snapshot, live updates
    and replay alike); counts, the event and ts stay exact; a full stream is unchanged."""
    post(server.port, topic, [{"value": 1 / 3}, {"value": 2 / 3}])
    with (
        SSEClient(server.port, f"/topics/{topic}/stream?precision=3") as rounded,
        SSEClient(server.port, f"/topics/{topic}/stream") as full,
    ):
        _, snapshot = rounded.next_data("snapshot")
        assert snapshot["topics"][topic]["windows"]["1m"]["mean"] == 0.5
        assert snapshot["topics"][topic]["windows"]["1m"]["min"] == 0.333
        full.next_data("snapshot")
        post(server.port, topic, {"value": 1234.56789})
        update_id, update = rounded.next_data()
        full_id, exact = full.next_data()
        assert update_id == full_id and update["id"] == update_id
        assert update["event"] == exact["event"] and update["ts"] == exact["ts"]
        assert exact["event"]["value"] == 1234.56789 and exact["windows"]["1m"]["max"] == 1234.56789
        for window, stats in exact["windows"].items():
            assert update["windows"][window]["count"] == stats["count"] == 3
            for name, value in stats.items():
                if isinstance(value, float):
                    assert update["windows"][window][name] == float(f"{value:.3g}"), name
        assert update["windows"]["1m"]["max"] == 1230.0
    with SSEClient(
        server.port, f"/topics/{topic}/stream?precision=2&stats=mean",
        {"Last-Event-ID": snapshot["topics"][topic]["id"]},
    ) as resumed:  # fmt: skip
        _, replayed = resumed.next_data()
        assert replayed["windows"]["1m"] == {"mean": 410.0}  # (1/3 + 2/3 + 1234.56789) / 3


@pytest.mark.parametrize("value", ["0", "18", "-1", "3.5", "x", "", "1e3", "٣"])
def test_a_bad_precision_is_a_400_naming_the_range(client: FlaskClient, value: str) -> None:
    response = client.get(f"/topics/t/stream?precision={value}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_request" and "1 to 17" in error["message"]


def test_max_hz_sends_the_latest_at_most_that_often(server: PushsvcProcess, topic: str) -> None:
    with (
        SSEClient(server.port, f"/topics/{topic}/stream?max_hz=4") as paced,
        SSEClient(server.port, f"/topics/{topic}/stream") as full,
    ):
        paced.next_data("snapshot")
        full.next_data("snapshot")
        post(server.port, topic, [{"value": v} for v in range(50)])
        assert len(full.take(50)) == 50
        first = paced.next()
        assert json.loads(first.data)["event"]["value"] == 0.0
        latest = paced.next()  # one interval later: the newest, everything between skipped
        assert json.loads(latest.data)["event"]["value"] == 49.0
        assert json.loads(latest.data)["windows"]["1m"]["count"] == 50
        assert latest.id == json.loads(latest.data)["id"]


def test_server_can_compute_only_some_statistics(make_app: MakeApp, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\ntopics = ["*"]\nwindows = ["1m"]\nstats = ["max", "count", "mean"]\n'
    )
    lean = make_app(rules=str(rules)).test_client()
    assert lean.post("/topics/t/events", json=[{"value": 4}, {"value": 2}]).status_code == 202
    assert lean.get("/topics/t/stats").get_json()["windows"]["1m"] == {
        "count": 2,
        "mean": 3.0,
        "max": 4.0,
    }
    # A statistic the server does not compute cannot be asked for.
    response = lean.get("/topics/t/stream?stats=p99")
    assert response.status_code == 400 and "p99" in response.get_json()["error"]["message"]
