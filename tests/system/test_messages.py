"""Messages end to end: the application's own events, pushed to `/messages` streams as they were
published, with the delivery promise of every update (resume, gaps, replay), on the embedded
server and on Redis. Streams are read by a WHATWG event-stream parser (`harness.sse_parser`),
as an `EventSource` reads them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import (
    PushsvcProcess,
    SSEClient,
    post,
    request,
    serving_on,
    wait_caught_up,
    wait_published,
    wait_until,
)
from harness.sse_parser import SSEMessage

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]
# A short history, so that a resume older than it is a gap; no ticks, so that the history
# holds only what the tests post.
ARGS = ("--history", "40", "--tick", "0")


@pytest.fixture(params=BACKENDS, scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    if request.param != "cluster":
        with serving_on(request.param, *ARGS) as proc:
            yield proc
        return
    cluster = request.getfixturevalue("redis_cluster")
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    proc = PushsvcProcess("serve", *ARGS, "--redis-url", cluster.url, "--prefix", prefix).start()
    try:
        yield proc
    finally:
        proc.stop()


def messages(stream: SSEClient, count: int) -> list[SSEMessage]:
    return [stream.next() for _ in range(count)]


def test_a_message_posted_with_no_rules_reaches_a_messages_stream_as_published(
    server: PushsvcProcess, topic: str
) -> None:
    with SSEClient(server.port, f"/topics/{topic}/messages") as stream:
        assert stream.status == 200
        assert stream.response_headers["content-type"].startswith("text/event-stream")
        data = {"order": 4711, "items": [1, 2.5, None, True], "note": "caf\u00e9 \u2028 ok"}
        assert post(server.port, topic, {"type": "shipped", "data": data}) == (
            202,
            {"accepted": 1},
        )
        # A plain event is statistics only: no message for it.
        assert post(server.port, topic, {"value": 3})[0] == 202
        assert post(server.port, topic, {"data": "hello"})[0] == 202
        shipped, default = messages(stream, 2)
    assert (shipped.event, json.loads(shipped.data)) == ("shipped", data)
    # No type: `message`, what `EventSource.onmessage` receives.
    assert (default.event, json.loads(default.data)) == ("message", "hello")
    # Each message's data is one line, U+2028 escaped (no line splitter breaks it).
    assert b"data: " + shipped.data.encode() in stream.raw
    assert "\u2028" not in shipped.data and "\\u2028" in shipped.data
    # The message's id is its update's: the statistics stream's ids, the same history.
    status, _, body = request(server.port, "GET", f"/topics/{topic}/history?limit=3")
    history = json.loads(body)["updates"]
    assert status == 200
    assert [u["id"] for u in history if "type" in u["event"]] == [shipped.id, default.id]
    assert history[0]["event"]["data"] == data and history[0]["event"]["type"] == "shipped"


def test_messages_are_counted_by_type_in_every_window(server: PushsvcProcess, topic: str) -> None:
    batch: list[dict[str, Any]] = [{"type": "error", "data": {"n": n}} for n in range(3)]
    batch += [{"type": "shipped", "data": None, "value": 7}, {"value": 1}]
    assert post(server.port, topic, batch) == (202, {"accepted": 5})

    def counted() -> dict[str, Any] | None:
        status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
        stats = json.loads(body) if status == 200 else {}
        return stats if stats.get("event", {}).get("value") == 1 else None

    wait_until(lambda: counted() is not None, 20, what="the batch's last update")
    stats = counted()
    assert stats is not None
    window = stats["windows"]["1m"]
    assert window["messages"] == {
        "error": {"count": 3, "rate": 3 / 60},
        "shipped": {"count": 1, "rate": 1 / 60},
    }
    # The statistics of values cover the events that have one.
    assert (window["count"], window["sum"]) == (2, 8.0)


def test_resume_replays_exactly_what_followed_the_last_event_id(
    server: PushsvcProcess, topic: str
) -> None:
    with SSEClient(server.port, f"/topics/{topic}/messages") as stream:
        for n in range(6):
            assert post(server.port, topic, [{"type": "n", "data": n}, {"value": n}])[0] == 202
        first = messages(stream, 6)
    assert [json.loads(m.data) for m in first] == list(range(6))
    for n in range(6, 9):
        assert post(server.port, topic, {"type": "n", "data": n})[0] == 202
    with SSEClient(
        server.port, f"/topics/{topic}/messages", {"Last-Event-ID": first[2].id}
    ) as resumed:
        rest = messages(resumed, 6)
    assert [json.loads(m.data) for m in rest] == list(range(3, 9))
    assert [m.id for m in rest[:3]] == [m.id for m in first[3:]]


def test_a_resume_older_than_the_history_or_from_another_epoch_is_a_gap(
    server: PushsvcProcess, topic: str
) -> None:
    with SSEClient(server.port, f"/topics/{topic}/messages") as stream:
        assert post(server.port, topic, {"type": "n", "data": 0})[0] == 202
        oldest = stream.next()
    # The history keeps 40 updates: 60 more push the first message out of it.
    for start in range(0, 60, 20):
        batch = [{"type": "n", "data": n} for n in range(start + 1, start + 21)]
        assert post(server.port, topic, batch)[0] == 202
    # Logged is not yet published: the first message leaves the history once they are.
    wait_caught_up(server.port)
    foreign = "0badc0de:1-0"
    for stale in (oldest.id, foreign):
        with SSEClient(
            server.port, f"/topics/{topic}/messages", {"Last-Event-ID": stale}
        ) as resumed:
            gap = resumed.next()
            assert gap.event == "gap"
            assert json.loads(gap.data) == {"topics": [topic]}
            # Then live, from the gap's id: the next message follows it.
            assert post(server.port, topic, {"type": "after", "data": stale})[0] == 202
            after = resumed.next()
        assert (after.event, json.loads(after.data)) == ("after", stale)


def test_replay_starts_with_the_last_messages_then_goes_live(
    server: PushsvcProcess, topic: str
) -> None:
    batch = []
    for n in range(10):
        batch += [{"type": "n", "data": n}, {"value": n}]
    assert post(server.port, topic, batch)[0] == 202
    wait_published(server.port, topic, {"value": 9})
    with SSEClient(server.port, f"/topics/{topic}/messages?replay=3") as stream:
        replayed = messages(stream, 3)
        assert post(server.port, topic, {"type": "n", "data": 10})[0] == 202
        live = stream.next()
    assert [json.loads(m.data) for m in [*replayed, live]] == [7, 8, 9, 10]


def test_a_stream_of_several_topics_resumes_from_its_cursor(server: PushsvcProcess) -> None:
    # Three topics (three partitions on Redis, whose aggregators publish each at its pace): each
    # topic's messages in order; across partitions, in the order they were published.
    topics = ["shop.orders", "shop.refunds", "shop.chat"]
    path = "/messages?topic=shop.*"

    def by_topic(received: list[SSEMessage]) -> dict[str, list[int]]:
        numbers: dict[str, list[int]] = {}
        for message in received:
            n = json.loads(message.data)
            numbers.setdefault(topics[n % 3], []).append(n)
        return numbers

    with SSEClient(server.port, path) as stream:
        for n in range(9):
            assert post(server.port, topics[n % 3], {"type": "n", "data": n})[0] == 202
        first = messages(stream, 9)
    assert by_topic(first) == {t: list(range(i, 9, 3)) for i, t in enumerate(topics)}
    for n in range(9, 12):
        assert post(server.port, topics[n % 3], {"type": "n", "data": n})[0] == 202
    # The fifth message's id is the stream's cursor there: the rest follows it, once each.
    with SSEClient(server.port, path, {"Last-Event-ID": first[4].id}) as resumed:
        rest = messages(resumed, 7)
    numbers = [json.loads(m.data) for m in rest]
    assert sorted(numbers) == sorted([json.loads(m.data) for m in first[5:]] + [9, 10, 11])
    assert by_topic(rest) == {
        t: [n for n in [*by_topic(first[5:]).get(t, []), *range(9 + i, 12, 3)]]
        for i, t in enumerate(topics)
    }


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        ({"type": "gap", "data": 1}, 400, "invalid_event"),
        ({"type": "two words", "data": 1}, 400, "invalid_event"),
        ({"type": "x" * 65, "data": 1}, 400, "invalid_event"),
        ({"data": "x" * 70_000}, 413, "payload_too_large"),
        ({"data": 123456789012345678901234567890}, 400, "wide_integer"),
        ({"data": "\ud800"}, 400, "lone_surrogate"),
        ({"data": json.loads("[" * 70 + "]" * 70)}, 400, "invalid_event"),
        ({"value": "3", "data": 1}, 400, "invalid_event"),
    ],
)
def test_a_bad_message_is_refused_whole_and_changes_nothing(
    server: PushsvcProcess, topic: str, event: dict[str, Any], status: int, code: str
) -> None:
    answer, body = post(server.port, topic, [{"type": "ok", "data": 1}, event])
    assert answer == status and body["error"]["code"] == code and body["error"]["index"] == 1
    assert request(server.port, "GET", f"/topics/{topic}/stats")[0] == 404


@pytest.mark.parametrize(
    "query",
    ["windows=1m", "stats=mean", "max_hz=2", "group=a:b", "replay=0", "replay=x", "replay=1001"],
)
def test_a_messages_stream_refuses_what_only_statistics_streams_take(
    server: PushsvcProcess, query: str
) -> None:
    status, _, body = request(server.port, "GET", f"/topics/orders/messages?{query}")
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"


def test_replay_of_a_pattern_starts_with_its_topics_last_messages(server: PushsvcProcess) -> None:
    family = f"r{uuid.uuid4().hex[:8]}"
    for n in range(6):
        assert post(server.port, f"{family}.{n % 2}", {"type": "n", "data": n})[0] == 202
    assert post(server.port, f"{family}.1", {"value": 1})[0] == 202
    wait_published(server.port, f"{family}.1", {"value": 1})
    with SSEClient(server.port, f"/messages?topic={family}.*&replay=3") as stream:
        replayed = messages(stream, 3)
        assert post(server.port, f"{family}.0", {"type": "n", "data": 6})[0] == 202
        live = stream.next()
    # Across partitions, "last" is by publish time: the three newest, each topic's in order.
    assert sorted(json.loads(m.data) for m in replayed) == [3, 4, 5]
    assert json.loads(live.data) == 6


def test_after_a_restart_that_lost_the_history_the_gap_is_followed_by_the_new_epochs_messages(
    topic: str,
) -> None:
    """`serve` without `--data-dir`, restarted: a client that comes back with an id of the
    history before gets a gap naming its topic, then every message published since the
    restart, then live ones; where nothing was published since, the gap still names it."""
    family = f"p{uuid.uuid4().hex[:8]}"
    first = PushsvcProcess("serve", *ARGS).start()
    try:
        with SSEClient(first.port, f"/topics/{topic}/messages") as stream:
            assert post(first.port, topic, {"type": "n", "data": 0})[0] == 202
            seen = stream.next()
        with SSEClient(first.port, f"/messages?topic={family}.*") as pattern:
            assert post(first.port, f"{family}.a", {"type": "n", "data": 0})[0] == 202
            seen_pattern = pattern.next()
    finally:
        first.stop()
    second = PushsvcProcess("serve", *ARGS).start()
    try:
        with SSEClient(
            second.port, f"/messages?topic={family}.*", {"Last-Event-ID": seen_pattern.id}
        ) as resumed:
            gap = resumed.next()  # nothing published since: the gap names its pattern
            assert (gap.event, json.loads(gap.data)) == ("gap", {"topics": [f"{family}.*"]})
        # Published between the restart and the client's reconnect.
        for n in (1, 2):
            assert post(second.port, topic, {"type": "n", "data": n})[0] == 202
        wait_caught_up(second.port)
        path = f"/topics/{topic}/messages"
        with SSEClient(second.port, path, {"Last-Event-ID": seen.id}) as resumed:
            gap = resumed.next()
            assert (gap.event, json.loads(gap.data)) == ("gap", {"topics": [topic]})
            assert [json.loads(m.data) for m in messages(resumed, 2)] == [1, 2]
            assert post(second.port, topic, {"type": "n", "data": 3})[0] == 202
            assert json.loads(resumed.next().data) == 3
        # The gap's id is where the new epoch starts: a client that resumes from it gets it.
        with SSEClient(second.port, path, {"Last-Event-ID": gap.id}) as again:
            assert [json.loads(m.data) for m in messages(again, 3)] == [1, 2, 3]
    finally:
        second.stop()
