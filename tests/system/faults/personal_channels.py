"""A channel per user under faults: what test_personal_channels.py shares.

`Inboxes` reads a thousand personal streams (`/topics/u{i}/messages`) from one asyncio loop in
one thread, as many browsers' EventSources would: each stream keeps the last `id:` it saw and,
when it ends, reconnects with it as `Last-Event-ID` (to the next web process when its own is
gone), from one of 250 loopback addresses (a web process takes 256 streams an address). One
loop and not a thread per stream: a thousand threads would spend the test's two
cores switching between them, and the loop is the shape a real multiplexing client has.

`ChannelProducer` publishes numbered messages (message n's data is `{"u": user, "n": n}`) in a
fixed plan of posts: cross-topic batches (`POST /events`, one item or two for every user) and
single POSTs to one user's topic, each with an `Idempotency-Key`, sent again with it to the
next web process until one answers. Posts go one after the other, so a user's messages are
published in the order of the plan, which is what its inbox must hold.

`check_inboxes` holds each inbox to the promise: exactly its own user's acknowledged messages,
each once, in publish order, with no `event: gap`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.sse_parser import EventStreamParser

from support.promise import promise_kept

Ports = Callable[[], list[int]]


def user_topic(user: int) -> str:
    return f"u{user}"


@dataclass
class Inbox:
    """What one user's stream received: (id, data) of each message in order; the count of
    messages received before each `event: gap`; how many times it connected."""

    user: int
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    connects: int = 0
    last_id: str = ""


class Inboxes(threading.Thread):
    """`users` personal message streams on the web processes `ports()` names, user i's on
    `ports()[i % len]` first. `connected` is set once every stream has had its response head
    (a messages stream is subscribed before its head is sent)."""

    def __init__(self, ports: Ports, users: int) -> None:
        super().__init__(daemon=True, name="inboxes")
        self.ports = ports
        self.inboxes = [Inbox(user) for user in range(users)]
        self.connected = threading.Event()
        self._heads = 0
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._all())
        self._loop.close()

    async def _all(self) -> None:
        self._stopping = asyncio.Event()
        tasks = [asyncio.create_task(self._follow(inbox)) for inbox in self.inboxes]
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, inbox: Inbox) -> None:
        attempt = inbox.user
        while True:
            ports = self.ports()
            if ports:
                with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
                    await self._stream(ports[attempt % len(ports)], inbox)
            attempt += 1
            await asyncio.sleep(0.1)  # the `retry:` the servers send

    async def _stream(self, port: int, inbox: Inbox) -> None:
        source = (f"127.0.0.{2 + inbox.user % 250}", 0)  # users come from many addresses
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=source)
        try:
            resume = f"Last-Event-ID: {inbox.last_id}\r\n" if inbox.last_id else ""
            writer.write(
                f"GET /topics/{user_topic(inbox.user)}/messages HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n{resume}\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                return
            assert b"transfer-encoding: chunked" in head.lower(), head
            inbox.connects += 1
            if inbox.connects == 1:
                self._heads += 1
                if self._heads == len(self.inboxes):
                    self.connected.set()
            parser = EventStreamParser()
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    return
                chunk = (await reader.readexactly(size + 2))[:-2]
                for message in parser.feed(chunk):
                    if message.event == "gap":
                        inbox.gaps.append(len(inbox.messages))
                    elif message.data:
                        inbox.messages.append((message.id, json.loads(message.data)))
                if parser.last_event_id:
                    inbox.last_id = parser.last_event_id
        finally:
            writer.close()

    def received(self) -> int:
        return sum(len(inbox.messages) for inbox in self.inboxes)

    def stop(self) -> None:
        stopping = self._stopping
        if stopping is not None:
            self._loop.call_soon_threadsafe(stopping.set)
        self.join(10)


@dataclass(frozen=True)
class Post:
    """One request of the plan: `items` (user, event without its data's number) to publish,
    as one cross-topic batch (`single` False) or as a one-topic POST (one user's items)."""

    items: tuple[tuple[int, dict[str, Any]], ...]
    single: bool = False


@dataclass
class Answered:
    """The producer's record: the numbers acknowledged for each user, in publish order; the
    totals of `late` the batches answered; each attempt's status (0: no answer)."""

    numbers: dict[int, list[int]] = field(default_factory=dict)
    late: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class ChannelProducer(threading.Thread):
    """Sends `plan`'s posts in order, each acknowledged (202) before the next; `before(k)` is
    called in this thread before post k, `done[k]` set once post k is acknowledged."""

    def __init__(
        self, ports: Ports, plan: Sequence[Post], before: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(daemon=True, name="channel-producer")
        self.ports = ports
        self.plan = plan
        self.before = before or (lambda k: None)
        self.done = [threading.Event() for _ in plan]
        self.answered = Answered()
        self.failure: BaseException | None = None
        self.stopping = threading.Event()
        self._turn = 0

    def run(self) -> None:
        n = 0
        try:
            for k, post in enumerate(self.plan):
                self.before(k)
                items = []
                for user, event in post.items:
                    items.append((user, {**event, "data": {"u": user, "n": n}}, n))
                    n += 1
                self._deliver(post, items)
                for user, _, number in items:
                    self.answered.numbers.setdefault(user, []).append(number)
                self.done[k].set()
        except BaseException as failed:  # the test reads it: a thread cannot raise to it
            self.failure = failed

    def _deliver(self, post: Post, items: list[tuple[int, dict[str, Any], int]]) -> None:
        if post.single:
            (user,) = {user for user, _, _ in items}
            path = f"/topics/{user_topic(user)}/events"
            body = json.dumps([event for _, event, _ in items])
        else:
            path = "/events"
            body = json.dumps([{"topic": user_topic(u), **event} for u, event, _ in items])
        key = uuid.uuid4().hex
        deadline = time.monotonic() + 30
        while not self.stopping.is_set():
            ports = self.ports()
            self._turn += 1
            status, answer = self._send(ports[self._turn % len(ports)], path, body, key)
            self.answered.statuses[status] = self.answered.statuses.get(status, 0) + 1
            if status == 202:
                self.answered.late += int(answer.get("late", 0))
                return
            assert status in (0, 503), (status, answer)
            assert time.monotonic() < deadline, f"no 202 for {path} in 30 s"
            time.sleep(0.05)

    @staticmethod
    def _send(port: int, path: str, body: str, key: str) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(
                "POST", path, body, {"Content-Type": "application/json", "Idempotency-Key": key}
            )
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
        except (OSError, http.client.HTTPException):
            return 0, {}
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def all_delivered(inboxes: Inboxes, answered: Answered) -> bool:
    return all(
        len(inbox.messages) >= len(answered.numbers.get(inbox.user, []))
        for inbox in inboxes.inboxes
    )


def wait_delivered(inboxes: Inboxes, answered: Answered, timeout: float) -> bool:
    """Until every inbox has as many messages as were acknowledged to its user, or the time is
    up (then `check_inboxes` says what is missing: a loss is a broken promise, not a timeout).
    Whether they all had."""
    deadline = time.monotonic() + timeout
    while not all_delivered(inboxes, answered):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def check_inboxes(inboxes: Inboxes, answered: Answered) -> dict[str, object]:
    """Per user: its messages, each once, in publish order, none of another user's, no gap."""
    with promise_kept():
        for inbox in inboxes.inboxes:
            name = user_topic(inbox.user)
            ids = [i for i, _ in inbox.messages]
            assert len(set(ids)) == len(ids), f"{name}: an id arrived twice"
            strangers = [d for _, d in inbox.messages if d["u"] != inbox.user]
            assert not strangers, f"{name}: another user's messages {strangers[:4]}"
            got = [d["n"] for _, d in inbox.messages]
            want = answered.numbers.get(inbox.user, [])
            assert got == want, f"{name}: got {got}, published {want}"
            assert not inbox.gaps, f"{name}: a gap after {inbox.gaps}"
    return {
        "messages_checked": inboxes.received(),
        "reconnects": sum(inbox.connects - 1 for inbox in inboxes.inboxes),
        "statuses": dict(sorted(answered.statuses.items())),
        "late_answered": answered.late,
    }
