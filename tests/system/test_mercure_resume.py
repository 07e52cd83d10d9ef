"""Mercure reconnection end to end: a subscriber that comes back with the id of the last update
it received (`Last-Event-ID`, `last_event_id`, `lastEventID`) receives every later update its
selectors and token allow, once, in order, then live; `earliest` replays what is kept; an id
not kept is a gap, then live. On the embedded server, on Redis (also across a restart of
pushsvc) and on a Redis Cluster.

"Once, then live" is shown by a sentinel: after the updates it must receive, a stream gets the
update published next, so a duplicate or an update it must not receive would have come first.
Each update is awaited on a subscriber before the next is published, so updates of different
partitions are each in a millisecond of their own (the order of a replay across partitions is
by time: `pushsvc.deliver.mercure_resume`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlencode

import httpx
import pytest
from harness.live import PushsvcProcess, SSEClient, request
from harness.sse_parser import SSEMessage

from pushsvc.core.cursor import Cursor
from pushsvc.deliver.mercure_updates import topic_name
from support.mercure_hub import (
    BACKENDS,
    HUB,
    SECRET,
    iri,
    publish,
    pushsvc_reader,
    serving_hub,
    subscribe,
    token,
)


@pytest.fixture(params=BACKENDS, scope="module")
def hub(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_hub(request.param, request) as proc:
        yield proc


def ids(stream: SSEClient, count: int) -> list[str]:
    return [stream.next().id for _ in range(count)]


def then_live(hub: PushsvcProcess, topic: str, *streams: SSEClient) -> None:
    """Each stream's next update is the one published now: nothing else was pending."""
    sentinel = publish(hub, [topic], "sentinel", id=f"sentinel-{uuid.uuid4().hex[:8]}")
    for stream in streams:
        assert ids(stream, 1) == [sentinel]


def published_in_turn(
    hub: PushsvcProcess, watcher: SSEClient, plan: list[tuple[list[str], dict[str, str]]]
) -> list[str]:
    """Publish each of `plan` (topics, fields) once the watcher received the one before."""
    published = []
    for n, (topics, fields) in enumerate(plan):
        published.append(publish(hub, topics, f"update {n}", **fields))
        assert ids(watcher, 1) == [published[-1]]
    return published


def test_a_subscriber_resumes_after_the_update_it_names_once_in_order_then_live(
    hub: PushsvcProcess,
) -> None:
    # Several topics (several partitions, most likely), ids of the publisher's and the hub's,
    # an update of two topics: whichever a subscriber names, it gets exactly what followed.
    books, users, other = iri("books"), iri("users"), iri("other")
    assert len({topic_name(t) for t in (books, users, other)}) == 3
    selectors = (("match", books), ("match", users), ("match", other))
    with subscribe(hub, *selectors) as watcher:
        published = published_in_turn(
            hub,
            watcher,
            [
                ([books], {"id": f"https://example.com/ids/{uuid.uuid4().hex}"}),
                ([users], {}),
                ([other, books], {"id": f"book-{uuid.uuid4().hex[:6]}"}),
                ([books], {}),
                ([users], {"id": f"user-{uuid.uuid4().hex[:6]}"}),
                ([other], {}),
            ],
        )
    assert any(i.startswith("urn:uuid:") for i in published)
    streams = []
    try:
        for n, named in enumerate(published):
            # The header, and each query name (as an EventSource's first connection sends it).
            by_header = subscribe(hub, *selectors, last_event_id=named)
            by_query = subscribe(hub, *selectors, ("last_event_id", named))
            by_old_name = subscribe(hub, *selectors, ("lastEventID", named))
            for stream in (by_header, by_query, by_old_name):
                streams.append(stream)
                assert stream.response_headers["mercure-last-event-id"] == named
                assert stream.response_headers["last-event-id"] == named
                assert ids(stream, len(published) - n - 1) == published[n + 1 :]
        then_live(hub, books, *streams)
    finally:
        for stream in streams:
            stream.close()


def test_an_event_source_reconnects_from_the_last_updates_own_id_exactly(
    hub: PushsvcProcess,
) -> None:
    """The hub's updates are one sequence (its topics kept in one partition, on every broker):
    each update's own `id:` says what the stream sent before it, whatever topics it selects,
    and is what an EventSource reconnects with. A subscriber that reconnects with it receives
    exactly what followed."""
    books, users, other = iri("books"), iri("users"), iri("other")
    selectors = (("match", books), ("match", users), ("match", other))
    with subscribe(hub, *selectors) as watcher:
        first = published_in_turn(hub, watcher, [([books], {}), ([users], {}), ([other], {})])
        resume_at = watcher.last_event_id
        assert resume_at == first[-1]
        assert b"id: " + first[-1].encode() in watcher.raw
    later = [publish(hub, [topic], "later") for topic in (users, books, other)]
    with subscribe(hub, *selectors, last_event_id=resume_at) as resumed:
        assert resumed.response_headers["mercure-last-event-id"] == resume_at
        assert ids(resumed, len(later)) == later
        then_live(hub, books, resumed)


def test_a_subscriber_resumes_with_only_what_its_selectors_and_token_allow(
    hub: PushsvcProcess,
) -> None:
    secret, news, elsewhere = iri("accounts"), iri("news"), iri("elsewhere")
    selectors = (("match", secret), ("match", news))
    allowed_token = token(subscribe=[secret])
    with subscribe(hub, *selectors, auth=allowed_token) as watcher:
        first, private, unselected, last = published_in_turn(
            hub,
            watcher,
            [
                ([news], {}),
                ([secret], {"private": "on"}),
                ([elsewhere, secret], {}),
                ([news], {}),
            ],
        )
    anonymous = subscribe(hub, *selectors, last_event_id=first)
    other_grant = subscribe(
        hub, *selectors, auth=token(subscribe=[iri("accounts")]), last_event_id=first
    )
    allowed = subscribe(hub, *selectors, auth=allowed_token, last_event_id=first)
    narrow = subscribe(hub, ("match", news), last_event_id=first)
    try:
        # The private update is not replayed to a token that may not receive it.
        assert ids(anonymous, 2) == [unselected, last]
        assert ids(other_grant, 2) == [unselected, last]
        assert ids(allowed, 3) == [private, unselected, last]
        # The selectors it resumes with choose, whatever the update named was matched by.
        assert ids(narrow, 1) == [last]
        then_live(hub, news, anonymous, other_grant, allowed, narrow)
    finally:
        for stream in (anonymous, other_grant, allowed, narrow):
            stream.close()


def test_earliest_replays_every_update_kept_then_goes_live(hub: PushsvcProcess) -> None:
    first, second = iri("orders"), iri("orders")
    selectors = (("match", first), ("match", second))
    with subscribe(hub, *selectors) as watcher:
        published = published_in_turn(
            hub, watcher, [([first], {}), ([second], {"id": "o-2"}), ([first], {})]
        )
    by_header = subscribe(hub, *selectors, last_event_id="earliest")
    by_query = subscribe(hub, *selectors, ("last_event_id", "earliest"))
    try:
        for stream in (by_header, by_query):
            assert stream.response_headers["mercure-last-event-id"] == "earliest"
            assert ids(stream, 3) == published
        then_live(hub, second, by_header, by_query)
    finally:
        by_header.close()
        by_query.close()


def test_an_id_not_kept_is_a_gap_naming_no_topic_then_live_and_its_cursor_resumes(
    hub: PushsvcProcess,
) -> None:
    topic = iri("gaps")
    publish(hub, [topic], "before", id=f"before-{uuid.uuid4().hex[:6]}")
    with subscribe(hub, ("match", topic), last_event_id=f"urn:uuid:{uuid.uuid4()}") as stream:
        assert stream.response_headers["mercure-last-event-id"] == "earliest"
        gap = stream.next()
        assert gap.event == "gap"
        assert json.loads(gap.data) == {"topics": []}  # pushsvc's names of IRIs: none shown
        cursor = gap.id
        assert Cursor.parse(cursor) is not None
        then_live(hub, topic, stream)
    # The gap's id is pushsvc's own cursor: a client that comes back with it resumes there.
    missed = publish(hub, [topic], "missed")
    with subscribe(hub, ("match", topic), last_event_id=cursor) as resumed:
        assert resumed.response_headers["mercure-last-event-id"] == cursor
        messages: list[SSEMessage] = [resumed.next() for _ in range(2)]
        assert [m.event for m in messages] == ["message", "message"]
        assert messages[1].id == missed
        then_live(hub, topic, resumed)


def test_a_reused_id_resumes_after_its_earliest_update(hub: PushsvcProcess) -> None:
    topic = iri("reused")
    reused = f"reused-{uuid.uuid4().hex[:6]}"
    with subscribe(hub, ("match", topic)) as watcher:
        published = published_in_turn(
            hub, watcher, [([topic], {"id": reused}), ([topic], {}), ([topic], {"id": reused})]
        )
    with subscribe(hub, ("match", topic), last_event_id=reused) as stream:
        assert ids(stream, 2) == published[1:]
        then_live(hub, topic, stream)


def test_earliest_is_refused_as_a_publisher_id(hub: PushsvcProcess) -> None:
    answer = httpx.post(
        f"http://127.0.0.1:{hub.port}{HUB}",
        content=urlencode([("topic", iri("x")), ("data", "d"), ("id", "earliest")]),
        headers={
            "Authorization": f"Bearer {token(publish=['*'])}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert answer.status_code == 400


@pytest.mark.redis
def test_on_redis_a_subscriber_resumes_across_a_restart_of_pushsvc(redis_server: Any) -> None:
    args = ("--mercure", "anonymous", "--tick", "0", "--redis-url", redis_server.url)
    args += ("--prefix", f"m{uuid.uuid4().hex[:8]}:")
    env = {"PUSHSVC_JWT_KEY": SECRET}
    books, users = iri("books"), iri("users")
    selectors = (("match", books), ("match", users))
    proc = PushsvcProcess("serve", *args, env=env).start()
    try:
        with subscribe(proc, *selectors) as watcher:
            published = published_in_turn(
                proc, watcher, [([books], {}), ([users], {"id": "u-1"}), ([books], {})]
            )
    finally:
        proc.stop()
    proc = PushsvcProcess("serve", *args, env=env).start()
    try:
        with subscribe(proc, *selectors, last_event_id=published[0]) as stream:
            assert ids(stream, 2) == published[1:]
            then_live(proc, users, stream)
    finally:
        proc.stop()


def test_an_id_trimmed_from_the_history_is_a_gap_then_live() -> None:
    # A history of 3 updates per partition, one partition: the first of 5 is trimmed.
    args = ("--mercure", "anonymous", "--tick", "0", "--history", "3", "--partitions", "1")
    proc = PushsvcProcess("serve", *args, env={"PUSHSVC_JWT_KEY": SECRET}).start()
    try:
        topic = iri("trimmed")
        with subscribe(proc, ("match", topic)) as watcher:
            published = published_in_turn(proc, watcher, [([topic], {})] * 5)
        gapped = subscribe(proc, ("match", topic), last_event_id=published[0])
        # One still kept resumes as any: what followed it, then live.
        kept = subscribe(proc, ("match", topic), last_event_id=published[3])
        try:
            assert gapped.response_headers["mercure-last-event-id"] == "earliest"
            assert gapped.next().event == "gap"
            assert ids(kept, 1) == published[4:]
            then_live(proc, topic, gapped, kept)
        finally:
            gapped.close()
            kept.close()
    finally:
        proc.stop()


def discovered_id(hub: PushsvcProcess, topic: str, what: str = "history") -> str | None:
    """The `last-event-id` of the hub's `Link` on a read of `topic`'s resource `what`, as a
    client decodes it (a quoted string, or RFC 8187's `last-event-id*=UTF-8''`)."""
    status, headers, _ = request(
        hub.port, "GET", f"/topics/{topic_name(topic)}/{what}", headers=pushsvc_reader()
    )
    assert status == 200
    link = {k.lower(): v for k, v in headers.items()}["link"]
    assert link.startswith(f'<http://127.0.0.1:{hub.port}{HUB}>; rel="mercure"')
    for attribute in link.split(";")[2:]:
        name, _, value = attribute.strip().partition("=")
        if name == "last-event-id":
            return json.loads(value)  # a quoted string without escapes reads as JSON's
        if name == "last-event-id*":
            charset, _, encoded = value.partition("''")
            assert charset == "UTF-8"
            return unquote(encoded)
    return None


def test_a_topic_read_names_its_newest_update_so_a_page_subscribing_from_it_misses_nothing(
    hub: PushsvcProcess,
) -> None:
    # A page renders a topic's resource, then subscribes with the `last-event-id` its Link
    # gave: what was published in between reaches it, once, then live. An id a header cannot
    # carry as it is (not ASCII) is given as RFC 8187 says, and resumes the same.
    books = iri("discovered")
    with subscribe(hub, ("match", books)) as watcher:
        plain = publish(hub, [books], "one", id=f"plain-{uuid.uuid4().hex[:6]}")
        assert ids(watcher, 1) == [plain]
        named = discovered_id(hub, books)
        between = publish(hub, [books], "two", id=f"livre-\u00e9-\u2028-{uuid.uuid4().hex[:6]}")
        assert ids(watcher, 1) == [between]
        assert discovered_id(hub, books, "stats") == between
        after = publish(hub, [books], "three")
        assert ids(watcher, 1) == [after]
    assert named == plain
    streams = [
        subscribe(hub, ("match", books), ("last_event_id", plain)),
        subscribe(hub, ("match", books), ("last_event_id", between)),
    ]
    try:
        # Where each resumed: the id's UTF-8 bytes, as the reference hub writes a header.
        answered = [s.response_headers["mercure-last-event-id"] for s in streams]
        assert [a.encode("latin-1").decode() for a in answered] == [plain, between]
        assert ids(streams[0], 2) == [between, after]
        assert ids(streams[1], 1) == [after]
        then_live(hub, books, *streams)
    finally:
        for stream in streams:
            stream.close()
