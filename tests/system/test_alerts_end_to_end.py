"""Alerts end to end, on the embedded broker and on Redis: values that trip, hold and clear an
alert show up on the reserved topic `_alerts` as pending, firing and resolved, once each, in
order, with their values; `GET /alerts` agrees at each step; a resume with Last-Event-ID replays
exactly the changes missed, and `GET /topics/_alerts/history` answers them too; producers
cannot post to `_alerts`; a group is an instance of its own; an alert on a count of messages by
type fires while they come and resolves once they stop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, start_tool
from harness.redis_server import RedisServer

from support.auth_tokens import SECRET, hs256

RULES = """
[[rule]]
topics = ["oven.*"]
windows = ["10s"]
stats = ["count", "mean", "max"]
group_by = ["tray"]

[[alert]]
name = "hot_oven"
topics = ["oven.*"]
when = "max[10s] > 250"
clear = "max[10s] < 200"
for = "3s"
labels = { severity = "page" }
annotations = { summary = "an oven runs hot" }

[[rule]]
topics = ["line.*"]
windows = ["10s"]
stats = ["count"]

[[alert]]
name = "line_errors"
topics = ["line.*"]
when = "messages(error)[10s] > 2"
labels = { severity = "ticket" }
"""
T0 = 1_763_700_000.0


@pytest.fixture(scope="module", params=["memory", "redis"])
def alerting(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("alerts") / "rules.toml"
    rules.write_text(RULES)
    args = ["serve", "--tick", "0", "--rules", str(rules)]
    redis_server = None
    if request.param == "redis":
        redis_server = RedisServer().start()
        args += ["--redis-url", redis_server.url, "--prefix", "alerts:"]
    proc = PushsvcProcess(*args).start()
    yield proc
    proc.stop()
    if redis_server is not None:
        redis_server.stop()


def _active(port: int) -> list[tuple[str, str, Any, str]]:
    status, _, body = request(port, "GET", "/alerts")
    assert status == 200
    return [(a["alert"], a["topic"], a["group"], a["state"]) for a in json.loads(body)["alerts"]]


def _post(port: int, topic: str, at: float, value: float, tray: str = "a") -> None:
    assert post(port, topic, {"value": value, "ts": T0 + at, "tags": {"tray": tray}})[0] == 202


def test_an_alert_goes_pending_firing_and_resolved_once_each(alerting: PushsvcProcess) -> None:
    port = alerting.port
    topic = f"oven.{alerting.port}"
    with SSEClient(port, "/topics/_alerts/stream") as stream:
        stream.next_data("snapshot")
        _post(port, topic, 0, 180)
        _post(port, topic, 1, 260)  # trips: pending (for 3 s)
        first_id, pending = stream.next_data("alert")
        assert _active(port) == [
            ("hot_oven", topic, None, "pending"),
            ("hot_oven", topic, {"tray": "a"}, "pending"),
        ]
        _post(port, topic, 2, 230)  # between the thresholds: still pending
        _post(port, topic, 4, 240)  # 3 s after it tripped: firing
        changes = [stream.next_data("alert")[1] for _ in range(3)]
        assert _active(port) == [
            ("hot_oven", topic, None, "firing"),
            ("hot_oven", topic, {"tray": "a"}, "firing"),
        ]
        _post(port, topic, 15, 190)  # the 260 left the 10 s window: max 190 < 200, resolved
        changes += [stream.next_data("alert")[1] for _ in range(2)]
    assert _active(port) == []
    every = [pending, *changes]
    assert [(c["group"], c["state"], c["since"]) for c in every] == [
        (None, "pending", T0 + 1),
        ({"tray": "a"}, "pending", T0 + 1),
        (None, "firing", T0 + 4),
        ({"tray": "a"}, "firing", T0 + 4),
        (None, "resolved", T0 + 15),
        ({"tray": "a"}, "resolved", T0 + 15),
    ]
    assert [c["value"] for c in every] == [260, 260, 260, 260, 190, 190]
    assert every[0]["labels"] == {"severity": "page"}
    assert every[0]["annotations"] == {"summary": "an oven runs hot"}
    # A resume replays exactly the changes after the id it gives.
    with SSEClient(port, "/topics/_alerts/stream", headers={"Last-Event-ID": first_id}) as again:
        replayed = [again.next_data("alert")[1] for _ in range(5)]
    assert [(c["group"], c["state"]) for c in replayed] == [
        (c["group"], c["state"]) for c in every[1:]
    ]
    # The history answers them as streamed (other tests' topics share `_alerts`).
    assert [c for c in _alerts_history(port)["updates"] if c["topic"] == topic] == every


def test_an_alert_on_error_messages_fires_and_resolves_when_they_stop(
    alerting: PushsvcProcess,
) -> None:
    port = alerting.port
    topic = f"line.{port}"

    def message(at: float, kind: str) -> None:
        event = {"type": kind, "data": {"at": at}, "ts": T0 + at}
        assert post(port, topic, event)[0] == 202

    with SSEClient(port, "/topics/_alerts/stream") as stream:
        stream.next_data("snapshot")
        message(0, "error")
        message(1, "shipped")
        message(2, "error")
        message(3, "shipped")  # two errors in the window: not more than 2
        assert _active(port) == []
        message(4, "error")  # three: firing
        _, firing = stream.next_data("alert")
        assert _active(port) == [("line_errors", topic, None, "firing")]
        message(11, "shipped")  # the error at 0 left the window: two again, resolved
        _, resolved = stream.next_data("alert")
    assert [(c["topic"], c["state"], c["value"], c["since"]) for c in (firing, resolved)] == [
        (topic, "firing", 3, T0 + 4),
        (topic, "resolved", 2, T0 + 11),
    ]
    assert firing["labels"] == {"severity": "ticket"}
    assert _active(port) == []


def _alerts_history(port: int, query: str = "", headers: dict[str, str] | None = None) -> Any:
    status, _, body = request(port, "GET", f"/topics/_alerts/history{query}", headers=headers)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?format=csv", "JSON only"),
        (f"?since={T0:.0f}", "takes an update id"),
        ("?group=tray:a", "no groups"),
    ],
)
def test_the_alerts_history_refuses_what_it_cannot_answer(
    alerting: PushsvcProcess, query: str, says: str
) -> None:
    status, _, body = request(alerting.port, "GET", f"/topics/_alerts/history{query}")
    assert status == 400 and says in json.loads(body)["error"]["message"]


def test_producers_cannot_post_to_the_alerts_topic(alerting: PushsvcProcess) -> None:
    status, body = post(alerting.port, "_alerts", {"value": 1})
    assert status == 400 and "invalid topic" in body["error"]["message"]


def test_pushsvc_alerts_prints_the_active_then_follows(alerting: PushsvcProcess) -> None:
    port = alerting.port
    topic = f"oven.cli{alerting.port}"
    _post(port, topic, 0, 300, tray="b")  # pending, for the topic and its tray
    proc = start_tool("alerts", f"--url={alerting.base}")
    assert proc.stdout is not None
    try:
        first = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [
            (line["event"], line["data"]["state"], line["data"]["group"]) for line in first
        ] == [
            ("active", "pending", None),
            ("active", "pending", {"tray": "b"}),
        ]
        _post(port, topic, 5, 310, tray="b")  # firing
        changes = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [(c["event"], c["data"]["state"]) for c in changes] == [
            ("alert", "firing"),
            ("alert", "firing"),
        ]
        assert all(c["id"] for c in changes)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("secured") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--rules", str(rules), env={"PUSHSVC_JWT_KEY": SECRET}
    ).start()
    yield proc
    proc.stop()


def _bearer(**scopes: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256(**scopes)}"}


def test_a_token_sees_only_the_instances_of_topics_it_may_read(secured: PushsvcProcess) -> None:
    port = secured.port
    admin = _bearer(publish=["*"])
    mine = _bearer(subscribe=["oven.mine"])
    with (
        SSEClient(port, "/topics/_alerts/stream", headers=mine) as narrow,
        SSEClient(port, "/stream?topic=*", headers=mine) as pattern,
        SSEClient(port, "/topics/_alerts/stream", headers=_bearer(subscribe=["*"])) as wide,
    ):
        for stream in (narrow, pattern, wide):
            stream.next_data("snapshot")
        for topic in ("oven.theirs", "oven.mine"):
            event = {"value": 300.0, "ts": T0, "tags": {"tray": "a"}}
            assert post(port, topic, event, headers=admin)[0] == 202
        seen_wide = [wide.next_data("alert")[1]["topic"] for _ in range(4)]
        narrow_first_id, first = narrow.next_data("alert")
        seen_narrow = [first["topic"], narrow.next_data("alert")[1]["topic"]]
        seen_pattern = [pattern.next_data("alert")[1]["topic"] for _ in range(2)]
    assert seen_wide == ["oven.theirs"] * 2 + ["oven.mine"] * 2
    assert seen_narrow == seen_pattern == ["oven.mine"] * 2
    # A replay under the narrow scope leaves the others' out too; so does what follows it.
    headers = {**mine, "Last-Event-ID": narrow_first_id}
    with SSEClient(port, "/topics/_alerts/stream", headers=headers) as resumed:
        for topic in ("oven.theirs", "oven.mine"):
            event = {"value": 300.0, "ts": T0 + 4, "tags": {"tray": "a"}}  # `for` passed
            assert post(port, topic, event, headers=admin)[0] == 202
        replayed = [resumed.next_data("alert")[1] for _ in range(3)]
    assert [(c["topic"], c["group"], c["state"]) for c in replayed] == [
        ("oven.mine", {"tray": "a"}, "pending"),
        ("oven.mine", None, "firing"),
        ("oven.mine", {"tray": "a"}, "firing"),
    ]
    # GET /alerts and the history of `_alerts` answer the same way.
    assert {c["topic"] for c in _alerts_history(port, headers=mine)["updates"]} == {"oven.mine"}
    everyone = _alerts_history(port, headers=_bearer(subscribe=["*"]))
    assert {c["topic"] for c in everyone["updates"]} == {"oven.mine", "oven.theirs"}
    status, _, body = request(port, "GET", "/alerts", headers=mine)
    assert status == 200
    assert {a["topic"] for a in json.loads(body)["alerts"]} == {"oven.mine"}
    status, _, _ = request(port, "GET", "/topics/_alerts/stream", headers=_bearer(publish=["*"]))
    assert status == 403  # a token that may read nothing
