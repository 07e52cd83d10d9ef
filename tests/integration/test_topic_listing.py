"""`GET /topics` and `GET /alerts` a page at a time: each topic (alert instance) the caller
may read listed once, in order, across pages, also while others come and go between them;
`?limit=` bounded; bad `?limit=` or `?after=` a 400; a scope's invisible topics never listed,
and (topics) never counted against a page, (alerts) a bounded number read per call.

Pages under change are held against the brokers themselves (embedded and Redis, several
partitions), driven by Hypothesis; the HTTP answers in-process (Flask's test client).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from flask.testing import FlaskClient
from harness.fenced_publish import publish as publish_fenced
from harness.redis_server import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MakeApp
from pushsvc.broker.base import ServingBroker
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.redis import RedisBroker
from pushsvc.client import calls
from pushsvc.core.topic_pages import DEFAULT_LIMIT, MAX_LIMIT, topic_ranges
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import UpdateDraft, alert_draft, deletion_draft
from support.auth_tokens import SECRET, hs256

names = st.sampled_from([f"{a}{b}" for a in "abc" for b in ("", ".1", ".2", "-x")])


def publish(broker: ServingBroker, topic: str) -> None:
    publish_fenced(broker, [UpdateDraft(topic, 1_000_000, b'{"topic":"%s"}' % topic.encode())])


def delete(broker: ServingBroker, topic: str) -> None:
    publish_fenced(broker, [deletion_draft(topic, 1_000_000)])


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def brokers(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Make a fresh, empty broker of the kind (on Redis: a new prefix, four partitions)."""
    made: list[ServingBroker] = []

    def make() -> ServingBroker:
        broker: ServingBroker
        if request.param == "memory":
            broker = MemoryBroker.serving(partitions=4)  # as many as on Redis
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            broker = RedisBroker(server.url, prefix=f"t{uuid.uuid4().hex[:10]}:", partitions=4)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.sets(names, max_size=12),
    changes=st.lists(st.lists(st.tuples(st.booleans(), names), max_size=3), max_size=8),
    limit=st.integers(1, 4),
)
def test_every_topic_kept_throughout_is_listed_once_while_others_come_and_go(
    brokers: Any,
    before: set[str],
    changes: list[list[tuple[bool, str]]],
    limit: int,
) -> None:
    broker = brokers()
    for topic in before:
        publish(broker, topic)
    ranges = topic_ranges(["*"])
    present = set(before)
    ever = set(before)  # every topic that existed at some moment of the listing
    churned: set[str] = set()  # created or deleted during it
    listed: list[str] = []
    after = None
    steps = iter(changes)
    while True:
        page = broker.latest_page(ranges, after=after, limit=limit)
        assert len(page.latest) <= limit
        listed += page.latest
        if page.next is None:
            break
        after = page.next
        for create, topic in next(steps, []):  # between two pages
            churned.add(topic)
            if create:
                publish(broker, topic)
                present.add(topic)
                ever.add(topic)
            elif topic in present:
                delete(broker, topic)
                present.discard(topic)
    assert listed == sorted(set(listed))  # in name order, none twice
    assert set(listed) <= ever
    assert (before - churned) <= set(listed)


def _post(client: FlaskClient, topic: str, **headers: str) -> None:
    answer = client.post(f"/topics/{topic}/events", json={"value": 1}, headers=headers)
    assert answer.status_code == 202, answer.get_json()


def _pages(client: FlaskClient, limit: int, **headers: str) -> list[dict[str, Any]]:
    pages, query = [], f"/topics?limit={limit}"
    while True:
        answer = client.get(query, headers=headers)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        pages.append(body)
        link = answer.headers.get("Link")
        if body["next"] is None:
            assert link is None
            return pages
        assert link == f'<topics?limit={limit}&after={body["next"]}>; rel="next"'
        query = "/" + link[1 : link.index(">")]  # the link as given, relative to /topics


def test_pages_list_every_topic_once_in_name_order_and_say_where_the_next_starts(
    client: FlaskClient,
) -> None:
    topics = [f"p{n:02d}" for n in range(23)]
    for topic in reversed(topics):
        _post(client, topic)
    pages = _pages(client, 5)
    assert [len(p["topics"]) for p in pages] == [5, 5, 5, 5, 3]
    assert [t["topic"] for p in pages for t in p["topics"]] == topics
    assert pages[0]["next"] == "p04"
    whole = client.get("/topics").get_json()  # the default page holds these 23
    assert [t["topic"] for t in whole["topics"]] == topics and whole["next"] is None
    first = whole["topics"][0]
    assert set(first) == {"topic", "last_id", "last_ts", "subscribers"}


def test_a_page_holds_at_most_the_default_or_the_largest_limit(client: FlaskClient) -> None:
    for n in range(DEFAULT_LIMIT + 1):
        _post(client, f"d{n:04d}")
    default = client.get("/topics").get_json()
    assert (
        len(default["topics"]) == DEFAULT_LIMIT and default["next"] == f"d{DEFAULT_LIMIT - 1:04d}"
    )
    rest = client.get(f"/topics?after={default['next']}").get_json()
    assert [t["topic"] for t in rest["topics"]] == [f"d{DEFAULT_LIMIT:04d}"]
    assert len(client.get(f"/topics?limit={MAX_LIMIT}").get_json()["topics"]) == DEFAULT_LIMIT + 1


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "?limit="),
        (f"limit={MAX_LIMIT + 1}", "?limit="),
        ("limit=-1", "?limit="),
        ("limit=ten", "?limit="),
        ("limit=", "?limit="),
        ("limit=1e3", "?limit="),
        ("after=", "?after="),
        ("after=a%20b", "?after="),
        ("after=_alerts", "?after="),
        ("after=" + "x" * 129, "?after="),
        ("limit=5&after=.a", "?after="),
    ],
)
def test_a_bad_limit_or_cursor_is_a_400_naming_it(
    client: FlaskClient, query: str, named: str
) -> None:
    answer = client.get(f"/topics?{query}")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "bad_request" and error["message"].startswith(named)


def test_a_scope_lists_its_own_topics_only_and_its_pages_are_never_short_for_the_others(
    make_app: MakeApp,
) -> None:
    client = make_app(jwt_key=SECRET, anonymous="public.*").test_client()
    writer = {"Authorization": f"Bearer {hs256(publish=['*'])}"}
    for n in range(30):
        _post(client, f"private.{n:02d}", **writer)
        _post(client, f"m{n:02d}", **writer)
    for n in range(4):
        _post(client, f"public.{n}", **writer)
    # Anonymous: the public topics, whole pages of them, none of the 60 others.
    pages = _pages(client, 3)
    assert [[t["topic"] for t in p["topics"]] for p in pages] == [
        ["public.0", "public.1", "public.2"],
        ["public.3"],
    ]
    reader = {"Authorization": f"Bearer {hs256(subscribe=['m07', 'private.2', 'private.*'])}"}
    listed = [t["topic"] for p in _pages(client, 7, **reader) for t in p["topics"]]
    assert listed == [
        "m07",
        *(f"private.{n:02d}" for n in range(30)),
        *(f"public.{n}" for n in range(4)),
    ]
    # Nothing to read at all: an empty page, not a scan for one.
    narrow = {"Authorization": f"Bearer {hs256(subscribe=['nothing.*'])}"}
    only_public = client.get("/topics?after=public.3", headers=narrow).get_json()
    assert only_public == {"topics": [], "next": None}


def test_the_clients_follow_the_pages_to_the_last(client: FlaskClient) -> None:
    topics = [f"c{n}" for n in range(11)]
    for topic in topics:
        _post(client, topic)
    plan = calls.topics(page=4)
    call = next(plan)
    asked = 0
    try:
        while True:
            asked += 1
            answer = client.get(f"/{call.path}", query_string=list(call.params))
            call = plan.send(httpx.Response(answer.status_code, content=answer.get_data()))
    except StopIteration as done:
        listed = done.value
    assert [t["topic"] for t in listed] == sorted(topics) and asked == 3


def alert(broker: ServingBroker, name: str, topic: str, active: bool = True) -> str:
    """An instance of alert `name` on `topic` turns pending (`active`) or resolved, as the
    aggregator publishes it; its key."""
    key = f"{name}\x1f{topic}\x1fnull"
    body = b'{"alert":"%s","topic":"%s","group":null,"state":"%s","value":1.0,"since":1.0,' % (
        name.encode(),
        topic.encode(),
        b"pending" if active else b"resolved",
    )
    publish_fenced(
        broker,
        [alert_draft(ALERTS, 1_000_000, body + b'"labels":{},"annotations":{}}', key, active)],
    )
    return key


def alert_pages(
    broker: ServingBroker, limit: int, scan: int, keep: Any = lambda key: True
) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = broker.active_alerts_page(after=after, limit=limit, scan=scan, keep=keep)
        assert len(page.changes) <= limit
        pages.append(
            [orjson.loads(c)["alert"] + "/" + orjson.loads(c)["topic"] for c in page.changes]
        )
        if page.next is None:
            return pages
        after = page.next


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.sets(st.tuples(st.sampled_from("xyz"), names), max_size=12),
    resolved=st.sets(st.tuples(st.sampled_from("xyz"), names), max_size=4),
    limit=st.integers(1, 4),
    scan=st.integers(1, 5),
)
def test_active_alerts_pages_list_each_kept_instance_once_in_key_order(
    brokers: Any,
    before: set[tuple[str, str]],
    resolved: set[tuple[str, str]],
    limit: int,
    scan: int,
) -> None:
    broker = brokers()
    for name, topic in before:
        alert(broker, name, topic)
    pages, after, listed = 0, None, []
    keep = lambda key: not key.split("\x1f")[1].startswith("b")  # noqa: E731
    while True:
        page = broker.active_alerts_page(after=after, limit=limit, scan=max(scan, limit), keep=keep)
        assert len(page.changes) <= limit
        listed += [(c["alert"], c["topic"]) for c in map(orjson.loads, page.changes)]
        pages += 1
        if page.next is None:
            break
        after = page.next
        if pages == 2:  # resolved while the listing is under way
            for name, topic in resolved:
                alert(broker, name, topic, active=False)
    assert listed == sorted(set(listed))  # by alert, then topic; none twice
    visible = {(n, t) for n, t in before if not t.startswith("b")}
    assert visible - resolved <= set(listed) <= visible


def test_a_narrow_scope_reads_a_bounded_number_of_instances_per_call(brokers: Any) -> None:
    broker = brokers()
    for n in range(12):
        alert(broker, "hot", f"private.{n:02d}")
    alert(broker, "hot", "public.a")
    alert(broker, "warm", "public.b")
    looked: list[str] = []

    def public(key: str) -> bool:
        looked.append(key)
        return key.split("\x1f")[1].startswith("public.")

    pages = []
    after = None
    while True:
        looked.clear()
        page = broker.active_alerts_page(after=after, limit=10, scan=5, keep=public)
        assert len(looked) <= 5  # the scan budget, however many a page would want
        pages.append([orjson.loads(c)["topic"] for c in page.changes])
        if page.next is None:
            break
        after = page.next
    assert pages == [[], [], ["public.a", "public.b"]]  # 12 private, then the 2 public


def test_alerts_pages_over_http_with_an_opaque_cursor_and_bad_ones_refused(
    make_app: MakeApp, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[alert]]\nname = "hot"\ntopics = ["*"]\nwhen = "max[10s] > 250"\n')
    app = make_app(jwt_key=SECRET, anonymous="public.*", rules=str(rules))
    client = app.test_client()
    writer = {"Authorization": f"Bearer {hs256(publish=['*'])}"}
    for n in range(5):  # the app's aggregator finds each topic hot: an instance each
        for topic in (f"public.{n}", f"private.{n}"):
            posted = client.post(f"/topics/{topic}/events", json={"value": 300}, headers=writer)
            assert posted.status_code == 202
    first = client.get("/alerts?limit=2")
    body = first.get_json()
    assert [a["topic"] for a in body["alerts"]] == ["public.0", "public.1"]
    assert first.headers["Link"] == f'<alerts?limit=2&after={body["next"]}>; rel="next"'
    listed = [a["topic"] for a in body["alerts"]]
    while body["next"] is not None:
        body = client.get(f"/alerts?limit=2&after={body['next']}").get_json()
        listed += [a["topic"] for a in body["alerts"]]
    assert listed == [f"public.{n}" for n in range(5)]
    reader = {"Authorization": f"Bearer {hs256(subscribe=['*'])}"}
    everything = client.get("/alerts", headers=reader).get_json()
    assert len(everything["alerts"]) == 10 and everything["next"] is None
    # A cursor is a position: one never issued reads on from where it sorts.
    assert client.get("/alerts?after=aG90").get_json()["alerts"][0]["topic"] == "public.0"
    for bad in ("after=%21%21", "after=a", "after=abcde", "limit=0", f"limit={MAX_LIMIT + 1}"):
        answer = client.get(f"/alerts?{bad}")
        assert answer.status_code == 400, bad
        assert answer.get_json()["error"]["code"] == "bad_request"


@pytest.mark.redis
def test_redis_data_written_before_the_indexes_is_indexed_by_the_first_page(
    redis_server: RedisServer, prefix: str
) -> None:
    writer = RedisBroker(redis_server.url, prefix=prefix, partitions=4)
    try:
        for topic in ("a", "b.1", "c"):
            publish(writer, topic)
        alert(writer, "hot", "b.1")
        client = redis.Redis.from_url(redis_server.url)
        # As a version before the indexes left its data: the hashes alone.
        client.delete(*(part.names for part in writer.keys), *(p.alert_keys for p in writer.keys))
        client.close()
    finally:
        writer.close()
    reader = RedisBroker(redis_server.url, prefix=prefix, partitions=4)
    try:
        page = reader.latest_page(topic_ranges(["*"]), after=None, limit=10)
        assert list(page.latest) == ["a", "b.1", "c"] and page.next is None
        alerts = reader.active_alerts_page(after=None, limit=10, scan=10, keep=lambda k: True)
        assert [orjson.loads(c)["topic"] for c in alerts.changes] == ["b.1"]
    finally:
        reader.close()
