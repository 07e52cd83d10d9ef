"""A producer's retry after a lost answer logs a batch's late events once: `pushsvc serve` on the
embedded broker and on a real redis-server, behind a proxy that drops the connection once the
server has answered (the server logged the batch; the producer never heard).

The batch's on-time events, its events past the grace and its `Idempotency-Key` are written by
one append (the late stream lives in its topic's partition), so there is no moment between two
appends for a crash to fall in: the retry with the same key is a replay answering the same
counts, and the topic and its late stream each hold one copy.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from harness.live import PushsvcProcess, request, serving_on, wait_caught_up

from support.proxies import AnswerLosingProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def served(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_on(request.param, "--tick", "0") as proc:
        yield proc


def test_a_retry_after_a_lost_answer_logs_each_late_event_once(served: PushsvcProcess) -> None:
    topic = f"r-{uuid.uuid4().hex[:10]}"
    now = time.time()
    assert (
        request(served.port, "POST", f"/topics/{topic}/events", {"value": 0, "ts": now})[0] == 202
    )
    batch = [
        {"type": "shipped", "data": {"order": 1}, "ts": now - 3600},  # past the grace: pushed
        {"value": 2, "ts": now - 60},  # past the grace
        {"value": 3, "ts": now},  # on time
    ]
    headers = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    proxy = AnswerLosingProxy(served.port, lose=1)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            request(proxy.port, "POST", f"/topics/{topic}/events", batch, headers=headers)
        assert proxy.lost == 1
    finally:
        proxy.close()
    for _ in range(2):
        status, answer_headers, body = request(
            served.port, "POST", f"/topics/{topic}/events", batch, headers=headers
        )
        assert (status, json.loads(body)) == (202, {"accepted": 1, "late": 2})
        assert answer_headers.get("idempotent-replayed") == "true"
    wait_caught_up(served.port)

    def history(name: str) -> list[dict[str, object]]:
        status, _, body = request(served.port, "GET", f"/topics/{name}/history?since=0")
        assert status == 200
        return [u["event"] for u in json.loads(body)["updates"] if u["reason"] == "event"]

    on_topic = history(topic)
    assert [e.get("data", e.get("value")) for e in on_topic] == [0.0, {"order": 1}, 3.0]
    late = history(f"{topic}.late")
    assert [e.get("data", e.get("value")) for e in late] == [{"order": 1}, 2.0]
