"""Shared fixtures: real pushsvc processes, real redis-server processes, real sockets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pushsvc.testing.live import PushsvcProcess
from pushsvc.testing.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of our own on a free port (never the machine's 6379)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A unique key prefix, so tests sharing a Redis never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="module")
def server() -> Iterator[PushsvcProcess]:
    """`pushsvc serve` on the embedded broker, shared by a module's tests (use distinct topics)."""
    proc = PushsvcProcess("serve", "--tick", "0", "--heartbeat", "1s").start()
    yield proc
    proc.stop()


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"
