"""The clients' batching, free of I/O (`pushsvc.client.batching`): which calls make a batch, and
which outcome each call of a batch gets from the server's per-topic answer."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pushsvc.client import ApiError, Backoff, BatchSettings, Published
from pushsvc.client.batching import (
    PendingCall,
    culprit,
    is_full,
    outcomes,
    pending_call,
    publish_batch,
    take_batch,
)
from pushsvc.client.sync_batcher import Batcher
from pushsvc.core.answers import ErrorDetail, TopicResult, TopicsAccepted

HOLD = BatchSettings(linger=30.0)


def calls(*shape: tuple[str, int]) -> list[PendingCall]:
    """Calls of `count` events each to `topic`, values numbering the events of all of them."""
    made = []
    value = 0
    for topic, count in shape:
        made.append(pending_call(topic, [{"value": value + i} for i in range(count)], None))
        value += count
    return made


def test_a_batch_takes_calls_up_to_its_events_or_bytes_and_at_least_one() -> None:
    settings = BatchSettings(max_events=5, max_bytes=10_000)
    queue = calls(("a", 2), ("b", 2), ("c", 2))
    assert [c.topic for c in take_batch(queue, settings)] == ["a", "b"]
    assert [c.topic for c in queue] == ["c"]
    big = calls(("x", 9))
    assert [c.topic for c in take_batch(big, settings)] == ["x"] and big == []
    assert is_full(calls(("a", 5)), settings) and not is_full(calls(("a", 4)), settings)
    by_bytes = BatchSettings(max_events=1000, max_bytes=100)
    queue = calls(*[(f"t{i}", 1) for i in range(10)])
    taken = take_batch(queue, by_bytes)
    assert sum(c.size for c in taken) <= 100 < sum(c.size for c in taken) + queue[0].size


def test_the_request_holds_every_calls_events_with_their_topics_in_order() -> None:
    batch = calls(("a", 2), ("b", 1))
    call = next(publish_batch(batch))
    assert (call.method, call.path, call.expect, call.also) == ("POST", "events", 202, (207,))
    assert msgspec.json.decode(call.content or b"") == [
        {"value": 0, "topic": "a"},
        {"value": 1, "topic": "a"},
        {"value": 2, "topic": "b"},
    ]
    assert call.headers["Idempotency-Key"]


def test_each_call_gets_its_topics_result() -> None:
    batch = calls(("a", 2), ("b", 1), ("a", 1), ("c", 1))
    answer = TopicsAccepted(
        [
            TopicResult("a", [0, 1, 3], 3, 0),
            TopicResult(
                "b", [2], error=ErrorDetail("forbidden", "not yours", msgspec.UNSET), status=403
            ),
            TopicResult("c", [4], 0, 1),
        ],
        3,
        1,
        1,
    )
    first, refused, third, fourth = outcomes(batch, answer)
    assert isinstance(first, Published) and (first, first.late, first.topic) == (2, 0, "a")
    assert isinstance(refused, ApiError) and (refused.status, refused.code) == (403, "forbidden")
    assert third == 1 and not getattr(third, "shared", True)
    assert isinstance(fourth, Published) and (fourth.accepted, fourth.late) == (0, 1)
    assert fourth.late_topic == "c.late"


def test_a_refused_topic_names_the_event_at_fault_to_its_own_caller_only() -> None:
    batch = calls(("a", 2), ("a", 3))
    error = ErrorDetail("late_event", "past the grace", 3)  # the second call's second event
    answer = TopicsAccepted([TopicResult("a", [0, 1, 2, 3, 4], error=error, status=400)], 0, 0, 5)
    first, second = outcomes(batch, answer)
    assert isinstance(first, ApiError) and first.index is None
    assert isinstance(second, ApiError) and (second.status, second.index) == (400, 1)


def test_calls_sharing_a_partly_late_topic_split_its_counts_by_their_times() -> None:
    old = pending_call("a", [{"value": 1, "ts": 1_763_700_000}], None)
    new = pending_call("a", [{"value": 2}, {"value": 3, "ts": "2025-11-21T05:00:00Z"}], None)
    answer = TopicsAccepted([TopicResult("a", [0, 1, 2], 1, 2)], 1, 2, 0)
    first, second = outcomes([old, new], answer)
    assert isinstance(first, Published) and isinstance(second, Published)
    assert (first.accepted, first.late, first.shared) == (0, 1, True)
    assert (second.accepted, second.late, second.shared) == (1, 1, True)
    assert first.late + second.late == 2 and first + second == 1


def test_a_refusal_of_the_whole_batch_is_the_call_whose_event_it_names() -> None:
    batch = calls(("a", 2), ("b", 3))
    found = culprit(batch, ApiError(400, "invalid_event", "value", index=3))
    assert found is not None
    number, own = found
    assert (number, own.index, own.code) == (1, 1, "invalid_event")
    assert culprit(batch, ApiError(400, "malformed_json", "?")) is None
    assert culprit(batch, ApiError(503, "broker_unavailable", "down", index=0)) is None


def test_an_answer_that_leaves_a_call_out_is_an_error() -> None:
    with pytest.raises(ValueError, match="says nothing"):
        outcomes(calls(("a", 1), ("b", 1)), TopicsAccepted([TopicResult("a", [0], 1, 0)], 1, 0, 0))


def test_events_that_cannot_be_sent_are_refused_before_anything_is_held() -> None:
    with pytest.raises(ValueError):
        pending_call("a", [{"value": float("nan")}], None)
    with pytest.raises(TypeError):
        pending_call("a", ["twelve"], None)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        pending_call("a", [{"data": {1, 2}}], None)


def test_a_topic_refused_for_a_while_is_sent_again_with_the_same_key() -> None:
    """A 207 where one topic's partition was unreachable (503): the same body, with the same
    key, is sent again after the backoff (the topic logged is replayed, the other logged
    now); each call then gets its topic's answer."""
    sent: list[tuple[str, bytes]] = []
    unavailable = ErrorDetail("broker_unavailable", "Redis unreachable", msgspec.UNSET)
    answers = [
        TopicsAccepted(
            [TopicResult("a", [0], 1, 0), TopicResult("b", [1], error=unavailable, status=503)],
            1,
            0,
            1,
        ),
        TopicsAccepted([TopicResult("a", [0], 1, 0), TopicResult("b", [1], 1, 0)], 2, 0, 0),
    ]

    def run(plan: Any) -> TopicsAccepted:
        call = next(plan)
        sent.append((call.headers["Idempotency-Key"], call.content))
        return answers[len(sent) - 1]

    waits: list[float] = []
    batcher = Batcher(run, HOLD, backoff=Backoff(base=0.01), sleep=waits.append)
    first, second = batcher.add("a", 1), batcher.add("b", 2)
    batcher.close()
    assert (first.result(), second.result()) == (1, 1)
    assert len(sent) == 2 and sent[0] == sent[1]  # the same key and body
    assert len(waits) == 1


def test_a_topic_refused_past_the_backoff_fails_its_caller_only() -> None:
    unavailable = ErrorDetail("broker_unavailable", "Redis unreachable", msgspec.UNSET)
    answer = TopicsAccepted(
        [TopicResult("a", [0], 1, 0), TopicResult("b", [1], error=unavailable, status=503)], 1, 0, 1
    )
    attempts = []

    def run(plan: Any) -> TopicsAccepted:
        attempts.append(next(plan))
        return answer

    batcher = Batcher(run, HOLD, backoff=Backoff(retries=2, base=0.0), sleep=lambda _: None)
    first, second = batcher.add("a", 1), batcher.add("b", 2)
    batcher.close()
    assert first.result() == 1
    with pytest.raises(ApiError) as refused:
        second.result()
    assert (refused.value.status, refused.value.code) == (503, "broker_unavailable")
    assert len(attempts) == 3
