"""A Mercure hub for the system tests: `pushsvc serve --mercure anonymous` on the embedded
broker, on Redis or on a Redis Cluster, and the tokens and topic IRIs the tests use with it.
One place for what each Mercure test file started alike."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from harness.live import PushsvcProcess

SECRET = "a-test-secret-of-at-least-32-bytes!!"
HUB = "/.well-known/mercure"
BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]
"""The brokers a hub runs on, as a fixture's params (the Redis ones marked)."""


@contextmanager
def serving_hub(
    backend: str, request: pytest.FixtureRequest, *more: str
) -> Iterator[PushsvcProcess]:
    """A hub on `backend` ("memory", "redis" or "cluster": the suite's server, a key prefix of
    its own), with the settings `more` beside `--mercure anonymous`."""
    args: tuple[str, ...] = ("--mercure", "anonymous", *more, "--tick", "0")
    if backend in ("redis", "cluster"):
        server = request.getfixturevalue("redis_server" if backend == "redis" else "redis_cluster")
        args += ("--redis-url", server.url, "--prefix", f"m{uuid.uuid4().hex[:8]}:")
    proc = PushsvcProcess("serve", *args, env={"PUSHSVC_JWT_KEY": SECRET}).start()
    try:
        yield proc
    finally:
        proc.stop()


def token(**mercure: Any) -> str:
    """An HS256 token with the `mercure` claim `mercure`, for ten minutes."""
    claims = {"mercure": mercure, "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def iri(name: str) -> str:
    """A topic IRI no other test uses."""
    return f"https://example.com/{name}/{uuid.uuid4().hex[:10]}"


def publish(hub: PushsvcProcess, topics: list[str], data: str, **fields: str) -> str:
    """Publish as a publisher allowed every topic; the update's id (the publisher's, else the
    hub's `urn:uuid:`)."""
    form = [("topic", t) for t in topics] + [("data", data), *fields.items()]
    answer = httpx.post(
        f"http://127.0.0.1:{hub.port}{HUB}",
        content=urlencode(form),
        headers={
            "Authorization": f"Bearer {token(publish=['*'])}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def pushsvc_reader() -> dict[str, str]:
    """The headers of an operator's pushsvc token (the native API, not Mercure's)."""
    claims = {"pushsvc": {"subscribe": ["*"], "publish": ["*"]}, "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}
