"""The bad-input battery: each gets its documented 4xx with a JSON error, and changes nothing."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient
from harness.live import PushsvcProcess, SSEClient, post

BIG = b'{"value": 1, "tags": {"x": "' + b"a" * (10 * 1024 * 1024) + b'"}}'

CASES = [
    # (name, body, content type, status, error code or None for "any")
    ("malformed json", b'{"value": 1', "application/json", 400, None),
    ("not an object", b"42", "application/json", 400, None),
    ("empty batch", b"[]", "application/json", 400, None),
    ("NaN literal", b'{"value": NaN}', "application/json", 400, None),
    ("Infinity literal", b'{"value": Infinity}', "application/json", 400, None),
    ("overflowing float", b'{"value": 1e400}', "application/json", 400, None),
    ("huge integer", b'{"value": ' + b"9" * 400 + b"}", "application/json", 400, None),
    ("string value", b'{"value": "12"}', "application/json", 400, "invalid_event"),
    ("boolean value", b'{"value": true}', "application/json", 400, "invalid_event"),
    ("null value", b'{"value": null}', "application/json", 400, "invalid_event"),
    ("missing value", b'{"ts": 1}', "application/json", 400, "invalid_event"),
    ("unknown field", b'{"value": 1, "valu": 2}', "application/json", 400, "invalid_event"),
    ("bad ts string", b'{"value": 1, "ts": "yesterday"}', "application/json", 400, "invalid_event"),
    ("boolean ts", b'{"value": 1, "ts": true}', "application/json", 400, "invalid_event"),
    # Taken, it would make every later event of the topic late (its clock never goes back).
    ("far-future ts", b'{"value": 1, "ts": 99999999999}', "application/json", 400, "future_event"),
    (
        "nested tags",
        b'{"value": 1, "tags": {"a": {"b": "c"}}}',
        "application/json",
        400,
        "invalid_event",
    ),
    ("number tag", b'{"value": 1, "tags": {"a": 1}}', "application/json", 400, "invalid_event"),
    ("10 MB body", BIG, "application/json", 413, None),
    ("form content type", b"value=1", "application/x-www-form-urlencoded", 415, None),
    ("no content type", b'{"value": 1}', None, 415, None),
    ("bad ndjson line", b'{"value": 1}\n{"value": \n', "application/x-ndjson", 400, None),
]


TOPIC = "battery"


@pytest.fixture
def battery(client: FlaskClient) -> FlaskClient:
    """A topic with one accepted event, to prove nothing changes."""
    assert client.post(f"/topics/{TOPIC}/events", json={"value": 1}).status_code == 202
    return client


def _state(client: FlaskClient) -> tuple[bytes, int]:
    """The topic's statistics (with its latest update id) and how many updates the process
    has dispatched to streams so far."""
    response = client.get(f"/topics/{TOPIC}/stats")
    assert response.status_code == 200
    assert client.application is not None
    return response.data, client.application.extensions["pushsvc"].hub.received


@pytest.mark.parametrize(
    ("name", "body", "ctype", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_body_is_rejected_and_changes_nothing(
    battery: FlaskClient,
    name: str,
    body: bytes,
    ctype: str | None,
    status: int,
    code: str | None,
) -> None:
    before = _state(battery)
    headers = {"Content-Type": ctype} if ctype else {}
    response = battery.post(f"/topics/{TOPIC}/events", data=body, headers=headers)
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert _state(battery) == before  # no statistic moved, no update went to any stream


def test_rejected_batch_names_the_bad_index(battery: FlaskClient) -> None:
    before = _state(battery)
    batch = [{"value": 1}, {"value": 2}, {"value": "three"}, {"value": 4}]
    response = battery.post(f"/topics/{TOPIC}/events", json=batch)
    assert response.status_code == 400
    assert response.get_json()["error"]["index"] == 2
    assert _state(battery) == before


@pytest.mark.parametrize(
    "bad", ["-leading-dash", "a" * 129, "has%20space", "a%0Ab", "sl/ash", "%C3%A9", ".dot"]
)
def test_bad_topic_names_are_400(client: FlaskClient, bad: str) -> None:
    for method, path in (("POST", f"/topics/{bad}/events"), ("GET", f"/topics/{bad}/stream")):
        response = client.open(path, method=method, json={"value": 1})
        assert response.status_code == 400, (method, path)
        assert response.get_json()["error"]["code"] == "invalid_topic"


def test_bad_stream_pattern_is_400(client: FlaskClient) -> None:
    for query in ("", "?topic=", "?topic=a*b", "?topic=*.x"):
        response = client.get(f"/stream{query}")
        assert response.status_code == 400, query
        assert "error" in response.get_json()


def test_tag_with_sse_control_sequence_cannot_inject_fields(
    server: PushsvcProcess, topic: str
) -> None:
    # On a real socket: what matters is the bytes an EventSource parser reads.
    evil = "x\n\nevent: injected\ndata: owned\r\nid: 999\n"
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        assert post(server.port, topic, {"value": 5, "tags": {"k": evil}})[0] == 202
        message = stream.next()
    assert message.event == "stats"
    update = json.loads(message.data)
    assert update["event"]["tags"] == {"k": evil}
    assert message.id == update["id"]
