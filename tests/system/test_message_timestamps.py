"""A message is never lost to its timestamp: `pushsvc serve` on the embedded broker and on a
real redis-server, driven over HTTP.

Hypothesis draws batches of messages (and a few plain events) whose `ts` is far behind the
topic's clock, behind it within the grace, ahead of it within `--max-future`, or from one of
several producers whose clocks are skewed, interleaved. The model is the contract's
(`pushsvc.core.lateness`): the clock is the largest `ts` logged on time; an event older than
the clock less the grace is past it. Every POST answers the model's `accepted` and `late`;
`/topics/{t}/messages` (from `?replay=`) pushes every message once, in the order they were
posted, however late or early; the topic's update of a message past the grace says
`past_grace` and carries the statistics of the update before it (the message is in none);
the late stream holds every event past the grace, once, in order, and pushes none of them
again on a messages stream.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, serving_on, wait_caught_up
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

S = 1_000_000
GRACE_S = 5.0
# Producers' clocks, in seconds from the true time: one fast by a minute, one slow, one right.
SKEWS = (60.0, -30.0, 0.0)


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def served(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_on(request.param, "--tick", "0", "--history", "100000") as proc:
        yield proc


@st.composite
def stamped(draw: st.DrawFn) -> dict[str, Any]:
    """One event's offset from the test's base time, in seconds, and whether it is a message."""
    kind = draw(st.sampled_from(["skewed", "skewed", "behind", "far", "ahead", "edge"]))
    if kind == "skewed":
        offset = draw(st.sampled_from(SKEWS)) + draw(st.floats(0, 2))
    elif kind == "behind":
        offset = -draw(st.floats(0, 4 * GRACE_S))
    elif kind == "far":
        offset = -draw(st.sampled_from([3600.0, 86_400.0 * 365 * 5]))
    elif kind == "ahead":
        offset = draw(st.floats(0, 280))
    else:
        offset = draw(st.sampled_from([-GRACE_S - 1e-3, -GRACE_S, -GRACE_S + 1e-3]))
    return {"offset": round(offset, 3), "message": draw(st.integers(0, 5)) > 0}


BATCHES = st.lists(st.lists(stamped(), min_size=1, max_size=4), min_size=1, max_size=8)


def _model(clock: int | None, batch: list[tuple[int, bool]]) -> tuple[int | None, list[bool]]:
    """The clock after `batch` (times in µs) and, for each event, whether it is past the
    grace."""
    past = []
    for ts, _ in batch:
        if clock is None or ts > clock:
            clock = ts
            past.append(False)
        else:
            past.append(ts < clock - GRACE_S * S)
    return clock, past


def _history(port: int, topic: str) -> list[dict[str, Any]]:
    status, _, body = request(port, "GET", f"/topics/{topic}/history?since=0&limit=1000")
    assert status == 200, body
    return [u for u in json.loads(body)["updates"] if u.get("reason") == "event"]


def _check(port: int, batches: list[list[dict[str, Any]]]) -> None:
    topic = f"m-{uuid.uuid4().hex[:10]}"
    base_us = time.time_ns() // 1000 // 1000 * 1000
    clock: int | None = None
    posted: list[int] = []  # every message's number, in the order posted
    kept: list[int] = []  # every event past the grace's number, in order
    past_messages: set[int] = set()
    n = 0
    for batch in batches:
        events, times = [], []
        for item in batch:
            ts = base_us + int(item["offset"] * S)
            times.append((ts, item["message"]))
            event: dict[str, Any] = {"ts": ts / S}
            if item["message"]:
                event |= {"type": "note", "data": {"n": n}}
                posted.append(n)
            else:
                event |= {"value": float(n), "tags": {"n": str(n)}}
            events.append(event)
            n += 1
        first = n - len(batch)
        clock, past = _model(clock, times)
        late = [first + i for i, p in enumerate(past) if p]
        kept += late
        past_messages |= {i for i in late if batch[i - first]["message"]}
        status, answer = post(port, topic, events)
        assert status == 202, answer
        expected = {"accepted": len(batch) - len(late)} | ({"late": len(late)} if late else {})
        assert answer == expected, (batch, clock)
    # A server-stamped message last: on time or not, it is pushed after all the others.
    status, _ = post(port, topic, {"type": "end", "data": {"n": n}})
    assert status == 202
    wait_caught_up(port)
    with SSEClient(port, f"/topics/{topic}/messages?replay=1000") as stream:
        pushed = []
        while True:
            message = stream.next()
            if message.event == "end":
                break
            assert message.event == "note", message
            pushed.append(json.loads(message.data)["n"])
    assert pushed == posted
    updates = _history(port, topic)
    for before, update in itertools.pairwise(updates):
        if update.get("past_grace"):
            assert update["late"] is True
            assert update["event"]["data"]["n"] in past_messages | {n}
            assert update["windows"] == before["windows"], "a message past the grace was counted"
    flagged = {u["event"]["data"]["n"] for u in updates if u.get("past_grace")}
    assert flagged - {n} == past_messages  # (the server-stamped last one may be past it too)
    on_late = _history(port, f"{topic}.late") if kept else []
    numbers = [
        u["event"]["data"]["n"] if "data" in u["event"] else int(u["event"]["tags"]["n"])
        for u in on_late
    ]
    assert numbers in (kept, [*kept, n])  # (the server-stamped last one, if past the grace)
    assert all(u.get("copy") is True for u in on_late if "data" in u["event"])


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=BATCHES)
def test_every_message_is_pushed_once_in_order_whatever_its_time(
    served: PushsvcProcess, batches: list[list[dict[str, Any]]]
) -> None:
    _check(served.port, batches)


def test_a_message_stamped_ahead_does_not_hold_back_the_next_ones(served: PushsvcProcess) -> None:
    """The example a shop meets: one message stamped a minute ahead (a producer whose clock
    runs fast), then server-stamped ones: each is pushed, counted late, in order."""
    topic = f"m-{uuid.uuid4().hex[:10]}"
    ahead = time.time() + 60
    assert post(served.port, topic, {"type": "shipped", "data": 0, "ts": ahead}) == (
        202,
        {"accepted": 1},
    )
    for n in range(1, 4):
        status, answer = post(served.port, topic, {"type": "shipped", "data": n})
        assert (status, answer) == (202, {"accepted": 0, "late": 1})
    with SSEClient(served.port, f"/topics/{topic}/messages?replay=10") as stream:
        got = [json.loads(stream.next().data) for _ in range(4)]
    assert got == [0, 1, 2, 3]
