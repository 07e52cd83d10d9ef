"""A Mercure resume lookup by update id shares its process: it reads the retained history a
page at a time (`pushsvc.deliver.mercure_search`), and a legitimate publisher and subscriber
are served between its pages. Against `pushsvc serve --mercure` on a real redis-server whose
history is filled through `POST /.well-known/mercure` (16 partitions, the hub's updates all
in one, as every hub's are: read whole, that partition would be one step).

While a lookup of an id the history does not keep (searched to the end of the partition)
is under way, the publisher posts one update at a time and its subscriber receives each:
rounds go on until the lookup's answer has arrived, and several must have been completed
before it did (read in one step, the history held the process until the search was over,
and a round came through at best before it started). Redis's own order of commands
(`MONITOR`) shows the rest: the lookup had read a page before the first round began, and the
publisher's commands ran between two of its pages of the partition that holds the history.
Then each answer (`Mercure-Last-Event-ID`, the first update sent and the id written for it) is
the one the lookup gave when it read the history at once (`support.mercure_hub.
lookup_at_once`, on the same Redis), for an id at the start, in the middle and at the end of
the history, and for one it does not keep.
"""

from __future__ import annotations

import select
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import redis
from harness.live import PushsvcProcess, SSEClient
from harness.redis_server import RedisServer

from pushsvc.broker.redis import RedisBroker
from pushsvc.core.partitions import DEFAULT_PARTITIONS, HUB_PREFIX, partition_of
from pushsvc.deliver.mercure_search import KEPT, PAGE
from pushsvc.deliver.mercure_updates import topic_name
from support.mercure_hub import HUB, SECRET, fill_history, iri, lookup_at_once, token
from support.redis_keys import server_keys

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

HISTORY = 6_000
"""Updates kept, all in one partition of the 16: some 50 pages of `PAGE`."""
ROUNDS = 3
"""Rounds of the publisher and its subscriber that must come through during one lookup."""


class RedisCommands(threading.Thread):
    """The commands Redis runs, in its order (`MONITOR`), of two kinds: a read of a
    partition's history (the lookup's: nothing else of the process reads a history once the
    subscriber's stream is primed), by the history's key, and `legit`, a command naming the
    publisher's topic."""

    def __init__(self, server: RedisServer, histories: set[str], topic: str) -> None:
        super().__init__(daemon=True, name="redis-monitor")
        self.url = server.url
        self.histories = histories
        self.topic = topic
        self.seen: list[str] = []
        self.changed = threading.Condition()
        self._end = f"end-of-monitor-{uuid.uuid4().hex}"
        self._listening = threading.Event()

    def __enter__(self) -> RedisCommands:
        self.start()
        assert self._listening.wait(10), "MONITOR did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        client = redis.Redis.from_url(self.url)
        client.echo(self._end)
        client.close()
        self.join(10)

    def run(self) -> None:
        client = redis.Redis.from_url(self.url)
        with client.monitor() as monitor:
            self._listening.set()
            for command in monitor.listen():
                words = str(command["command"]).split(" ")
                if words[:2] == ["ECHO", self._end]:
                    break
                kind = None
                if words[0] == "XRANGE" and words[1] in self.histories:
                    kind = words[1]
                elif self.topic in command["command"]:
                    kind = "legit"
                if kind is not None:
                    with self.changed:
                        self.seen.append(kind)
                        self.changed.notify_all()
        client.close()

    def pages(self) -> int:
        with self.changed:
            return sum(1 for kind in self.seen if kind != "legit")

    def wait_pages(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.pages() >= count, 30), self.seen

    def legit_between_pages(self, history: str) -> int:
        """The publisher's commands Redis ran after the lookup's first page of `history` and
        before its last."""
        with self.changed:
            seen = list(self.seen)
        first, last = seen.index(history), len(seen) - 1 - seen[::-1].index(history)
        return seen[first:last].count("legit")


def lookup_request(update_id: str, selectors: list[tuple[str, str]]) -> bytes:
    return (
        f"GET {HUB}?{urlencode(selectors)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Last-Event-ID: {update_id}\r\n\r\n"
    ).encode()


def answered(conn: socket.socket) -> bool:
    """Whether the lookup's answer has begun to arrive (without waiting for it)."""
    readable, _, _ = select.select([conn], [], [], 0)
    return bool(readable)


def head_of(conn: socket.socket) -> dict[str, str]:
    """The status line and fields of the answer on `conn`, lower-cased ("status": the code)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        assert chunk, f"the connection closed: {head!r}"
        head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return {"status": lines[0].split()[1], **fields}


def resumed(port: int, update_id: str) -> tuple[str, str, str | None, str | None]:
    """A stream of every topic resumed from `update_id`: its `Mercure-Last-Event-ID`, its
    first message's type and id (a gap's: none) and the block written after it, as far as it
    came (the hub's updates being one partition's, no cursor block follows an update: the
    update's own id is where an EventSource resumes)."""
    with SSEClient(port, f"{HUB}?match=*", headers={"Last-Event-ID": update_id}) as stream:
        assert stream.status == 200, stream.raw
        header = stream.response_headers["mercure-last-event-id"]
        first = stream.next()
        if first.event == "gap":
            return header, "gap", None, None
        blocks = bytes(stream.raw).decode().split("\n\n")
        at = next(n for n, b in enumerate(blocks) if b.startswith(f"id: {first.id}\n"))
        return header, first.event, first.id, "".join(blocks[at + 1 : at + 2])


def of_one_partition(count: int) -> list[str]:
    """`count` topic IRIs: all kept in the hub's one partition (`HUB_PARTITION`), so that no
    read of a whole partition is a small part of the history: only pages are."""
    found = [f"https://example.com/history/{n}" for n in range(count)]
    assert {partition_of(topic_name(i), DEFAULT_PARTITIONS) for i in found} == {HUB_PARTITION}
    return found


HUB_PARTITION = partition_of(HUB_PREFIX, DEFAULT_PARTITIONS)
"""Where every Mercure update is kept (`pushsvc.core.partitions`)."""


@contextmanager
def hub_on(server: RedisServer, prefix: str) -> Iterator[PushsvcProcess]:
    args = ("--mercure", "anonymous", "--tick", "0", "--redis-url", server.url)
    proc = PushsvcProcess("serve", *args, "--prefix", prefix, env={"PUSHSVC_JWT_KEY": SECRET})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_a_publisher_and_its_subscriber_are_served_between_the_pages_of_a_lookup(
    redis_server: RedisServer,
) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    keys = server_keys(prefix)
    histories = {part.history for part in keys}
    with hub_on(redis_server, prefix) as hub:
        ids = fill_history(hub.port, HISTORY, topics=of_one_partition(16))
        legit = iri("legit")
        publisher = httpx.Client(base_url=f"http://127.0.0.1:{hub.port}", timeout=30)
        form = {"Authorization": f"Bearer {token(publish=['*'])}"}
        stream = SSEClient(hub.port, f"{HUB}?{urlencode({'match': legit})}", timeout=30)
        rounds = 0
        try:
            assert stream.status == 200
            commands = RedisCommands(redis_server, histories, topic_name(legit))
            with commands, socket.create_connection(("127.0.0.1", hub.port), timeout=60) as lookup:
                lookup.sendall(lookup_request(f"urn:uuid:{uuid.uuid4()}", [("match", legit)]))
                commands.wait_pages(1)  # the lookup is reading
                while not answered(lookup):
                    answer = publisher.post(
                        HUB, data={"topic": legit, "data": f"round {rounds}"}, headers=form
                    )
                    assert answer.status_code == 200, answer.text
                    assert stream.next().id == answer.text
                    rounds += 1
                head = head_of(lookup)
                pages = commands.pages()
                between = commands.legit_between_pages(keys.partition(HUB_PARTITION).history)
        finally:
            stream.close()
            publisher.close()
        print(f"\nlookup of {pages} pages: {rounds} rounds served, {between} commands between")
        assert head["status"] == "200" and head["mercure-last-event-id"] == "earliest", head
        # Served while the lookup was under way, and while it read the history's partition,
        # between two of its pages.
        assert rounds >= ROUNDS, rounds
        assert between, commands.seen
        assert pages >= HISTORY // PAGE, pages
        # The answers the lookup gave reading the history at once, on the same Redis.
        reference = RedisBroker(redis_server.url, prefix=prefix)
        try:
            asked = [ids[0], ids[len(ids) // 2], ids[-1], f"urn:uuid:{uuid.uuid4()}"]
            for update_id, expected in zip(asked, lookup_at_once(reference, asked), strict=True):
                header, event, first, cursor = resumed(hub.port, update_id)
                assert header == expected.answer, (update_id, header)
                if expected.after is None:
                    assert event == "gap", (update_id, event)
                    continue
                # What the reference's cursor replays first to a Mercure subscriber, and the
                # cursor past it: the first update, past the series points the history also
                # keeps (a bucket of the filled topics that closed meanwhile).
                replayed = reference.replay(expected.after, KEPT).updates
                update = next(u for u in replayed if u.is_update)
                assert first == orjson.loads(update.data)["event"]["data"]["id"], update_id
                assert not (cursor.startswith("id: ") and "\n" not in cursor), (update_id, cursor)
        finally:
            reference.close()
