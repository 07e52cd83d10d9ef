"""A Mercure hub for the system tests: `pushsvc serve --mercure anonymous` on the embedded
broker, on Redis or on a Redis Cluster, the tokens and topic IRIs the tests use with it, and
publications one at a time or pipelined on keep-alive connections (a flood's, or a history
filled fast). One place for what each Mercure test file started alike."""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from harness.keepalive import Answers
from harness.live import PushsvcProcess, SSEClient

from pushsvc.broker.base import Broker, HistoryStarts
from pushsvc.core.cursor import EARLIEST, Cursor
from pushsvc.core.partitions import partitions_matching
from pushsvc.deliver.mercure_resume import Resume, cursor_after
from pushsvc.deliver.mercure_search import KEPT, find_many

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
    """An HS256 token with the `mercure` claim `mercure`, for three hours: longer than a run of
    the whole suite, since a test module may make its tokens when it is imported (a token of
    ten minutes, made at collection, had expired when its test ran 17 minutes later)."""
    claims = {"mercure": mercure, "exp": int(time.time()) + 3 * 3600}
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


def publisher_token() -> str:
    """A token that may publish every topic, one per five minutes (`token`'s last ten): a
    flood's publications send one, as a publisher's client does."""
    return _publisher_token(int(time.time()) // 300)


@functools.lru_cache(maxsize=1)
def _publisher_token(period: int) -> str:
    return token(publish=["*"])


def publication(topics: list[str], data: str, **fields: str) -> bytes:
    """One publication's request (a publisher allowed every topic), as bytes to send on a
    keep-alive connection."""
    body = urlencode([*(("topic", t) for t in topics), ("data", data), *fields.items()]).encode()
    return (
        f"POST {HUB} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {publisher_token()}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def publish_answers(
    port: int, requests: list[bytes], *, batch: int = 32
) -> list[tuple[int, bytes]]:
    """Send `requests` on one connection, `batch` before reading their answers (pipelined, as
    a flood would); their answers (status, body: a publication's id)."""
    answers: list[tuple[int, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        reader = Answers(conn)
        for start in range(0, len(requests), batch):
            chunk = requests[start : start + batch]
            conn.sendall(b"".join(chunk))
            answers.extend(reader.next() for _ in chunk)
    return answers


def publish_many(port: int, requests: list[bytes], *, batch: int = 32) -> list[int]:
    """`publish_answers`' statuses."""
    return [status for status, _ in publish_answers(port, requests, batch=batch)]


def fill_history(
    port: int, count: int, *, topics: Sequence[str] = (), connections: int = 4
) -> list[str]:
    """`count` updates of `topics` in turn (64 of their own when none are given), 256 bytes
    of data each, on `connections` at once; their ids (the hub's), each connection's in the
    order they were answered, the first connection's first."""
    topics = list(topics) or [f"https://example.com/history/{n}" for n in range(64)]
    shares = [count // connections + (i < count % connections) for i in range(connections)]
    results: list[list[tuple[int, bytes]]] = [[] for _ in shares]

    def send(index: int) -> None:
        requests = [publication([topics[n % len(topics)]], "h" * 256) for n in range(shares[index])]
        results[index] = publish_answers(port, requests)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted({status for r in results for status, _ in r}) == [200]
    assert sum(len(r) for r in results) == count
    return [body.decode() for r in results for _, body in r]


def lookup_at_once(broker: Broker, asked: Sequence[str]) -> list[Resume]:
    """Where a Mercure subscriber resuming from each of `asked` resumes, as the lookup did
    before it read the history in pages (the reference its pages must answer as): the
    history of `mercure.*` replayed at once from where each partition's starts, searched,
    the replay's heads for `cursor_after`. Only the partitions the hub's topics are kept in
    (`partitions_matching`: the one partition) are read, as a Mercure stream reads them."""
    read = set(partitions_matching(KEPT, broker.partitions))
    assert isinstance(broker, HistoryStarts)
    starts = broker.history_starts()
    replayed = broker.replay(Cursor(i for p, i in starts.items() if p in read), KEPT)
    found = find_many(replayed.updates, asked)
    return [
        Resume(None, EARLIEST)
        if (at := found.get(i)) is None
        else Resume(cursor_after(at, replayed.heads), i)
        for i in asked
    ]


def subscribe(
    hub: PushsvcProcess,
    *selectors: tuple[str, str],
    auth: str | None = None,
    last_event_id: str | None = None,
) -> SSEClient:
    """A subscription to `hub` with `selectors` (`("topic", iri)`, `("match", iri)`, …), with
    a token and a `Last-Event-ID` where given; its head read (200)."""
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    stream = SSEClient(hub.port, f"{HUB}?{urlencode(selectors)}", headers=headers)
    assert stream.status == 200, stream.raw
    return stream
