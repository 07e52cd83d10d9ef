"""The clients' I/O-free parts: how a subscription judges httpx-sse's events and how long it
waits before it reconnects, which failures are sent again, and the arguments refused before
anything is sent."""

from __future__ import annotations

import json
import ssl
from datetime import datetime

import httpx
import pytest
from httpx_sse import ServerSentEvent

from pushsvc.client import ApiError, Backoff, Gap, Message, StreamOptions, Unreachable, calls
from pushsvc.client.calls import UNSET, group_params, publishable, time_param
from pushsvc.client.live_frames import LiveFrame, interval_seconds
from pushsvc.client.models import message_item
from pushsvc.client.stream import MessageOptions, RawMessage, StreamCursor

NO_JITTER = Backoff(base=0.0, cap=0.0)


def _cursor(last_event_id: str | None = None, backoff: Backoff = NO_JITTER) -> StreamCursor:
    return StreamCursor(
        ["a", "b.*"], last_event_id=last_event_id, options=StreamOptions(), backoff=backoff
    )


def _lost() -> Unreachable:
    return Unreachable("http://x/", httpx.ConnectError("refused"))


def test_the_cursor_asks_for_the_topics_and_resumes_after_the_last_id() -> None:
    cursor = _cursor()
    assert cursor.params == [("topic", "a"), ("topic", "b.*")]
    assert cursor.headers() == {}
    message = cursor.receive(ServerSentEvent("stats", '{"x": 1}', "e:1-1"))
    assert message is not None and (message.event, message.id, message.json()) == (
        "stats",
        "e:1-1",
        {"x": 1},
    )
    assert cursor.headers() == {"Last-Event-ID": "e:1-1"}
    assert _cursor("e:0-9").headers() == {"Last-Event-ID": "e:0-9"}


def test_a_heartbeat_or_a_retry_alone_hands_on_nothing_but_the_retry_is_kept() -> None:
    cursor = _cursor()
    # httpx-sse yields an empty event after a comment once an id was seen, and one for a
    # `retry:` alone: the standard dispatches neither.
    assert cursor.receive(ServerSentEvent("message", "", "e:1-1")) is None
    assert cursor.receive(ServerSentEvent("message", "", None, retry=1500)) is None
    assert cursor.retry_s == 1.5
    assert cursor.headers() == {"Last-Event-ID": "e:1-1"}  # taken, as the standard does


def test_a_lost_connection_waits_the_servers_retry_and_a_refusal_waits_retry_after() -> None:
    cursor = _cursor()
    assert cursor.delay_after(_lost()) == 0.0  # no retry: yet, no jitter here
    cursor.receive(ServerSentEvent("message", "", None, retry=3000))
    assert cursor.delay_after(_lost()) == 3.0
    assert cursor.delay_after(None) == 3.0  # the stream ended: the same
    busy = ApiError(503, "broker_unavailable", "down", retry_after=7)
    assert cursor.delay_after(busy) == 7.0


def test_the_backoff_grows_with_failures_in_a_row_and_resets_on_a_message() -> None:
    cursor = _cursor(backoff=Backoff(base=1.0, cap=100.0))
    waits = [cursor.delay_after(_lost()) for _ in range(6)]
    assert all(0 <= w <= 2**n for n, w in enumerate(waits))
    cursor.receive(ServerSentEvent("stats", "{}", "e:1-2"))
    assert cursor.delay_after(_lost()) <= 1.0


def _bad_certificate() -> Unreachable:
    # What httpx raises for a certificate that does not verify: from the ssl module's error.
    cause = httpx.ConnectError("certificate verify failed")
    cause.__cause__ = ssl.SSLCertVerificationError("self-signed certificate")
    return Unreachable("https://x/", cause)


@pytest.mark.parametrize(
    "refusal",
    [
        ApiError(401, "unauthorized", "no token"),
        ApiError(403, "forbidden", "not yours"),
        ApiError(400, "too_many_selectors", "too many"),
        _bad_certificate(),
    ],
    ids=["401", "403", "400", "bad certificate"],
)
def test_a_refusal_that_would_come_again_is_raised(refusal: ApiError | Unreachable) -> None:
    with pytest.raises(type(refusal)):
        _cursor().delay_after(refusal)
    assert not Backoff().allows(refusal)


def test_a_request_is_sent_again_only_when_that_can_succeed_in_time() -> None:
    backoff = Backoff(max_retry_after=60)
    assert backoff.allows(_lost())
    assert backoff.allows(ApiError(503, "broker_full", "full", retry_after=5))
    assert backoff.allows(ApiError(429, "rate_limited", "slow down", retry_after=60))
    assert not backoff.allows(ApiError(429, "rate_limited", "slow down", retry_after=61))
    assert not backoff.allows(ApiError(400, "invalid_event", "no"))
    assert not backoff.allows(ApiError(500, "internal", "bug"))
    assert backoff.delay(0, ApiError(429, "rate_limited", "x", retry_after=2)) >= 2


@pytest.mark.parametrize("every", ["0s", 0, -1, "soon"])
def test_frames_refuse_an_interval_that_is_no_positive_duration(every: str | float) -> None:
    with pytest.raises(ValueError):
        interval_seconds(every)


def test_times_must_say_their_zone() -> None:
    assert time_param(1.5) == "1.5"
    assert time_param("2025-11-21T04:40:00Z") == "2025-11-21T04:40:00Z"
    with pytest.raises(ValueError, match="aware"):
        time_param(datetime(2025, 11, 21, 4, 40))
    with pytest.raises(TypeError):
        time_param(True)


def test_a_subscription_names_at_least_one_topic() -> None:
    with pytest.raises(ValueError, match="at least one"):
        StreamCursor([], last_event_id=None, options=StreamOptions(), backoff=NO_JITTER)


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"value": float("nan")}, "event 1: value is nan"),
        ({"value": float("inf")}, "event 1: value is inf"),
        ({"value": 1.0, "ts": float("-inf")}, "event 1: ts is -inf"),
    ],
)
def test_a_value_json_cannot_carry_is_refused_before_anything_is_sent(
    event: dict[str, float], named: str
) -> None:
    """JSON has no NaN: sent, it would arrive as null and be refused as "not a number"."""
    plan = calls.publish("orders", [{"value": 1.0}, event])
    with pytest.raises(ValueError, match=named):
        next(plan)


@pytest.mark.parametrize(
    "group",
    [{"station": "grill"}, "station:grill", ["station:grill"]],
)
def test_a_group_is_a_mapping_or_the_apis_tag_value_form(group: object) -> None:
    assert group_params(group) == [("group", "station:grill")]  # type: ignore[arg-type]


def test_a_group_without_a_colon_is_refused() -> None:
    with pytest.raises(ValueError, match="tag:value"):
        group_params("grill")


def test_a_live_frame_empties_when_its_topic_is_deleted() -> None:
    pytest.importorskip("pandas")
    windows = {"1m": {"count": 1, "sum": 5.0}}
    old = {"id": "e:0-1", "topic": "t", "ts": 1.0, "reason": "event", "event": None}
    first_page = {"windows": ["1m"], "stats": ["count", "sum"], "gap": False}
    live = LiveFrame("t", [{**old, "windows": windows}], first_page, "e:0-1")
    assert len(live.frame) == 1
    deletion = '{"id":"e:0-2","gap":true,"topics":{},"deleted":["t"]}'
    live.add(RawMessage("snapshot", "e:0-2", deletion))
    emptied = live.flush()
    assert emptied is not None and emptied.empty
    assert (emptied.attrs["gap"], emptied.attrs["resume_id"]) == (True, "e:0-2")
    new = {**old, "id": "e:0-3", "ts": 0.5, "windows": {"1m": {"count": 1, "sum": 7.0}}}
    live.add(RawMessage("stats", "e:0-3", json.dumps(new)))
    frame = live.flush()
    assert frame is not None and list(frame["1m_sum"]) == [7.0]
    assert live.flush() is None


def _messages_cursor(replay: int | None = None) -> StreamCursor:
    return StreamCursor(
        "orders", last_event_id=None, options=MessageOptions(replay), backoff=NO_JITTER
    )


def test_a_messages_cursor_asks_for_messages_and_keeps_the_heads_id_to_resume_from() -> None:
    cursor = _messages_cursor(replay=5)
    assert (cursor.path, cursor.params) == ("messages", [("topic", "orders"), ("replay", "5")])
    assert _cursor().path == "stream"
    # The head of a messages stream: an `id:` alone. Nothing to hand on, but where to resume.
    assert cursor.receive(ServerSentEvent("message", "", "e:0-7")) is None
    assert cursor.headers() == {"Last-Event-ID": "e:0-7"}


def test_a_messages_stream_that_delivers_only_its_head_is_no_failed_connection() -> None:
    cursor = StreamCursor(
        "orders", last_event_id=None, options=MessageOptions(), backoff=NO_JITTER, max_retries=1
    )
    head = ServerSentEvent("message", "", "e:0-7")
    for _ in range(3):
        cursor.receive(head)
        cursor.delay_after(None)  # the stream ended (a restart, or ended as `behind`)
    cursor.receive(head)
    cursor.delay_after(_lost())  # one failure after a stream that worked: retried
    with pytest.raises(Unreachable):
        cursor.delay_after(_lost())  # a second in a row: `max_retries` spent


@pytest.mark.parametrize("replay", [0, -1, True, 2.5, "5"])
def test_replay_is_a_positive_number_of_messages(replay: object) -> None:
    with pytest.raises((ValueError, TypeError), match="replay"):
        MessageOptions(replay)  # type: ignore[arg-type]


def test_a_messages_event_is_a_message_with_its_data_parsed_or_a_gap() -> None:
    assert message_item("shipped", "e:0-1", '{"order":4711}') == Message(
        "e:0-1", "shipped", {"order": 4711}
    )
    assert message_item("message", "e:0-2", "null") == Message("e:0-2", "message", None)
    assert message_item("message", "e:0-3", '"a\\u2028b"').data == "a\u2028b"
    assert message_item("gap", "e:0-4", '{"topics":["a","b"]}') == Gap("e:0-4", ("a", "b"))


def test_publish_takes_events_or_one_message_of_data_and_type() -> None:
    assert publishable([{"value": 1}], UNSET, None) == [{"value": 1}]
    assert publishable(None, {"order": 4711}, "shipped") == {
        "type": "shipped",
        "data": {"order": 4711},
    }
    assert publishable(None, None, None) == {"data": None}  # null is data
    assert publishable(None, UNSET, "ping") == {"type": "ping"}
    with pytest.raises(TypeError, match="not both"):
        publishable({"value": 1}, 1, None)
    with pytest.raises(TypeError, match=r"or one message: data=…, type=…\), not None"):
        publishable(None, UNSET, None)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"a": [1.0, float("nan")]}, "event 1: data holds nan"),
        ([[float("-inf")]], "event 1: data holds -inf"),
        ({"big": 2**64}, "event 1: data holds an integer beyond 64 bits"),
        (-(2**63) - 1, "event 1: data holds an integer beyond 64 bits"),
    ],
)
def test_data_json_cannot_carry_as_published_is_refused_before_anything_is_sent(
    data: object, named: str
) -> None:
    """orjson would send NaN as null: the message would not arrive as published."""
    plan = calls.publish("orders", [{"data": 1}, {"type": "x", "data": data}])
    with pytest.raises(ValueError, match=named):
        next(plan)


def test_data_at_the_edges_of_64_bits_and_of_what_json_holds_is_sent() -> None:
    data = {"min": -(2**63), "max": 2**64 - 1, "tuple": (1, 2), "deep": [[[[]]]]}
    call = next(calls.publish("orders", {"type": "edge", "data": data}))
    assert json.loads(call.content or b"") == [{"type": "edge", "data": {**data, "tuple": [1, 2]}}]
    with pytest.raises(TypeError, match="cannot be sent as JSON"):
        next(calls.publish("orders", {"data": {1, 2}}))
