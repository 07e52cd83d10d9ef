"""Mercure end to end: `pushsvc serve --mercure` as a Mercure hub, on the embedded server, on
Redis and on a Redis Cluster. Updates are published as Symfony's Mercure component publishes
them (`examples/mercure_publish.py`: a form body, several `topic` fields, a Bearer JWT), read
by a WHATWG event-stream parser as an `EventSource` reads them, and, once, by a real
`EventSource` in Chromium.

What a subscriber must NOT receive is shown against a later update it must receive: a stream
is in order, so when the later one arrives the earlier one would have been there.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from harness.live import PushsvcProcess, SSEClient, request
from harness.sse_parser import SSEMessage

from pushsvc.deliver.mercure_updates import topic_name
from support.mercure_hub import BACKENDS, HUB, SECRET, iri, pushsvc_reader, serving_hub, token

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mercure_publish.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mercure_publish", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _example()


@pytest.fixture(params=BACKENDS, scope="module")
def hub(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_hub(request.param, request) as proc:
        yield proc


def subscribe(
    hub: PushsvcProcess, *selectors: tuple[str, str], auth: str | None = None
) -> SSEClient:
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    stream = SSEClient(hub.port, f"{HUB}?{urlencode(selectors)}", headers=headers)
    assert stream.status == 200, stream.raw
    return stream


def publish(hub: PushsvcProcess, topics: list[str], data: str, **fields: str) -> httpx.Response:
    form = [("topic", t) for t in topics] + [("data", data), *fields.items()]
    return httpx.post(
        f"http://127.0.0.1:{hub.port}{HUB}",
        content=urlencode(form),
        headers={
            "Authorization": f"Bearer {token(publish=['*'])}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )


def updates(stream: SSEClient, count: int) -> list[SSEMessage]:
    """The next `count` updates (the head's bare `id:` is no message: nothing to dispatch)."""
    return [stream.next() for _ in range(count)]


def test_an_update_published_as_symfony_does_reaches_each_matching_subscriber_once(
    hub: PushsvcProcess,
) -> None:
    book, shelf, elsewhere = iri("books"), iri("users/dunglas/books"), iri("elsewhere")
    exact = subscribe(hub, ("match", book))
    pattern = subscribe(hub, ("match_urlpattern", "https://example.com/users/:user/books/:id"))
    both = subscribe(hub, ("match", book), ("match", shelf))
    other = subscribe(hub, ("match", elsewhere))
    try:
        base = f"http://127.0.0.1:{hub.port}"
        update_id = example.publish(base, SECRET, [book, shelf], {"status": "OutOfStock"})
        assert update_id.startswith("urn:uuid:")
        sentinel = publish(hub, [book, shelf], "after", id="sentinel-1")
        assert sentinel.status_code == 200 and sentinel.text == "sentinel-1"
        assert sentinel.headers["content-type"].startswith("text/plain")
        for stream in (exact, pattern, both):
            first, second = updates(stream, 2)
            assert (first.id, first.event, json.loads(first.data)) == (
                update_id,
                "message",
                {"status": "OutOfStock"},
            )
            assert (second.id, second.data) == ("sentinel-1", "after")
        # Selected by neither topic: the next update it selects comes first.
        publish(hub, [elsewhere], "x", id="other-1")
        (only,) = updates(other, 1)
        assert only.id == "other-1"
    finally:
        for stream in (exact, pattern, both, other):
            stream.close()


def test_a_private_update_reaches_only_subscribers_allowed_one_of_its_topics(
    hub: PushsvcProcess,
) -> None:
    secret, public = iri("accounts"), iri("news")
    anonymous = subscribe(hub, ("match", secret), ("match", public))
    allowed = subscribe(hub, ("match", secret), ("match", public), auth=token(subscribe=[secret]))
    not_allowed = subscribe(
        hub, ("match", secret), ("match", public), auth=token(subscribe=[iri("accounts")])
    )
    try:
        assert publish(hub, [secret], "balance: 12", private="on", id="p-1").status_code == 200
        assert publish(hub, [public], "hello", id="n-1").status_code == 200
        assert [m.id for m in updates(allowed, 2)] == ["p-1", "n-1"]
        assert [m.id for m in updates(anonymous, 1)] == ["n-1"]
        assert [m.id for m in updates(not_allowed, 1)] == ["n-1"]
    finally:
        for stream in (anonymous, allowed, not_allowed):
            stream.close()


def test_type_retry_and_lines_are_written_as_a_mercure_hub_writes_them(
    hub: PushsvcProcess,
) -> None:
    topic = iri("jobs")
    with subscribe(hub, ("match", topic)) as stream:
        text = "first line\nsecond line\r\nthird: with a colon"
        assert (
            publish(hub, [topic], text, id="j-1", type="progress", retry="2500").status_code == 200
        )
        (message,) = updates(stream, 1)
    assert (message.id, message.event, message.data) == (
        "j-1",
        "progress",
        text.replace("\r\n", "\n"),
    )
    assert b"retry: 2500\n" in stream.raw


def test_any_type_the_specification_allows_is_carried_and_counted_under_a_name(
    hub: PushsvcProcess,
) -> None:
    topic = iri("typed")
    types = ["Book Updated", "café", "user/created", "a" * 100, "progress"]
    with subscribe(hub, ("match", topic)) as stream:
        for n, kind in enumerate(types):
            assert publish(hub, [topic], f"d{n}", id=f"t-{n}", type=kind).status_code == 200
        received = updates(stream, len(types))
    assert [(m.id, m.event) for m in received] == [(f"t-{n}", t) for n, t in enumerate(types)]
    # pushsvc counts each under a message type of its own: the type itself where it is one.
    status, _, body = request(
        hub.port, "GET", f"/topics/{topic_name(topic)}/stats", headers=pushsvc_reader()
    )
    assert status == 200
    counted = {k for w in json.loads(body)["windows"].values() for k in w.get("messages", {})}
    assert "progress" in counted and any(k.startswith("Book.Updated-") for k in counted), counted


def test_a_publication_without_the_right_is_refused_as_rfc_6750_says_and_changes_nothing(
    hub: PushsvcProcess,
) -> None:
    topic = iri("refused")
    url = f"http://127.0.0.1:{hub.port}{HUB}"
    form = urlencode([("topic", topic), ("data", "x")])
    kinds = {"Content-Type": "application/x-www-form-urlencoded"}
    anonymous = httpx.post(url, content=form, headers=kinds)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    forged = jwt.encode({"mercure": {"publish": ["*"]}, "exp": int(time.time()) + 60}, "x" * 40)
    bad = httpx.post(url, content=form, headers={**kinds, "Authorization": f"Bearer {forged}"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert bad.json()["error"]["code"] == "invalid_token"
    narrow = token(publish=[iri("other")])
    scoped = httpx.post(url, content=form, headers={**kinds, "Authorization": f"Bearer {narrow}"})
    assert scoped.status_code == 403
    assert 'error="insufficient_scope"' in scoped.headers["www-authenticate"]
    no_topic = httpx.post(
        url, content="data=x", headers={**kinds, "Authorization": f"Bearer {token(publish=['*'])}"}
    )
    assert no_topic.status_code == 400
    # Nothing of them was kept: the topic was never made.
    status, _, _ = request(
        hub.port, "GET", f"/topics/{topic_name(topic)}/stats", headers=pushsvc_reader()
    )
    assert status == 404


def test_a_publisher_token_kept_once_verified_is_refused_once_expired_and_never_widened(
    request: pytest.FixtureRequest,
) -> None:
    # A publisher's verified token is kept until it expires: sent again it still publishes
    # only where it may, a forgery of it is never taken for it, and once it has expired it
    # is refused as the first time would have.
    topic, elsewhere = iri("kept"), iri("not-granted")

    def post(bearer: str, to: str) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{hub.port}{HUB}",
            content=urlencode([("topic", to), ("data", "x")]),
            headers={
                "Authorization": f"Bearer {bearer}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

    with serving_hub("memory", request) as hub:
        # Signed once the hub is up: a slow start must not spend the token's few seconds.
        expires = int(time.time()) + 5
        claims = {"mercure": {"publish": [topic]}, "exp": expires}
        kept = jwt.encode(claims, SECRET, algorithm="HS256")
        forged = jwt.encode(claims, "f" * 40, algorithm="HS256")
        for _ in range(2):
            assert post(kept, topic).status_code == 200
            assert post(kept, elsewhere).status_code == 403
            assert post(forged, topic).status_code == 401
        time.sleep(max(0.0, expires - time.time()) + 0.05)  # the token's own clock: no event
        late = post(kept, topic)
        assert late.status_code == 401 and "expired" in late.json()["error"]["message"]


def test_a_subscription_with_a_bad_token_or_no_selector_is_refused(hub: PushsvcProcess) -> None:
    bad = {"Authorization": "Bearer nope"}
    status, _, _ = request(hub.port, "GET", f"{HUB}?match=x", headers=bad)
    assert status == 401
    status, _, body = request(hub.port, "GET", HUB)
    assert status == 400 and b"match" in body
    status, _, _ = request(hub.port, "GET", f"{HUB}?match_bogus=x")
    assert status == 400


def test_updates_are_counted_and_the_hub_is_discovered_on_topic_responses(
    hub: PushsvcProcess,
) -> None:
    topic = iri("counted")
    with subscribe(hub, ("match", topic)) as stream:
        published = publish(hub, [topic], "one", type="sold").text
        updates(stream, 1)
    status, headers, body = request(
        hub.port, "GET", f"/topics/{topic_name(topic)}/stats", headers=pushsvc_reader()
    )
    assert status == 200
    windows = json.loads(body)["windows"]
    assert any(w.get("messages", {}).get("sold", {}).get("count") == 1 for w in windows.values())
    link = {k.lower(): v for k, v in headers.items()}.get("link", "")
    assert link == f'<http://127.0.0.1:{hub.port}{HUB}>; rel="mercure"; last-event-id="{published}"'


def test_topic_names_are_valid_stable_and_apart() -> None:
    from pushsvc.core.topics import validate_topic

    names = {
        topic_name(t)
        for t in (
            "https://example.com/a/b",
            "https://example.com/a.b",
            "urn:x:a/b",
            "a b",
            "é" * 300,
        )
    }
    assert len(names) == 5
    for name in names:
        assert validate_topic(name) == name and name.startswith("mercure.")
    assert topic_name("https://example.com/books/1").startswith("mercure.example.com.books.1-")
    assert topic_name("https://example.com/books/1") == topic_name("https://example.com/books/1")


def test_the_hub_without_a_key_or_with_an_unknown_mode_stops_the_process_with_one_line() -> None:
    from pushsvc.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=r"--mercure .* needs --jwt-key"):
        Settings.load({"mercure": "on"})
    with pytest.raises(ConfigError, match="choose off, on or anonymous"):
        Settings.load({"mercure": "yes", "jwt_key": SECRET})


def test_a_hub_that_is_on_refuses_a_subscriber_without_a_token() -> None:
    proc = PushsvcProcess("serve", "--mercure", "on", env={"PUSHSVC_JWT_KEY": SECRET}).start()
    try:
        status, headers, _ = request(proc.port, "GET", f"{HUB}?match=x")
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        with SSEClient(
            proc.port,
            f"{HUB}?match=x",
            headers={"Authorization": f"Bearer {token(subscribe=['x'])}"},
        ) as stream:
            assert stream.status == 200
    finally:
        proc.stop()
