"""Redis's memory as pushsvc needs it: the eviction policy (which must be `noeviction`: the log,
the history and the leases are data, not a cache) and whether Redis is full.

The policy is read with `CONFIG GET`, else from `INFO memory` (managed Redis services often
disable CONFIG but not INFO); when both are refused it is unknown, and the caller warns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError

NOEVICTION = "noeviction"

FIX = (
    'run CONFIG SET maxmemory-policy noeviction or set "maxmemory-policy noeviction" in redis.conf'
)


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """What one look at Redis found. `policy` is None when Redis would not say; the byte counts
    are 0 when INFO is refused. `max_bytes` 0 is no limit."""

    policy: str | None
    used_bytes: int = 0
    max_bytes: int = 0
    not_counted_bytes: int = 0

    @property
    def evicts(self) -> bool:
        return self.policy is not None and self.policy != NOEVICTION

    @property
    def full(self) -> bool:
        """Redis's own rule (`getMaxmemoryState`): over maxmemory, not counting replication
        and AOF buffers; a write that needs memory is refused now."""
        used = self.used_bytes - self.not_counted_bytes
        return self.max_bytes > 0 and used > self.max_bytes

    def eviction_problem(self) -> str | None:
        """One line naming the setting and the fix, when the policy evicts."""
        if not self.evicts:
            return None
        return (
            f"redis maxmemory-policy is {self.policy}: pushsvc keeps data in Redis that must "
            f"not be evicted; {FIX}"
        )

    def full_problem(self) -> str | None:
        if not self.full:
            return None
        return f"redis is full (used_memory {self.used_bytes} of maxmemory {self.max_bytes})"


UNCHECKED = (
    "could not read Redis's maxmemory-policy (CONFIG GET and INFO are refused): make sure it "
    "is noeviction by hand (docs/reliability.md, Redis memory); an evicting Redis drops "
    "acknowledged events silently"
)


def read_memory(client: redis.Redis) -> RedisMemory:
    """One round trip: `CONFIG GET maxmemory-policy` and `INFO memory`, either may be refused.
    Transport errors propagate (the caller's `unavailable` maps them)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.config_get("maxmemory-policy")
        pipe.info("memory")
        config, info = pipe.execute(raise_on_error=False)
    # A refused command comes back as its ResponseError (unknown command, NOPERM).
    policy: str | None = None
    if isinstance(config, dict) and "maxmemory-policy" in config:
        policy = str(config["maxmemory-policy"])
    if isinstance(info, ResponseError):
        return RedisMemory(policy)
    fields: dict[str, Any] = info
    if policy is None and "maxmemory_policy" in fields:
        policy = str(fields["maxmemory_policy"])
    return RedisMemory(
        policy,
        used_bytes=int(fields.get("used_memory", 0)),
        max_bytes=int(fields.get("maxmemory", 0)),
        not_counted_bytes=int(fields.get("mem_not_counted_for_evict", 0)),
    )
