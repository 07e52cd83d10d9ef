"""A server with a rules file on the backend a test is parametrized over: `pushsvc serve` on
the embedded broker, or on Redis an aggregator (holding the lease) and a web process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.live import PushsvcProcess
from harness.redis_server import RedisServer


@contextmanager
def rules_deployment(backend: str, rules: Path, prefix: str) -> Iterator[PushsvcProcess]:
    """The process to ask (the web one on Redis), ticks off, `rules` in force."""
    if backend == "memory":
        proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
        try:
            yield proc
        finally:
            proc.stop()
        return
    redis_server = RedisServer().start()
    env = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_RULES": str(rules),
    }
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    web = PushsvcProcess("web", env=env).start()
    try:
        aggregator.wait_for_log("took the lease")
        yield web
    finally:
        web.stop()
        aggregator.stop()
        redis_server.stop()
