"""The request/response API in-process (Flask's test client): topics, statistics, health,
readiness, metrics, lateness. Streams are tested on real sockets (test_e2e_memory.py)."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

from conftest import MakeApp


def test_a_topic_has_statistics_once_it_has_an_event(client: FlaskClient) -> None:
    assert client.get("/topics/orders/stats").status_code == 404
    assert (
        client.post("/topics/orders/events", json=[{"value": 2}, {"value": 4}]).status_code == 202
    )
    stats = client.get("/topics/orders/stats").get_json()
    assert stats["topic"] == "orders"
    assert stats["windows"]["1m"]["count"] == 2 and stats["windows"]["1m"]["mean"] == 3.0
    listed = {t["topic"]: t for t in client.get("/topics").get_json()["topics"]}
    assert listed["orders"]["last_id"] == stats["id"]
    assert listed["orders"]["subscribers"] == 0


def test_health_readiness_and_metrics(client: FlaskClient) -> None:
    assert client.post("/topics/orders/events", json={"value": 1}).status_code == 202
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert (ready.status_code, ready.get_json()["status"]) == (200, "ready")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.mimetype == "text/plain"
    assert b"pushsvc_events_accepted_total 1.0" in metrics.data


def test_late_events_past_the_grace_go_to_the_late_stream(client: FlaskClient) -> None:
    t = 1_763_700_000.0
    assert client.post("/topics/t/events", json={"value": 1, "ts": t}).status_code == 202
    inside = client.post("/topics/t/events", json={"value": 2, "ts": t - 4.9})  # within 5 s
    assert (inside.status_code, inside.get_json()) == (202, {"accepted": 1})
    assert client.get("/topics/t/stats").get_json()["late"] is True
    late = client.post(
        "/topics/t/events", json=[{"value": 3, "ts": t}, {"value": 4, "ts": t - 5.5}]
    )
    assert (late.status_code, late.get_json()) == (202, {"accepted": 1, "late": 1})
    # On time: applied; past the grace: on the late stream, a topic of its own.
    assert client.get("/topics/t/stats").get_json()["windows"]["10s"]["count"] == 3
    kept = client.get("/topics/t.late/stats").get_json()
    assert kept["event"]["value"] == 4 and kept["event"]["ts"] == t - 5.5
    metrics = client.get("/metrics").data
    assert b"pushsvc_late_events_total 1.0" in metrics


def test_a_rule_may_refuse_late_events(make_app: MakeApp, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ntopics = ["strict.*"]\ngrace = "1s"\nlate = "refuse"\n')
    client = make_app(rules=str(rules)).test_client()
    t = 1_763_700_000.0
    assert client.post("/topics/strict.a/events", json={"value": 1, "ts": t}).status_code == 202
    late = client.post(
        "/topics/strict.a/events", json=[{"value": 3, "ts": t}, {"value": 4, "ts": t - 1.5}]
    )
    assert late.status_code == 400
    error = late.get_json()["error"]
    assert error["code"] == "late_event" and error["index"] == 1
    # The refused batch changed nothing.
    assert client.get("/topics/strict.a/stats").get_json()["windows"]["10s"]["count"] == 1
    assert client.get("/topics/strict.a.late/stats").status_code == 404


def test_a_message_past_the_grace_is_pushed_whatever_the_rule(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """`late = "refuse"` is a rule of the statistics: a message past the grace is not refused
    for its time. It is pushed (its update in the topic's history, in log order, marked
    `past_grace`, the statistics those of the update before it), counted in `late`, and, the
    rule keeping no late stream, logged nowhere else. On a topic that keeps one, its copy there
    is counted and marked `copy`."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ntopics = ["strict.*"]\ngrace = "1s"\nlate = "refuse"\n')
    client = make_app(rules=str(rules)).test_client()
    t = 1_763_700_000.0
    for topic in ("strict.b", "kept"):
        assert client.post(f"/topics/{topic}/events", json={"value": 1, "ts": t}).status_code == 202
        late = client.post(
            f"/topics/{topic}/events",
            json=[{"type": "shipped", "data": {"order": 1}, "ts": t - 3600}, {"value": 2, "ts": t}],
        )
        assert (late.status_code, late.get_json()) == (202, {"accepted": 1, "late": 1})
        updates = client.get(f"/topics/{topic}/history?limit=10").get_json()["updates"]
        assert [u["event"].get("data") for u in updates] == [None, {"order": 1}, None]
        first, pushed, _ = updates
        assert pushed["past_grace"] is True and pushed["late"] is True
        assert pushed["windows"] == first["windows"] and pushed["ts"] == first["ts"]
        assert updates[-1]["windows"]["10s"]["count"] == 2
    assert client.get("/topics/strict.b.late/stats").status_code == 404
    copy = client.get("/topics/kept.late/stats").get_json()
    assert copy["copy"] is True and copy["event"]["data"] == {"order": 1}


def test_the_dashboard_page_and_its_assets_are_served(client: FlaskClient) -> None:
    # The files ship inside the package (src/pushsvc/static): a module that finds them by its
    # own path breaks when it moves, and only the browser tests would notice.
    for path in ("/", "/dashboard/dashboard.css", "/dashboard/js/main.js"):
        answer = client.get(path)
        try:
            assert answer.status_code == 200, path
            assert answer.get_data(), path
        finally:
            answer.close()
