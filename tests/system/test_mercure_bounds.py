"""Every publish bound of pushsvc's own POST holds for a Mercure publication too: the publish
rate (`--publish-rate`, one bucket per token subject whichever API the publisher uses), and
the body and message bounds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from harness.live import PushsvcProcess, SSEClient

from support.mercure_hub import HUB, SECRET, iri


@pytest.fixture(scope="module")
def hub() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve",
        "--mercure",
        "anonymous",
        "--publish-rate",
        "1",
        "--tick",
        "0",
        env={"PUSHSVC_JWT_KEY": SECRET},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def _token(subject: str) -> str:
    claims = {
        "sub": subject,
        "mercure": {"publish": ["*"]},
        "pushsvc": {"publish": ["*"], "subscribe": ["*"]},
        "exp": int(time.time()) + 600,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _publish(port: int, subject: str, topic: str, data: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}{HUB}",
        content=urlencode([("topic", topic), ("data", data)]),
        headers={
            "Authorization": f"Bearer {_token(subject)}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )


def test_a_mercure_publisher_is_held_to_the_publish_rate(hub: PushsvcProcess) -> None:
    topic = iri("rated")
    subscriber = SSEClient(hub.port, f"{HUB}?{urlencode([('match', topic)])}")
    assert subscriber.status == 200, subscriber.raw
    subject = f"publisher-{uuid.uuid4().hex[:8]}"
    try:
        # One event a second, a burst of one: of six at once, the first is taken.
        answers = [_publish(hub.port, subject, topic, f"n{i}") for i in range(6)]
        taken = [i for i, a in enumerate(answers) if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert taken and taken[0] == 0 and len(taken) <= 2, [a.status_code for a in answers]
        for answer in refused:
            assert answer.status_code == 429, answer.text
            assert answer.json()["error"]["code"] == "rate_limited"
            assert int(answer.headers["Retry-After"]) >= 1
        # The same subject on pushsvc's own API shares the bucket.
        native = httpx.post(
            f"http://127.0.0.1:{hub.port}/topics/rated.native/events",
            json={"value": 1},
            headers={"Authorization": f"Bearer {_token(subject)}"},
        )
        assert native.status_code == 429, native.text
        # Another publisher is not held by this one's bucket; what was refused was not kept.
        assert (
            _publish(hub.port, f"other-{uuid.uuid4().hex[:8]}", topic, "other").status_code == 200
        )
        received = [subscriber.next().data for _ in range(len(taken) + 1)]
        assert received == [*(f"n{i}" for i in taken), "other"]
    finally:
        subscriber.close()


def test_a_publication_over_the_body_or_message_bound_is_refused(hub: PushsvcProcess) -> None:
    topic = iri("large")
    subject = f"large-{uuid.uuid4().hex[:8]}"
    answer = _publish(hub.port, subject, topic, "x" * (2 << 20))
    assert answer.status_code == 413
    answer = _publish(hub.port, subject, topic, "x" * (100 << 10))
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "payload_too_large"
