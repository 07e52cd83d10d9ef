"""Publishing to many topics in one request (`POST /events`, `POST /broadcast`), the app
in-process on the memory broker, on one redis-server and on a Redis Cluster whose partitions
the request's topics spread over: every topic's events logged together or not at all, the
others untouched by one topic's refusal; a malformed request changes nothing; scopes and every
bound judged; a retry with the same Idempotency-Key logs nothing twice and answers the same.

All of this module's cluster cases share one `redis_cluster` (a module runs on one worker)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from harness.live import PushsvcProcess, wait_until
from harness.redis_cluster import RedisClusterServers

from conftest import MakeApp
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.ingest.input_limits import MAX_BATCH
from support.auth_tokens import SECRET, hs256

T0 = 1_763_700_000.0
NDJSON = "application/x-ndjson"
PARTITIONS = 16

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


Deploy = Callable[..., FlaskClient]


@pytest.fixture(params=BACKENDS)
def deploy(request: pytest.FixtureRequest, make_app: MakeApp) -> Iterator[Deploy]:
    """`deploy(**settings)`: the app's test client on each kind of broker; on Redis a web app
    in-process beside a `pushsvc aggregate` process with the same settings."""
    aggregators: list[PushsvcProcess] = []

    def make(**settings: str) -> FlaskClient:
        if request.param == "memory":
            return make_app(**settings).test_client()
        if request.param == "redis":
            url = request.getfixturevalue("redis_server").url
        else:
            url = request.getfixturevalue("redis_cluster").url
        prefix = f"m{uuid.uuid4().hex[:8]}:"
        env = {f"PUSHSVC_{k.upper()}": v for k, v in settings.items()}
        env |= {"PUSHSVC_REDIS_URL": url, "PUSHSVC_PREFIX": prefix, "PUSHSVC_TICK": "0"}
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
        aggregators.append(aggregator)
        aggregator.wait_for_log("took the lease")
        return make_app(redis_url=url, prefix=prefix, **settings).test_client()

    yield make
    for aggregator in aggregators:
        aggregator.stop()


@pytest.fixture
def strict_rules(tmp_path: Path) -> str:
    """Topics `strict.*` refuse a batch with a late event, whole."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ntopics = ["strict.*"]\ngrace = "1s"\nlate = "refuse"\n')
    return str(rules)


def _topics_in_partitions(app: Flask, count: int, stem: str) -> list[str]:
    """`count` topics named after `stem`, in as many partitions as the broker has (the memory
    broker of one process has one)."""
    broker = app.extensions["pushsvc"].broker
    wanted = min(count, broker.partitions)
    found: dict[int, str] = {}
    names = (f"{stem}{i}" for i in range(10_000))
    while len(found) < wanted:
        name = next(names)
        found.setdefault(broker.partition_of(name), name)
    topics = list(found.values())
    return topics + [f"{stem}x{i}" for i in range(count - len(topics))]


MARKER = 1e12


def logged(
    client: FlaskClient, topic: str, headers: dict[str, str] | None = None, *, late: int = 0
) -> list[Any]:
    """What `topic`'s history holds, each update's event (value or message data), in order.
    Beside a separate aggregator, once a marker event posted now is in it (the log of a
    topic is applied in order, so everything posted before is in by then); on a late stream,
    which takes no posts, once it holds `late` events."""
    runtime = client.application.extensions["pushsvc"]
    separate = runtime.partitions is None
    if separate and not late:
        marker = post(client, f"/topics/{topic}/events", {"value": MARKER}, **(headers or {}))
        assert marker[0] == 202, marker

    def read() -> list[Any]:
        answer = client.get(f"/topics/{topic}/history?limit=10000", headers=headers or {})
        if answer.status_code == 404:
            return []
        assert answer.status_code == 200, answer.get_data()
        events = [update["event"] for update in answer.get_json()["updates"]]
        return [e.get("value", e.get("data")) for e in events]

    if separate:
        if late:
            wait_until(lambda: len(read()) >= late, timeout=30, what=f"{topic} held {late}")
        else:
            wait_until(lambda: MARKER in read(), timeout=30, what=f"{topic} held its marker")
    return [value for value in read() if value != MARKER]


def post(
    client: FlaskClient, path: str, body: Any, *, key: str | None = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    if key is not None:
        headers["Idempotency-Key"] = key
    if isinstance(body, bytes):
        answer = client.post(path, data=body, headers=headers)
    else:
        answer = client.post(path, json=body, headers=headers)
    return answer.status_code, answer.get_json(), dict(answer.headers)


# Across partitions, on every broker ---------------------------------------------------------


def test_a_batch_over_several_partitions_logs_each_topics_events_in_order(
    deploy: Deploy, redis_cluster_if: Any
) -> None:
    client = deploy()
    app = client.application
    a, b, c = _topics_in_partitions(app, 3, f"u{uuid.uuid4().hex[:6]}-")
    redis_cluster_if(app, [a, b, c])
    batch = [
        {"topic": a, "value": 1},
        {"topic": b, "type": "shipped", "data": {"order": 1}},
        {"topic": a, "value": 2},
        {"topic": c, "value": 3},
        {"topic": a, "value": 4},
    ]
    status, answer, _ = post(client, "/events", batch, key=str(uuid.uuid4()))
    assert status == 202, answer
    assert answer == {
        "results": [
            {"topic": a, "items": [0, 2, 4], "accepted": 3, "late": 0},
            {"topic": b, "items": [1], "accepted": 1, "late": 0},
            {"topic": c, "items": [3], "accepted": 1, "late": 0},
        ],
        "accepted": 5,
        "late": 0,
        "refused": 0,
    }
    assert logged(client, a) == [1, 2, 4]
    assert logged(client, b) == [{"order": 1}]
    assert logged(client, c) == [3]


def test_one_topic_refused_leaves_the_others_logged_and_none_of_its_own(
    deploy: Deploy, strict_rules: str
) -> None:
    """Atomic per topic: the strict topic's on-time event before its late one is not logged
    either; the other topics' events are."""
    client = deploy(rules=strict_rules)
    stem = uuid.uuid4().hex[:6]
    strict, free = f"strict.{stem}", f"free.{stem}"
    assert post(client, "/events", [{"topic": strict, "value": 0, "ts": T0}])[0] == 202
    batch = [
        {"topic": free, "value": 1, "ts": T0},
        {"topic": strict, "value": 2, "ts": T0 + 1},
        {"topic": strict, "value": 3, "ts": T0 - 10},  # past the grace: refuses its topic's
        {"topic": free, "value": 4, "ts": T0 - 10},  # past the grace: its late stream
    ]
    status, answer, _ = post(client, "/events", batch)
    assert status == 207, answer
    assert answer["results"][0] == {"topic": free, "items": [0, 3], "accepted": 1, "late": 1}
    refused = answer["results"][1]
    assert refused["topic"] == strict and refused["items"] == [1, 2]
    assert refused["error"]["code"] == "late_event" and refused["error"]["index"] == 2
    assert (answer["accepted"], answer["late"], answer["refused"]) == (1, 1, 2)
    assert logged(client, strict) == [0]
    assert logged(client, free) == [1]
    assert logged(client, f"{free}.late", late=1) == [4]


def test_a_retry_with_the_key_logs_nothing_twice_and_answers_the_same(
    deploy: Deploy,
) -> None:
    client = deploy()
    app = client.application
    topics = _topics_in_partitions(app, 3, f"r{uuid.uuid4().hex[:6]}-")
    batch = [{"topic": t, "value": i, "ts": T0 + i} for i, t in enumerate(topics * 2)]
    batch.append({"topic": topics[0], "value": 99, "ts": T0 - 60})  # late
    key = str(uuid.uuid4())
    first = post(client, "/events", batch, key=key)
    again = post(client, "/events", batch, key=key)
    assert first[0] == again[0] == 202
    assert first[1] == again[1]
    assert first[1]["late"] == 1
    assert "Idempotent-Replayed" not in first[2]
    assert again[2]["Idempotent-Replayed"] == "true"
    for i, topic in enumerate(topics):
        assert logged(client, topic) == [i, i + 3]
    assert logged(client, f"{topics[0]}.late", late=1) == [99]
    # The same key with another body: refused whole, nothing changed.
    other = [{**batch[0], "value": -1}, *batch[1:]]
    status, answer, _ = post(client, "/events", other, key=key)
    assert status == 422 and answer["error"]["code"] == "idempotency_key_reused"
    assert logged(client, topics[0]) == [0, 3]


def test_a_broadcast_logs_one_event_on_each_topic(
    deploy: Deploy,
) -> None:
    client = deploy()
    app = client.application
    topics = _topics_in_partitions(app, 4, f"b{uuid.uuid4().hex[:6]}-")
    body = {"topics": topics, "type": "notice", "data": {"text": "maintenance at 6"}}
    key = str(uuid.uuid4())
    status, answer, _ = post(client, "/broadcast", body, key=key)
    assert status == 202, answer
    assert answer["results"] == [
        {"topic": t, "items": [i], "accepted": 1, "late": 0} for i, t in enumerate(topics)
    ]
    assert post(client, "/broadcast", body, key=key)[1] == answer
    for topic in topics:
        assert logged(client, topic) == [{"text": "maintenance at 6"}]


@pytest.fixture
def redis_cluster_if(request: pytest.FixtureRequest) -> Any:
    """A check that, on the cluster, the topics given fall in partitions of more than one
    primary (a no-op on the other brokers)."""

    def check(app: Flask, topics: list[str]) -> None:
        if request.node.callspec.params.get("deploy") != "cluster":
            return
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        broker = app.extensions["pushsvc"].broker
        slots = {partition_slot(broker.partition_of(t), broker.partitions) for t in topics}
        owners = {cluster.owner_of(slot).port for slot in slots}
        assert len(owners) > 1, owners

    return check


# A malformed request changes nothing --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "index"),
    [
        (b'[{"topic": "x1", "value": 1}, {"topic": "x2", "value": "a"}]', None, 400,
         "invalid_event", 1),
        (b'[{"topic": "x1", "value": 1}, {"value": 2}]', None, 400, "invalid_event", 1),
        (b'[{"topic": "x1", "value": 1}, {"topic": "no good", "value": 2}]', None, 400,
         "invalid_topic", 1),
        (b'[{"topic": "x1", "value": 1}, 7]', None, 400, "invalid_event", 1),
        (b'[{"topic": "x1", "value": 1}, {"topic": "x2", "value": 1, "ts": 9e9}]', None, 400,
         "future_event", 1),
        (b'[{"topic": "x1", "value": 1}, {"topic": "x2", "value": 1, "extra": 1}]', None, 400,
         "invalid_event", 1),
        (b'[{"topic": "x1", "value": 1}, {"topic": "x2", "value": NaN}]', None, 400,
         "invalid_event", 1),
        (b'[{"topic": "x1", "value": 1}, {"topic": "x2", "data": 123456789012345678901234}]',
         None, 400, "wide_integer", 1),
        (b'{"topic": "x1", "value": 1}', None, 400, "bad_request", None),
        (b"[]", None, 400, "bad_request", None),
        (b'[{"topic": "x1", "value": 1}', None, 400, "malformed_json", None),
        (b'{"topic": "x1", "value": 1}\n{"topic": "x2", "value": []}\n', NDJSON, 400,
         "invalid_event", 1),
        (b'{"topic": "x1", "value": 1}\n{"topic": "x2"\n', NDJSON, 400, "malformed_json", None),
        (b'[{"topic": "x1", "value": 1}]', "text/plain", 415, "unsupported_media_type", None),
    ],
)  # fmt: skip
def test_a_malformed_batch_is_refused_whole_and_changes_nothing(
    client: FlaskClient,
    body: bytes,
    content_type: str | None,
    status: int,
    code: str,
    index: int | None,
) -> None:
    stem = uuid.uuid4().hex[:6]
    body = body.replace(b'"x1"', f'"{stem}-1"'.encode()).replace(b'"x2"', f'"{stem}-2"'.encode())
    answer = client.post(
        "/events", data=body, headers={"Content-Type": content_type or "application/json"}
    )
    assert answer.status_code == status, answer.get_data()
    error = answer.get_json()["error"]
    assert error["code"] == code
    assert error.get("index") == index
    assert logged(client, f"{stem}-1") == [] and logged(client, f"{stem}-2") == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"topics": ["a1", "a2", "a1"], "value": 1}, 400, "bad_request"),
        ({"topics": [], "value": 1}, 400, "bad_request"),
        ({"topics": "a1", "value": 1}, 400, "bad_request"),
        ({"topics": ["a1", "not valid"], "value": 1}, 400, "invalid_topic"),
        ({"topics": ["a1", "a2"]}, 400, "invalid_event"),
        ({"topics": ["a1", "a2"], "value": 1, "nope": 2}, 400, "invalid_event"),
        ([{"topic": "a1", "value": 1}], 400, "bad_request"),
    ],
)
def test_a_malformed_broadcast_is_refused_whole(
    client: FlaskClient, body: Any, status: int, code: str
) -> None:
    stem = uuid.uuid4().hex[:6]
    text = json.dumps(body).replace('"a1"', f'"{stem}-1"').replace('"a2"', f'"{stem}-2"')
    answer = client.post("/broadcast", data=text, content_type="application/json")
    assert answer.status_code == status, answer.get_data()
    assert answer.get_json()["error"]["code"] == code
    assert logged(client, f"{stem}-1") == [] and logged(client, f"{stem}-2") == []


# Scopes, per topic ---------------------------------------------------------------------------


@pytest.fixture
def secured(make_app: MakeApp) -> Iterator[FlaskClient]:
    yield make_app(jwt_key=SECRET).test_client()


def _bearer(*topics: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256(publish=list(topics), subscribe=['*'])}"}


def test_a_token_for_one_user_cannot_publish_to_another_inside_a_batch(
    secured: FlaskClient,
) -> None:
    stem = uuid.uuid4().hex[:6]
    u1, u2 = f"{stem}.u1", f"{stem}.u2"
    batch = [{"topic": u1, "data": "yours"}, {"topic": u2, "data": "not yours"}]
    status, answer, _ = post(secured, "/events", batch, **_bearer(u1))
    assert status == 207, answer
    assert answer["results"][0] == {"topic": u1, "items": [0], "accepted": 1, "late": 0}
    assert answer["results"][1]["error"]["code"] == "forbidden"
    assert answer["results"][1]["status"] == 403
    reader = _bearer("*")
    assert logged(secured, u1, reader) == ["yours"]
    assert logged(secured, u2, reader) == []
    # The same in a broadcast.
    status, answer, _ = post(secured, "/broadcast", {"topics": [u2, u1], "data": 1}, **_bearer(u1))
    assert status == 207
    assert [r.get("error", {}).get("code") for r in answer["results"]] == ["forbidden", None]
    # Without a token: 401, nothing logged.
    status, answer, headers = post(secured, "/events", batch)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert logged(secured, u1, reader) == ["yours", 1]
    assert logged(secured, u2, reader) == []


# Bounds --------------------------------------------------------------------------------------


def test_the_body_bound_is_in_bytes_exactly(make_app: MakeApp) -> None:
    client = make_app(max_body=200).test_client()
    stem = uuid.uuid4().hex[:6]
    item = f'{{"topic": "{stem}", "value": 1}}'.encode()
    fits = b"[" + item + b"," + b" " * (200 - 3 - 2 * len(item)) + item + b"]"
    assert len(fits) == 200
    assert client.post("/events", data=fits, content_type="application/json").status_code == 202
    over = fits[:-1] + b" ]"
    answer = client.post("/events", data=over, content_type="application/json")
    assert answer.status_code == 413 and answer.get_json()["error"]["code"] == "payload_too_large"
    assert logged(client, stem) == [1, 1]


def test_batch_length_message_size_and_tags_are_bounded_per_request(make_app: MakeApp) -> None:
    client = make_app().test_client()
    stem = uuid.uuid4().hex[:6]
    over = [{"topic": f"{stem}-{i % 4}", "value": i} for i in range(MAX_BATCH + 1)]
    status, answer, _ = post(client, "/events", over)
    assert status == 413 and answer["error"]["code"] == "payload_too_large"
    over_lines = b"".join(json.dumps(item).encode() + b"\n" for item in over)
    answer = client.post("/events", data=over_lines, content_type=NDJSON)
    assert answer.status_code == 413
    topics = [f"{stem}-{i}" for i in range(MAX_BATCH + 1)]
    status, answer, _ = post(client, "/broadcast", {"topics": topics, "value": 1})
    assert status == 413
    tags = {f"t{i}": "v" for i in range(17)}
    status, answer, _ = post(client, "/events", [{"topic": f"{stem}-2", "value": 1, "tags": tags}])
    assert status == 400 and answer["error"]["code"] == "invalid_event"
    # A message's data: a sixteenth of --max-body, here 16 bytes.
    small = make_app(max_body="256").test_client()
    big = [{"topic": f"{stem}-0", "value": 1}, {"topic": f"{stem}-1", "data": "x" * 20}]
    status, answer, _ = post(small, "/events", big)
    assert status == 413 and answer["error"]["index"] == 1
    for i in range(4):
        assert logged(client, f"{stem}-{i}") == [] and logged(small, f"{stem}-{i}") == []


def test_the_publish_rate_counts_every_event_of_the_request(make_app: MakeApp) -> None:
    client = make_app(publish_rate=5).test_client()
    stem = uuid.uuid4().hex[:6]
    batch = [{"topic": f"{stem}-{i % 3}", "value": i} for i in range(12)]
    assert post(client, "/events", batch)[0] == 202
    status, answer, headers = post(client, "/events", [{"topic": f"{stem}-x", "value": 1}])
    assert status == 429 and answer["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    assert logged(client, f"{stem}-x") == []


def test_max_topics_refuses_the_new_topics_only_and_a_retry_logs_them_once_room_is_made(
    make_app: MakeApp,
) -> None:
    # One publisher here: its share of the topics is the whole table.
    client = make_app(max_topics=2, max_topics_per_publisher=2).test_client()
    stem = uuid.uuid4().hex[:6]
    old, new, other = f"{stem}-old", f"{stem}-new", f"{stem}-other"
    assert post(client, f"/topics/{old}/events", {"value": 0})[0] == 202
    assert post(client, f"/topics/{other}/events", {"value": 0})[0] == 202
    batch = [{"topic": old, "value": 1}, {"topic": new, "value": 2}]
    key = str(uuid.uuid4())
    status, answer, _ = post(client, "/events", batch, key=key)
    assert status == 207
    assert answer["results"][1]["error"]["code"] == "too_many_topics"
    assert client.delete(f"/topics/{other}").status_code == 200
    status, answer, headers = post(client, "/events", batch, key=key)
    assert status == 202, answer
    assert "Idempotent-Replayed" not in headers  # the new topic's events were logged now
    assert logged(client, old) == [0, 1]
    assert logged(client, new) == [2]


def test_a_key_reused_on_a_later_topic_refuses_that_topic_only(client: FlaskClient) -> None:
    """The request's first topic is appended first: a reused key found there refuses the
    request whole (above); found on a later topic only, it refuses that topic's events."""
    stem = uuid.uuid4().hex[:6]
    key = str(uuid.uuid4())
    first = [{"topic": f"{stem}-b", "value": 1}]
    assert post(client, "/events", first, key=key)[0] == 202
    other = [{"topic": f"{stem}-a", "value": 2}, {"topic": f"{stem}-b", "value": 3}]
    status, answer, _ = post(client, "/events", other, key=key)
    assert status == 207
    assert answer["results"][0] == {"topic": f"{stem}-a", "items": [0], "accepted": 1, "late": 0}
    refused = answer["results"][1]
    assert (refused["error"]["code"], refused["status"]) == ("idempotency_key_reused", 422)
    assert logged(client, f"{stem}-b") == [1]
