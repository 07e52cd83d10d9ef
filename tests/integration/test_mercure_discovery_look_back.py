"""Discovery's `last-event-id` when a Mercure topic's newest update is no Mercure update: the
hub looks back in the topic's history for the newest that is. Only the hub appends to its
topics, so what comes after an update there is the aggregator's own (a tick's windows): here
a plain event appended as the hub appends (`by_hub`), standing in for it, in-process."""

from __future__ import annotations

import time

import jwt
from flask.testing import FlaskClient

from pushsvc.core.topics import TopicMatcher
from pushsvc.deliver.mercure_updates import topic_name
from pushsvc.ingest.accept import ingest
from support.mercure_hub import HUB, SECRET, token
from support.settling import settle


def test_a_topic_whose_newest_update_is_no_message_names_its_newest_message(
    make_app,  # type: ignore[no-untyped-def]
) -> None:
    app = make_app(mercure="anonymous", jwt_key=SECRET)
    client: FlaskClient = app.test_client()
    books = "https://example.com/valued/1"
    published = client.post(
        HUB,
        data={"topic": books, "data": "one", "id": "valued-1"},
        headers={"Authorization": f"Bearer {token(publish=['*'])}"},
    )
    assert published.status_code == 200, published.get_data()
    runtime = app.extensions["pushsvc"]
    name = topic_name(books)
    ingest(
        runtime.broker,
        name,
        b'{"value": 1.5}',
        "application/json",
        limits=runtime.limits,
        lateness_us=runtime.settings.grace_us,
        now_us=time.time_ns() // 1000,
        by_hub=True,
    )
    settle(runtime)
    claims = {"pushsvc": {"subscribe": ["*"]}, "exp": int(time.time()) + 600}
    reader = {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}
    newest = runtime.broker.latest(TopicMatcher([name]))[name]
    assert b'"sum":1.5' in newest.data and b"valued-1" not in newest.data  # the value's
    history = client.get(f"/topics/{name}/history", headers=reader)
    assert history.status_code == 200
    link = history.headers["Link"]
    assert link.endswith('; last-event-id="valued-1"'), link
