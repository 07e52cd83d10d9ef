"""`DELETE /topics/{topic}` in-process (Flask's test client, the embedded broker): what a
deletion forgets (clock, windows, history, series, groups, alerts), its answers (200, 404,
400), the publish scope it takes with auth on and its audit line. Streams and the split
deployment on Redis: tests/system/test_topic_deletion.py."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from support.auth_tokens import SECRET, hs256

RULES = """
[[rule]]
topics = ["oven.*"]
windows = ["10s"]
stats = ["count", "sum", "max"]
group_by = ["tray"]
series = ["1s:15m"]

[[derive]]
topic = "oven.derived"
every = "1s"
value = "count[5s](oven.a)"

[[alert]]
name = "hot_oven"
topics = ["oven.*"]
when = "max[10s] > 250"
"""


def _post(client: FlaskClient, topic: str, events: object) -> int:
    return client.post(f"/topics/{topic}/events", json=events).status_code


def test_a_topic_locked_by_a_wrong_clock_is_deleted_and_its_next_event_starts_it_afresh(
    client: FlaskClient,
) -> None:
    now = time.time()
    # A clock a minute ahead (inside any future bound): every event of now is late after it.
    assert _post(client, "orders", {"value": 100, "ts": now + 60}) == 202
    late = client.post("/topics/orders/events", json={"value": 1})
    assert (late.status_code, late.get_json()) == (202, {"accepted": 0, "late": 1})

    deleted = client.delete("/topics/orders")
    assert (deleted.status_code, deleted.get_json()) == (200, {"topic": "orders", "deleted": True})
    assert client.get("/topics/orders/stats").status_code == 404
    assert client.get("/topics/orders/history").get_json()["updates"] == []
    assert "orders" not in {t["topic"] for t in client.get("/topics").get_json()["topics"]}

    assert _post(client, "orders", {"value": 7, "ts": now}) == 202
    stats = client.get("/topics/orders/stats").get_json()
    assert stats["windows"]["1m"]["count"] == 1 and stats["windows"]["1m"]["sum"] == 7
    assert stats["ts"] == pytest.approx(now)
    history = client.get("/topics/orders/history").get_json()["updates"]
    assert [u["event"]["value"] for u in history] == [7]


def test_deleting_a_topic_that_does_not_exist_is_a_404_and_a_bad_name_a_400(
    client: FlaskClient,
) -> None:
    missing = client.delete("/topics/never-posted")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    assert _post(client, "once", {"value": 1}) == 202
    assert client.delete("/topics/once").status_code == 200
    again = client.delete("/topics/once")  # a retry: gone already
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "not_found"
    bad = client.delete("/topics/no%20spaces")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_topic"
    assert client.delete("/topics/_alerts").status_code == 400


def test_a_deletion_forgets_groups_series_and_alerts_and_resolves_a_firing_one(
    make_app, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    client = make_app(rules=str(rules)).test_client()
    t0 = 1_763_700_000.0
    hot = [{"value": 300, "ts": t0 + i, "tags": {"tray": "a"}} for i in (0, 1, 2, 8)]
    assert _post(client, "oven.a", hot) == 202
    assert _post(client, "oven.b", {"value": 1, "ts": t0, "tags": {"tray": "a"}}) == 202
    firing = client.get("/alerts").get_json()["alerts"]
    assert [(a["topic"], a["state"]) for a in firing] == [("oven.a", "firing")] * 2  # + group
    points = client.get("/topics/oven.a/series?resolution=1s").get_json()["points"]
    assert [p["count"] for p in points] == [1, 1, 1]  # closed: the clock passed their end + 5 s

    assert client.delete("/topics/oven.a").status_code == 200
    assert client.get("/alerts").get_json()["alerts"] == []
    changes = client.get("/topics/_alerts/history").get_json()["updates"]
    assert [c["state"] for c in changes[-2:]] == ["resolved", "resolved"]
    assert {c["topic"] for c in changes[-2:]} == {"oven.a"}
    assert changes[-1]["since"] == t0 + 8  # at the deleted topic's clock
    assert client.get("/topics/oven.a/series?resolution=1s").get_json()["points"] == []
    assert client.get("/topics/oven.a/stats").status_code == 404
    stats_b = client.get("/topics/oven.b/stats").get_json()  # the others are untouched
    assert [g["key"] for g in stats_b["groups"]] == [{"tray": "a"}]

    # Afresh: an event far behind the deleted clock, its own group and buckets.
    assert _post(client, "oven.a", {"value": 1, "ts": t0 - 600, "tags": {"tray": "z"}}) == 202
    stats_a = client.get("/topics/oven.a/stats").get_json()
    assert stats_a["windows"]["10s"]["count"] == 1
    assert [g["key"] for g in stats_a["groups"]] == [{"tray": "z"}]


def test_a_derived_topic_cannot_be_deleted(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    client = make_app(rules=str(rules)).test_client()
    refused = client.delete("/topics/oven.derived")
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "derived_topic"
    assert "delete a source" in refused.get_json()["error"]["message"]


def test_a_session_topic_cannot_be_deleted(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\ntopics = ["oven.*"]\nwindows = ["10s"]\n'
        '[[session]]\ntopic = "oven.visits"\nfrom = ["oven.*"]\nkey = "tray"\ngap = "1m"\n'
    )
    client = make_app(rules=str(rules)).test_client()
    refused = client.delete("/topics/oven.visits")
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "session_topic"


def test_deleting_takes_the_publish_scope_and_leaves_an_audit_line(
    make_app, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    client = make_app(jwt_key=SECRET).test_client()
    writer = {"Authorization": "Bearer " + hs256(publish=["orders"], subject="ops-7")}
    reader = {"Authorization": "Bearer " + hs256(subscribe=["*"], publish=["other"])}
    assert (
        client.post("/topics/orders/events", json={"value": 1}, headers=writer).status_code == 202
    )

    anonymous = client.delete("/topics/orders")
    assert anonymous.status_code == 401 and anonymous.get_json()["error"]["code"]
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.delete("/topics/orders", headers=reader).status_code == 403
    assert client.get("/topics/orders/stats", headers=reader).status_code == 200  # unchanged

    with caplog.at_level(logging.INFO, logger="pushsvc.http.api.deletion"):
        deleted = client.delete("/topics/orders", headers=writer)
    assert deleted.status_code == 200
    (audit,) = [r for r in caplog.records if r.name == "pushsvc.http.api.deletion"]
    assert audit.levelno == logging.INFO
    assert audit.getMessage() == "topic 'orders' deleted by subject 'ops-7' from 127.0.0.1"
    # A 404 needs the scope too: no caller learns which topics exist without it.
    assert client.delete("/topics/orders", headers=reader).status_code == 403


def test_the_openapi_document_describes_the_deletion(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    operation = paths["/topics/{topic}"]["delete"]
    assert {"200", "400", "404", "503"} <= operation["responses"].keys()
