"""The bad-input battery: each gets its documented 4xx with a JSON error, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pushsvc.testing.live import PushsvcProcess, SSEClient, request

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


@pytest.fixture(scope="module")
def watched(server: PushsvcProcess) -> Iterator[tuple[PushsvcProcess, str, SSEClient]]:
    """A topic with one accepted event and a subscriber, to prove nothing changes."""
    topic = "battery"
    assert request(server.port, "POST", f"/topics/{topic}/events", {"value": 1})[0] == 202
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        yield server, topic, stream


def _state(server: PushsvcProcess, topic: str) -> bytes:
    status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
    assert status == 200
    return body


@pytest.mark.parametrize(
    ("name", "body", "ctype", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_body_is_rejected_and_changes_nothing(
    watched: tuple[PushsvcProcess, str, SSEClient],
    name: str,
    body: bytes,
    ctype: str | None,
    status: int,
    code: str | None,
) -> None:
    server, topic, stream = watched
    before = _state(server, topic)
    got, headers, reply = request(
        server.port, "POST", f"/topics/{topic}/events", body, content_type=ctype
    )
    assert got == status, reply
    assert headers["content-type"] == "application/json"
    error = json.loads(reply)["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert _state(server, topic) == before
    # The stream got nothing from the rejected request: the next update it sees is this sentinel.
    sentinel = float(len(name))
    assert request(server.port, "POST", f"/topics/{topic}/events", {"value": sentinel})[0] == 202
    assert stream.next_data()[1]["event"]["value"] == sentinel


def test_rejected_batch_names_the_bad_index(watched: tuple[PushsvcProcess, str, SSEClient]) -> None:
    server, topic, _ = watched
    before = _state(server, topic)
    batch = [{"value": 1}, {"value": 2}, {"value": "three"}, {"value": 4}]
    status, _, reply = request(server.port, "POST", f"/topics/{topic}/events", batch)
    assert status == 400
    assert json.loads(reply)["error"]["index"] == 2
    assert _state(server, topic) == before


@pytest.mark.parametrize(
    "bad", ["-leading-dash", "a" * 129, "has%20space", "a%0Ab", "sl/ash", "%C3%A9", ".dot"]
)
def test_bad_topic_names_are_400(server: PushsvcProcess, bad: str) -> None:
    for method, path in (("POST", f"/topics/{bad}/events"), ("GET", f"/topics/{bad}/stream")):
        status, _, reply = request(server.port, method, path, {"value": 1})
        assert status == 400, (method, path)
        assert json.loads(reply)["error"]["code"] == "invalid_topic"


def test_bad_stream_pattern_is_400(server: PushsvcProcess) -> None:
    for query in ("", "?topic=", "?topic=a*b", "?topic=*.x"):
        status, _, reply = request(server.port, "GET", f"/stream{query}")
        assert status == 400, query
        assert "error" in json.loads(reply)


def test_tag_with_sse_control_sequence_cannot_inject_fields(
    watched: tuple[PushsvcProcess, str, SSEClient],
) -> None:
    server, topic, stream = watched
    evil = "x\n\nevent: injected\ndata: owned\r\nid: 999\n"
    assert (
        request(server.port, "POST", f"/topics/{topic}/events", {"value": 5, "tags": {"k": evil}})[
            0
        ]
        == 202
    )
    message = stream.next()
    assert message.event == "stats"
    update = json.loads(message.data)
    assert update["event"]["tags"] == {"k": evil}
    assert message.id == update["id"]
