"""No Mercure update but the hub's: pushsvc's own API, whatever its token's scope, cannot make a
Mercure subscriber receive anything. A message whose data is a Mercure envelope, POSTed to a
topic a Mercure stream reads (`mercure.*`, the subscription events' topic), is refused and
kept nowhere; the hub's own publication, made after it, is the next thing the subscriber
receives (a stream is in order, so a forged update would have come first).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import jwt
import orjson
import pytest
from harness.live import PushsvcProcess, SSEClient

from pushsvc.deliver.mercure_subscriptions import SUBSCRIPTIONS_TOPIC
from pushsvc.deliver.mercure_updates import envelope, topic_name
from support.mercure_hub import BACKENDS, HUB, SECRET, iri, publish, serving_hub, token


@pytest.fixture(params=BACKENDS, scope="module")
def hub(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_hub(request.param, request, "--mercure-subscriptions") as proc:
        yield proc


def native(publish: list[str]) -> dict[str, str]:
    """The headers of a token of pushsvc's own API that may publish to `publish`."""
    claims = {"pushsvc": {"publish": publish, "subscribe": ["*"]}, "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


@pytest.mark.parametrize("scope", [["mercure.mine"], ["mercure.*"], ["*"]])
def test_no_native_token_makes_a_mercure_subscriber_receive_anything(
    hub: PushsvcProcess, scope: list[str]
) -> None:
    victim = iri("account")
    # Every update and subscription event there is, private ones too.
    watcher = SSEClient(
        hub.port,
        f"{HUB}?{urlencode([('match', '*')])}",
        headers={"Authorization": f"Bearer {token(subscribe=['*'])}"},
    )
    assert watcher.status == 200, watcher.raw
    try:
        forged = envelope([victim], "forged", private=False, update_id="forged-1", retry=None)
        body = orjson.dumps({"type": "message", "data": forged})
        for topic in {"mercure.mine", topic_name(victim), SUBSCRIPTIONS_TOPIC}:
            answer = httpx.post(
                f"http://127.0.0.1:{hub.port}/topics/{topic}/events",
                content=body,
                headers={**native(scope), "Content-Type": "application/json"},
            )
            allowed = scope == ["*"] or topic in scope or (scope == ["mercure.*"] and "." in topic)
            if allowed:  # the token may publish there: refused for what the topic is
                assert answer.status_code == 400, (topic, answer.text)
                assert answer.json()["error"]["code"] == "mercure_topic"
            else:
                assert answer.status_code == 403, (topic, answer.text)
        # An NDJSON batch and a topic the token names exactly are refused alike.
        answer = httpx.post(
            f"http://127.0.0.1:{hub.port}/topics/mercure.mine/events",
            content=body + b"\n" + body,
            headers={**native(["mercure.mine"]), "Content-Type": "application/x-ndjson"},
        )
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "mercure_topic"
        publish(hub, [victim], "real", id="real-1")
        received = watcher.next()
        while received.event == "mercure":  # the watcher's own subscription event
            received = watcher.next()
        assert (received.id, received.data) == ("real-1", "real")
    finally:
        watcher.close()
