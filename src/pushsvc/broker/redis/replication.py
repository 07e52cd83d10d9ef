"""How many replicas a Redis primary has online: with `--redis-min-replicas N` a POST is
answered `202` only once `WAIT N` confirms its append, so a primary with fewer than N replicas
online refuses every POST (`503 replicas_unconfirmed`) and the process is not ready.

A replica counts once its initial synchronisation is over (`state=online` in `INFO
replication`): before that it does not acknowledge the offsets `WAIT` counts.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import ResponseError


def read_replicas_online(client: redis.Redis) -> int | None:
    """The primary's replicas that are online; None when `INFO` is refused (the count is
    then unknown, and nothing is concluded from it). Transport errors propagate."""
    try:
        info: dict[str, Any] = client.info("replication")
    except ResponseError:
        return None
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def replicas_problem(online: int, wanted: int) -> str | None:
    """One line saying why writes cannot be confirmed, and what to do, when a primary has
    fewer replicas online than `--redis-min-replicas` asks for."""
    if online >= wanted:
        return None
    return (
        f"a Redis primary has {online} replica(s) online and --redis-min-replicas "
        f"(PUSHSVC_REDIS_MIN_REPLICAS) is {wanted}: no write can be confirmed, every POST "
        "answers 503 replicas_unconfirmed; attach a replica to it (after a failover: repair "
        "or restart a replica so that it rejoins the promoted primary), or lower "
        "PUSHSVC_REDIS_MIN_REPLICAS"
    )
