"""`GET /readyz`'s answer, defined once: `Readiness`, with each shard's lag (`ShardReadiness`).

The health view encodes it from these classes and `/openapi.json`'s `Readiness` is generated
from them, so the document names exactly the statuses the view can answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

Status = Literal[
    "ready",
    "unavailable",
    "redis_evicts",
    "redis_full",
    "replicas_unconfirmed",
    "no_aggregator",
    "rules_differ",
]


class ShardReadiness(Struct, frozen=True):
    """one shard of the event log: whether an aggregator holds it, the entries logged and not
    yet applied, the age of the oldest of them (null when none), and the digest of the rules
    its aggregator computes with (null where unknown)"""

    aggregator: bool
    lag_entries: int
    lag_seconds: float | None
    rules_digest: str | None


class Readiness(Struct, frozen=True, omit_defaults=True):
    """whether this process can serve: ready, or what is wrong (`reason`: what to do)"""

    status: Status
    broker: Annotated[str, Meta(description="why the broker is unavailable")] | UnsetType = UNSET
    reason: (
        Annotated[
            str,
            Meta(
                description="with every status but ready: what is wrong and what to do. "
                "unavailable: the broker's error; redis_evicts: the maxmemory-policy and the "
                "fix; redis_full: memory used of maxmemory, and how many log entries the "
                "aggregators are behind; replicas_unconfirmed: the replicas online and "
                "PUSHSVC_REDIS_MIN_REPLICAS; no_aggregator: the partitions no aggregator "
                "holds; rules_differ: this process's rules digest and the aggregator's"
            ),
        ]
        | UnsetType
    ) = UNSET
    shards: (
        Annotated[dict[str, ShardReadiness], Meta(description="by `index/count`")] | UnsetType
    ) = UNSET


def readiness_json(readiness: Readiness) -> bytes:
    """The answer's body, ending with a newline as every JSON answer of the API does."""
    return msgspec.json.encode(readiness) + b"\n"
