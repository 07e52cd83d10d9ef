"""The topics only the Mercure hub appends to are refused to every other way in (pushsvc's
POST, the Redis bridge and the outbox all validate through `pushsvc.ingest.accept`)."""

from __future__ import annotations

import orjson
import pytest

from pushsvc.core.partitions import is_hub_topic
from pushsvc.deliver.mercure_subscriptions import SUBSCRIPTIONS_TOPIC
from pushsvc.deliver.mercure_updates import envelope, topic_name
from pushsvc.errors import MercureTopic
from pushsvc.ingest import DEFAULT_LIMITS
from pushsvc.ingest.accept import validated

FORGED = orjson.dumps(
    {
        "type": "message",
        "data": envelope(
            ["https://victim.example/account/1"], "x", private=False, update_id="f", retry=None
        ),
    }
)


@pytest.mark.parametrize(
    "topic", ["mercure.mine", topic_name("https://victim.example/account/1"), SUBSCRIPTIONS_TOPIC]
)
def test_a_producer_cannot_append_where_mercure_subscribers_read(topic: str) -> None:
    assert is_hub_topic(topic)
    with pytest.raises(MercureTopic, match="only the Mercure hub"):
        validated(topic, FORGED, "application/json", limits=DEFAULT_LIMITS, now_us=1)


@pytest.mark.parametrize("topic", ["mercure", "mercurex.a", "orders.mercure.x", "mercure-x"])
def test_other_topics_stay_open_to_producers(topic: str) -> None:
    assert not is_hub_topic(topic)
    assert validated(topic, FORGED, "application/json", limits=DEFAULT_LIMITS, now_us=1)
