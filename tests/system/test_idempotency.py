"""Idempotent publishing over HTTP (`Idempotency-Key`), on both brokers, against real `pushsvc
serve` processes: a repeat, racing repeats and a retry after a lost answer are logged once;
another body with the key is a 422; a key belongs to its topic (its window's end:
tests/integration/test_broker_contract.py, on both brokers). The client, `pushsvc publish`,
`pushsvc replay` and the demo send a key and reuse it when they retry (through a proxy that
loses the server's answer)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from harness.live import (
    PushsvcProcess,
    SSEClient,
    metric,
    post,
    request,
    run_tool,
    wait_until,
)
from harness.redis_server import RedisServer

from conftest import MakeApp
from pushsvc.client import Backoff, Client
from pushsvc.demo.publisher import Publisher
from support.proxies import AnswerLosingProxy

REPLAYED = "idempotent-replayed"


def _serve(kind: str, redis_server: RedisServer | None, *args: str) -> PushsvcProcess:
    env = {"PUSHSVC_TICK": "0"}
    if kind == "redis":
        assert redis_server is not None
        env |= {
            "PUSHSVC_REDIS_URL": redis_server.url,
            "PUSHSVC_PREFIX": f"i{uuid.uuid4().hex[:8]}:",
        }
    return PushsvcProcess("serve", *args, env=env).start()


BROKERS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(scope="module", params=BROKERS)
def pushsvc(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    """`pushsvc serve` on the embedded broker or on Redis, shared by the module's tests."""
    redis_server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    proc = _serve(request.param, redis_server)
    yield proc
    proc.stop()


def publish(port: int, topic: str, events: Any, key: str | None) -> tuple[int, dict[str, str], Any]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    status, answer_headers, body = request(
        port, "POST", f"/topics/{topic}/events", events, headers=headers
    )
    return status, answer_headers, json.loads(body)


def logged_values(port: int, topic: str) -> list[float]:
    """The values of every update of `topic`, once a marker event posted now has one: the
    log is applied in order, so everything posted before it is in by then."""
    marker = 1e9 + uuid.uuid4().int % 1000
    assert post(port, topic, {"value": marker})[0] == 202

    def values() -> list[float]:
        status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=10000")
        return [u["event"]["value"] for u in json.loads(body)["updates"]] if status == 200 else []

    wait_until(lambda: marker in values())
    found = values()
    assert found[-1] == marker
    return found[:-1]


# -- the server --------------------------------------------------------------------------------


def test_a_repeat_logs_nothing_and_answers_what_the_first_did(
    pushsvc: PushsvcProcess, topic: str
) -> None:
    accepted_before = metric(pushsvc.port, "pushsvc_events_accepted_total")
    replays_before = metric(pushsvc.port, "pushsvc_idempotent_replays_total")
    with SSEClient(pushsvc.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        batch = [{"value": 1}, {"value": 2}, {"value": 3}]  # no ts: each attempt differs
        status, headers, body = publish(pushsvc.port, topic, batch, "key-1")
        assert (status, body) == (202, {"accepted": 3})
        assert REPLAYED not in headers
        for _ in range(2):
            status, headers, body = publish(pushsvc.port, topic, batch, "key-1")
            assert (status, body, headers[REPLAYED]) == (202, {"accepted": 3}, "true")
        assert post(pushsvc.port, topic, {"value": 4})[0] == 202
        updates = [data for _, data in stream.take(4)]
    # One update per event: the marker follows the three, and the window counted each once.
    assert [u["event"]["value"] for u in updates] == [1.0, 2.0, 3.0, 4.0]
    assert updates[-1]["windows"]["5m"]["count"] == 4
    assert metric(pushsvc.port, "pushsvc_events_accepted_total") == accepted_before + 4
    assert metric(pushsvc.port, "pushsvc_idempotent_replays_total") == replays_before + 2


def test_racing_repeats_log_the_batch_once(pushsvc: PushsvcProcess, topic: str) -> None:
    batch = [{"value": 1}, {"value": 2}]
    start = threading.Barrier(8)
    answers: list[tuple[int, str | None]] = []

    def repeat() -> None:
        start.wait(10)
        status, headers, _ = publish(pushsvc.port, topic, batch, "racing")
        answers.append((status, headers.get(REPLAYED)))

    threads = [threading.Thread(target=repeat) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert Counter(answers) == {(202, None): 1, (202, "true"): 7}
    assert logged_values(pushsvc.port, topic) == [1.0, 2.0]


def test_the_key_with_another_body_is_a_422_that_changes_nothing(
    pushsvc: PushsvcProcess, topic: str
) -> None:
    assert publish(pushsvc.port, topic, {"value": 1}, "reused")[0] == 202
    status, headers, body = publish(pushsvc.port, topic, [{"value": 2}], "reused")
    assert status == 422 and REPLAYED not in headers
    assert body["error"]["code"] == "idempotency_key_reused"
    # The same bytes under another media type are another request too.
    status, _, body = request(
        pushsvc.port,
        "POST",
        f"/topics/{topic}/events",
        json.dumps({"value": 1}),
        content_type="application/x-ndjson",
        headers={"Idempotency-Key": "reused"},
    )
    assert status == 422
    assert logged_values(pushsvc.port, topic) == [1.0]


def test_a_key_belongs_to_its_topic(pushsvc: PushsvcProcess, topic: str) -> None:
    other = f"{topic}.other"
    for name in (topic, other):
        status, headers, body = publish(pushsvc.port, name, [{"value": 5}], "shared")
        assert (status, body) == (202, {"accepted": 1}) and REPLAYED not in headers
    assert logged_values(pushsvc.port, topic) == [5.0]
    assert logged_values(pushsvc.port, other) == [5.0]


def test_a_late_request_is_kept_once_and_its_retry_is_a_replay(
    pushsvc: PushsvcProcess, topic: str
) -> None:
    assert post(pushsvc.port, topic, {"value": 1, "ts": 1_763_700_100})[0] == 202
    late = [{"value": 2, "ts": 1_763_700_000}]
    status, headers, body = publish(pushsvc.port, topic, late, "after-late")
    assert (status, body) == (202, {"accepted": 0, "late": 1}) and REPLAYED not in headers
    status, headers, body = publish(pushsvc.port, topic, late, "after-late")
    assert (status, body) == (202, {"accepted": 0, "late": 1}) and REPLAYED in headers
    # Past the grace: once on the late stream, never on the topic.
    assert logged_values(pushsvc.port, topic) == [1.0]
    assert logged_values(pushsvc.port, f"{topic}.late") == [2.0]


def test_the_key_of_a_request_kept_whole_on_the_late_stream_is_remembered(
    pushsvc: PushsvcProcess, topic: str
) -> None:
    """A request whose every event is past the grace logs nothing on the topic itself, yet its
    key is the topic's like any other: a repeat is answered from it (counted as a replay, the
    late events once), and another body under it is a 422 that logs nothing, whether that
    body's events are late or on time."""
    assert post(pushsvc.port, topic, {"value": 1, "ts": 1_763_700_100})[0] == 202
    late_before = metric(pushsvc.port, "pushsvc_late_events_total")
    replays_before = metric(pushsvc.port, "pushsvc_idempotent_replays_total")
    late = [{"value": 2, "ts": 1_763_700_000}, {"value": 3, "ts": 1_763_700_001}]
    status, headers, body = publish(pushsvc.port, topic, late, "all-late")
    assert (status, body) == (202, {"accepted": 0, "late": 2}) and REPLAYED not in headers
    for _ in range(2):
        status, headers, body = publish(pushsvc.port, topic, late, "all-late")
        assert (status, body, headers.get(REPLAYED)) == (202, {"accepted": 0, "late": 2}, "true")
    others = [
        [{"value": 4, "ts": 1_763_700_200}],  # on time
        [{"value": 5, "ts": 1_763_700_002}],  # late, fewer events
        [{"value": 6, "ts": 1_763_700_300}, {"value": 7, "ts": 1_763_700_003}],  # both
    ]
    for other in others:
        status, headers, body = publish(pushsvc.port, topic, other, "all-late")
        assert status == 422 and REPLAYED not in headers, (other, body)
        assert body["error"]["code"] == "idempotency_key_reused"
    assert metric(pushsvc.port, "pushsvc_late_events_total") == late_before + 2
    assert metric(pushsvc.port, "pushsvc_idempotent_replays_total") == replays_before + 2
    assert logged_values(pushsvc.port, topic) == [1.0]
    assert logged_values(pushsvc.port, f"{topic}.late") == [2.0, 3.0]


KEYS_REFUSED = [
    pytest.param("", id="empty"),
    pytest.param("k" * 129, id="too-long"),
    pytest.param("a b", id="space"),
    pytest.param("caf\u00e9", id="not-ascii"),
    pytest.param("a\tb", id="tab"),
]


@pytest.mark.parametrize("key", KEYS_REFUSED)
def test_a_bad_key_is_a_400_that_changes_nothing(client: FlaskClient, key: str) -> None:
    answer = client.post(
        "/topics/orders/events", json=[{"value": 1}], headers={"Idempotency-Key": key}
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_idempotency_key"
    assert client.get("/topics/orders/stats").status_code == 404


def test_two_keys_in_one_request_are_a_400(client: FlaskClient) -> None:
    answer = client.post(
        "/topics/orders/events",
        json=[{"value": 1}],
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_idempotency_key"
    assert client.get("/topics/orders/stats").status_code == 404


@pytest.mark.parametrize("key", ["k" * 128, '"quoted-as-the-draft-writes-it"', "!~{}"])
def test_any_visible_ascii_key_up_to_128_characters_is_taken(client: FlaskClient, key: str) -> None:
    headers = {"Idempotency-Key": key}
    first = client.post("/topics/orders/events", json=[{"value": 1}], headers=headers)
    again = client.post("/topics/orders/events", json=[{"value": 1}], headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.get("/topics/orders/stats").get_json()["windows"]["5m"]["count"] == 1


def test_a_browser_on_a_cors_origin_may_send_a_key_and_read_the_replay(
    make_app: MakeApp,
) -> None:
    client = make_app(cors_origins="https://a.test").test_client()
    preflight = {
        "Origin": "https://a.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,idempotency-key",
    }
    allowed = client.options("/topics/orders/events", headers=preflight)
    assert "idempotency-key" in allowed.headers["Access-Control-Allow-Headers"].lower()
    headers = {"Origin": "https://a.test", "Idempotency-Key": "browser"}
    client.post("/topics/orders/events", json={"value": 1}, headers=headers)
    again = client.post("/topics/orders/events", json={"value": 1}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    exposed = again.headers["Access-Control-Expose-Headers"].lower()
    assert "idempotent-replayed" in exposed


# -- a retry after the answer was lost ---------------------------------------------------------


@pytest.fixture
def proxy(pushsvc: PushsvcProcess) -> Iterator[AnswerLosingProxy]:
    proxy = AnswerLosingProxy(pushsvc.port)
    yield proxy
    proxy.close()


def test_a_retry_after_a_lost_answer_is_replayed(
    pushsvc: PushsvcProcess, proxy: AnswerLosingProxy, topic: str
) -> None:
    batch = [{"value": 1}, {"value": 2}, {"value": 3}]
    with pytest.raises(ConnectionError):  # the answer never came: was it logged?
        publish(proxy.port, topic, batch, "lost-answer")
    assert proxy.lost == 1
    status, headers, body = publish(pushsvc.port, topic, batch, "lost-answer")
    assert (status, body, headers[REPLAYED]) == (202, {"accepted": 3}, "true")
    assert logged_values(pushsvc.port, topic) == [1.0, 2.0, 3.0]


def test_the_client_retries_a_lost_answer_with_the_same_key(
    pushsvc: PushsvcProcess, proxy: AnswerLosingProxy, topic: str
) -> None:
    waits: list[float] = []
    with Client(proxy.base, backoff=Backoff(retries=3, cap=0.0), sleep=waits.append) as client:
        assert client.publish(topic, [{"value": 1}, {"value": 2}]) == 2
        assert len(waits) == 1  # one retry
        first, retry = proxy.keys()
        assert first and first == retry
        assert logged_values(pushsvc.port, topic) == [1.0, 2.0]
        # The next batch is another request: a fresh key.
        assert client.publish(topic, [{"value": 3}]) == 1
        assert proxy.keys()[2] not in ("", first)


def test_pushsvc_publish_retries_a_lost_answer_with_the_same_key(
    pushsvc: PushsvcProcess, proxy: AnswerLosingProxy, topic: str
) -> None:
    done = run_tool("publish", f"--url={proxy.base}", topic, "1", "2", "3")
    assert done.returncode == 0, done.stderr
    assert "accepted 3" in done.stdout
    first, retry = proxy.keys()
    assert first and first == retry
    assert logged_values(pushsvc.port, topic) == [1.0, 2.0, 3.0]


def test_pushsvc_replay_retries_a_lost_answer_with_the_same_key(
    pushsvc: PushsvcProcess, proxy: AnswerLosingProxy, topic: str, tmp_path: Path
) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text("value\n" + "".join(f"{v}\n" for v in range(5)))
    done = run_tool("replay", f"--url={proxy.base}", str(csv), "--topic", topic, "--batch", "2")
    assert done.returncode == 0, done.stderr
    assert "replayed 5 events" in done.stdout
    keys = proxy.keys()  # three batches, the first sent twice
    assert len(keys) == 4 and keys[0] == keys[1] and len(set(keys)) == 3
    assert logged_values(pushsvc.port, topic) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_demo_retries_a_lost_answer_with_the_same_key(
    pushsvc: PushsvcProcess, proxy: AnswerLosingProxy, topic: str
) -> None:
    waits: list[float] = []
    publisher = Publisher(proxy.base, sleep=waits.append)
    try:
        assert publisher.post(topic, [{"value": 1}, {"value": 2}])
    finally:
        publisher.close()
    assert len(waits) == 1
    first, retry = proxy.keys()
    assert first and first == retry
    assert logged_values(pushsvc.port, topic) == [1.0, 2.0]
