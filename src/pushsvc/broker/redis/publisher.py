"""Publishing events straight into Redis, for producers that would rather not use HTTP (the
bridge in every aggregator process appends them to the event log)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys


def publish_to_redis(
    url: str, prefix: str, topic: str, batches: Sequence[Sequence[dict[str, object]]]
) -> tuple[int, int]:
    """PUBLISH each batch as one JSON array on `{prefix}ingest:{topic}`; (events sent, events
    no bridge received). There is no acknowledgement: a rejected batch is only counted by the
    bridge (`pushsvc_bridge_rejected_total` in /metrics)."""
    channel = Keys(prefix).ingest_channel + topic.encode()
    client = single_client(url, socket_timeout=5.0)
    sent = unheard = 0
    try:
        for batch in batches:
            receivers = client.publish(channel, orjson.dumps(list(batch)))
            sent += len(batch)
            if not receivers:
                unheard += len(batch)
    finally:
        client.close()
    return sent, unheard
