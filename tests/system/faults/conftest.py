"""Where the fault suites keep their data (backends.py): the module's one redis-server, or the
session's Redis Cluster, by the test's `backend` parameter. Each case keeps to a prefix of its
own either way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness.redis_server import RedisServer

from faults.backends import Store


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as made:
        yield made


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The deployment the test runs on: "redis", or what its parameters name (`on_both`, `BOTH`)."""
    return str(getattr(request, "param", "redis"))


@pytest.fixture
def store(request: pytest.FixtureRequest, backend: str) -> Store:
    """The module's redis-server, or the session's Redis Cluster (started on first use)."""
    found: Store = request.getfixturevalue("redis_cluster" if backend == "cluster" else "server")
    return found


@pytest.fixture
def own_store(request: pytest.FixtureRequest, backend: str) -> Iterator[Store]:
    """A redis-server of the test's own, or the session's Redis Cluster."""
    if backend == "cluster":
        yield request.getfixturevalue("redis_cluster")
        return
    with RedisServer() as made:
        yield made
