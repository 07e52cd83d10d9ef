"""The aggregator lease: one active aggregator per shard, any number of hot standbys.

Every aggregator of a shard consumes the shard's events and keeps its windows up to
date; only the holder of `{prefix}lease:{i}/{N}` publishes updates. The holder
renews every ttl/3; when it dies, its key expires and a standby takes over within
one ttl with warm windows. Updates for events that arrive between the death and the
takeover are not published (the next update carries the full state).
"""

from __future__ import annotations

import contextlib
import logging
import secrets

import redis
from gevent.event import Event as Signal

from pushsvc.aggregator import Aggregator
from pushsvc.config import Settings

log = logging.getLogger(__name__)

# Renew our own lease, or take a free one; never take one another process holds.
_ACQUIRE_OR_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def run_with_lease(aggregator: Aggregator, settings: Settings, stop: Signal) -> None:
    """Keep `aggregator.active` equal to holding the lease, until `stop` is set."""
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    index, count = settings.shard
    key = f"{settings.prefix}lease:{index}/{count}"
    token = secrets.token_hex(8)
    ttl_ms = max(1, settings.lease // 1000)
    acquire = client.register_script(_ACQUIRE_OR_RENEW)
    aggregator.active = False
    try:
        while not stop.is_set():
            try:
                holding = bool(acquire(keys=[key], args=[token, ttl_ms]))
            except redis.RedisError as exc:
                holding = False
                log.warning("lease check failed: %s", exc)
            if holding != aggregator.active:
                log.warning("%s the lease %s", "took" if holding else "lost", key)
                aggregator.active = holding
            stop.wait(ttl_ms / 3000)
    finally:
        aggregator.active = False
        with contextlib.suppress(redis.RedisError):  # it expires by itself anyway
            client.register_script(_RELEASE)(keys=[key], args=[token])
        client.close()
