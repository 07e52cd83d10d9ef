"""The lock under which a Redis deployment admits topics new to it.

`--max-topics` counts the topics of every partition, which no one-slot script can read, so a
topic new to its partition is admitted by the broker under this lock: it counts the live
topics, then lets the script log the topic (`RedisBroker.append_events`, and a cross-topic
request's new topics together in `append_many`). A topic's later appends never take it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterator

import redis

from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.redis.wire import unavailable
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

LOCK_MS = 2000
"""How long a holder that dies keeps the lock from the others."""


@contextlib.contextmanager
def admitting(
    client: redis.Redis, key: str, release: Script, wait_s: float, *, on_cluster: bool
) -> Iterator[None]:
    """Hold the admission lock `key`, waiting `wait_s` at most for it (`release`: the script
    that lets it go only where this holder still has it). On a Cluster whose lock's primary is
    failing over, admit unlocked rather than refuse every new topic of every partition
    meanwhile: the limit may then be passed by as many new topics as race for the last places."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait_s
    try:
        with unavailable("admit a new topic"):
            while not client.set(key, token, nx=True, px=LOCK_MS):
                if time.monotonic() > deadline:
                    raise BrokerUnavailable("timed out waiting to admit a new topic")
                time.sleep(0.001)
    except BrokerUnavailable as exc:
        if not on_cluster:
            raise
        log.warning("admitting a new topic without its lock: %s", exc.message)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(BrokerUnavailable), unavailable("admit a new topic"):
            release(keys=[key], args=[token])
