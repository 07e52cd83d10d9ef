"""Private everywhere, for Mercure (docs/security.md#mercure-authorization): a private update
reaches a subscriber only when its token allows one of the update's topics, and then once;
never an anonymous subscriber (`--mercure anonymous`), never one whose token allows none of
its topics: live, on resume from an update's id or from pushsvc's own cursor, and on
`earliest`. Nothing those subscribers receive (headers, replay, gap, live) holds the private
update's marker. On the embedded server and on Redis.

Each stream's updates are awaited up to a public sentinel published after everything else:
a stream is in order, so a private update that leaked would have come before it.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from harness.live import PushsvcProcess, SSEClient

from pushsvc.core.cursor import Cursor
from support.mercure_hub import HUB, publish, serving_hub, token

MARKER = re.compile(rb"vault7|payroll", re.IGNORECASE)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)], scope="module")
def hub(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_hub(request.param, request) as proc:
        yield proc


class World:
    """Two private topics (the update is published to both: a subscriber allowed one and
    selecting both receives it once), a public one; the private update between two public
    ones, each awaited by a watcher allowed everything."""

    def __init__(self, hub: PushsvcProcess) -> None:
        run = uuid.uuid4().hex[:8]
        self.payroll = f"https://example.com/vault7/payroll/{run}"
        self.ledger = f"https://example.com/vault7/ledger/{run}"
        self.news = f"https://example.com/news/{run}"
        self.selectors = [
            ("match", self.payroll),
            ("match", self.ledger),
            ("match", self.news),
            ("match_urlpattern", "https://example.com/vault7/:kind/:run"),
            ("match", "*"),
        ]
        with subscribe(hub, self.selectors, auth=token(subscribe=["*"])) as watcher:
            self.before = publish(hub, [self.news], "before", id=f"before-{run}")
            assert upto(watcher, self.before) == [self.before]
            # pushsvc's own cursor, just after `before`: a stream's first, bare `id:`.
            self.cursor = head_cursor(hub, self.selectors)
            assert Cursor.parse(self.cursor) is not None, self.cursor
            self.private = publish(
                hub, [self.payroll, self.ledger], "payroll of vault7", private="on"
            )
            self.after = publish(hub, [self.news], "after", id=f"after-{run}")
            assert upto(watcher, self.after) == [self.private, self.after]


def subscribe(
    hub: PushsvcProcess, selectors: list[tuple[str, str]], *, auth: str | None = None, **more: str
) -> SSEClient:
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    headers.update(more)
    stream = SSEClient(hub.port, f"{HUB}?{urlencode(selectors)}", headers=headers)
    assert stream.status == 200, stream.raw
    return stream


def head_cursor(hub: PushsvcProcess, selectors: list[tuple[str, str]]) -> str:
    """The bare `id:` a new stream starts with: pushsvc's cursor of the history's present."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as conn:
        conn.sendall(f"GET {HUB}?{urlencode(selectors)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while (found := re.search(rb"\nid: ?([^\r\n]+)\n", received)) is None:
            chunk = conn.recv(65536)
            assert chunk, received
            received += chunk
    return found[1].decode()


def upto(stream: SSEClient, last: str) -> list[str]:
    """The ids of the updates a stream receives up to `last` (gaps aside)."""
    got: list[str] = []
    while not got or got[-1] != last:
        message = stream.next()
        if message.event != "gap":
            got.append(message.id)
    return got


@pytest.fixture(scope="module")
def world(hub: PushsvcProcess) -> World:
    return World(hub)


NOT_ALLOWED = {
    "anonymous": None,
    "a token for other topics": token(
        subscribe=[
            "https://example.com/vault7/other",
            {"match": "https://example.com/news/:run", "match_type": "urlpattern"},
        ]
    ),
}


def _resumes(world: World) -> dict[str, dict[str, str]]:
    return {
        "live": {},
        "from an update's id": {"Last-Event-ID": world.before},
        "from the query's id": {},
        "earliest": {"Last-Event-ID": "earliest"},
        "from pushsvc's cursor": {"Last-Event-ID": world.cursor},
    }


@pytest.mark.parametrize("caller", list(NOT_ALLOWED))
def test_a_private_update_never_reaches_a_subscriber_allowed_none_of_its_topics(
    hub: PushsvcProcess, world: World, caller: str
) -> None:
    auth = NOT_ALLOWED[caller]
    streams = {}
    try:
        for how, headers in _resumes(world).items():
            selectors = world.selectors
            if how == "from the query's id":
                selectors = [*selectors, ("last_event_id", world.before)]
            streams[how] = subscribe(hub, selectors, auth=auth, **headers)
        sentinel = publish(hub, [world.news], "sentinel", id=f"s-{uuid.uuid4().hex[:8]}")
        for how, stream in streams.items():
            got = upto(stream, sentinel)
            assert world.private not in got, (caller, how, got)
            # What it may receive, it does (other tests' public updates may come between).
            if how == "live":
                assert got == [sentinel], got
            elif how == "earliest":
                assert got.index(world.before) < got.index(world.after), (how, got)
            else:
                assert got[0] == world.after, (how, got)
            received = json.dumps(stream.response_headers).encode() + bytes(stream.raw)
            assert MARKER.search(received) is None, (caller, how, received[:600])
    finally:
        for stream in streams.values():
            stream.close()


@pytest.mark.parametrize("grant", ["exact", "urlpattern"])
def test_a_subscriber_allowed_one_of_its_topics_receives_it_once_live_and_on_resume(
    hub: PushsvcProcess, world: World, grant: str
) -> None:
    allowed: list[Any] = (
        [world.ledger]
        if grant == "exact"
        else [{"match": "https://example.com/vault7/ledger/:run", "match_type": "urlpattern"}]
    )
    auth = token(subscribe=allowed)
    resumed = subscribe(hub, world.selectors, auth=auth, **{"Last-Event-ID": world.before})
    earliest = subscribe(hub, world.selectors, auth=auth, **{"Last-Event-ID": "earliest"})
    live = subscribe(hub, world.selectors, auth=auth)
    try:
        again = publish(hub, [world.payroll, world.ledger], "payroll again", private="on")
        sentinel = publish(hub, [world.news], "sentinel", id=f"s-{uuid.uuid4().hex[:8]}")
        # Once each, in order (other tests' updates may come between).
        got = upto(resumed, sentinel)
        ours = [world.private, world.after, again, sentinel]
        assert [i for i in got if i in ours] == ours, got
        got = upto(earliest, sentinel)
        assert got.count(world.private) == 1 and got.count(again) == 1, got
        assert got.index(world.private) < got.index(world.after) < got.index(again)
        assert upto(live, sentinel) == [again, sentinel]
    finally:
        for stream in (resumed, earliest, live):
            stream.close()
