"""Messages under faults: what the message scenarios share (test_message_promise.py).

A `MessageWatcher` reads a messages stream (`/topics/{t}/messages`, `/messages?topic=…`) as a
browser's EventSource does: every `id:` it gets (the bare head's too) is its `Last-Event-ID`,
and when the stream ends it reconnects, to the next web process when its own is gone, with it.
Some drop their stream themselves at given counts and resume, as a tab that lost its network.
A `MessageProducer` posts bursts of numbered messages (message n's data is `{"n": n, ...}`) to
the web processes in turn and remembers which were acknowledged. `check_messages` holds what
each watcher received to the promise: every acknowledged message once, in order, none that was
not logged; where the history could not cover a resume, an `event: gap`, and every message
after it once, in order.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.sse_parser import EventStreamParser

from support.promise import promise_kept

PAD = "m" * 512
"""Each message's data carries this beside its number: messages of some size, in runs."""


@dataclass
class MessagesSeen:
    """What one watcher received: (id, n) of each message, in order, and the gaps: the count
    of messages received before each `event: gap`."""

    messages: list[tuple[str, int]] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    connects: int = 0


class MessageWatcher(threading.Thread):
    """One EventSource-like reader of `path` on the processes `ports()` names."""

    def __init__(
        self, ports: Callable[[], list[int]], path: str, index: int, *, drops: Sequence[int] = ()
    ) -> None:
        super().__init__(daemon=True, name=f"message-watcher-{index}")
        self.ports = ports
        self.path = path
        self.index = index
        self.drops = frozenset(drops)
        self.seen = MessagesSeen()
        self.last_id: str | None = None
        self.connected = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        attempt = self.index
        while not self.stopping.is_set():
            ports = self.ports()
            if ports:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    self._stream(ports[attempt % len(ports)])
            attempt += 1
            self.stopping.wait(0.1)  # the `retry:` the servers send

    def _stream(self, port: int) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        try:
            conn.request("GET", self.path, headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                return
            self.seen.connects += 1
            self.connected.set()  # primed before its head: what is posted now is its
            parser = EventStreamParser()
            while not self.stopping.is_set():
                chunk = response.read1(65536)
                if not chunk:
                    return
                for message in parser.feed(chunk):
                    if message.id:
                        self.last_id = message.id
                    if message.event == "gap":
                        self.seen.gaps.append(len(self.seen.messages))
                    elif message.data:
                        self.seen.messages.append((message.id, json.loads(message.data)["n"]))
                        if len(self.seen.messages) in self.drops:
                            return  # dropped: resume with this id
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()


class MessageProducer(threading.Thread):
    """Posts bursts of `burst` messages (`rate` bursts a second) to `topic`, every third message
    with a value too, to the processes `ports()` names in turn."""

    def __init__(
        self, ports: Callable[[], list[int]], topic: str, *, burst: int = 20, rate: float = 10
    ) -> None:
        super().__init__(daemon=True, name="message-producer")
        self.ports = ports
        self.topic = topic
        self.burst = burst
        self.interval = 1.0 / rate
        self.acked: list[int] = []
        self.maybe: list[int] = []
        """Posted with no answer (the process went away): logged or not."""
        self.statuses: dict[int, int] = {}
        self.stopping = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self._next = 0

    def run(self) -> None:
        turn = 0
        while not self.stopping.is_set():
            if not self._running.is_set():
                self._idle.set()
                self._running.wait(0.05)
                continue
            self._idle.clear()
            ports = self.ports()
            if ports:
                self._post(ports[turn % len(ports)])
                turn += 1
            self.stopping.wait(self.interval)

    def pause(self) -> None:
        """Return once no POST is in flight, and none will be until `resume`."""
        self._idle.clear()
        self._running.clear()
        assert self._idle.wait(10), "the producer did not pause"

    def resume(self) -> None:
        self._running.set()

    def _post(self, port: int) -> None:
        numbers = list(range(self._next, self._next + self.burst))
        self._next += self.burst
        batch = [
            {"type": f"t{n % 3}", "data": {"n": n, "pad": PAD}, **({"value": n} if n % 3 else {})}
            for n in numbers
        ]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(
                "POST",
                f"/topics/{self.topic}/events",
                json.dumps(batch),
                {"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            status = response.status
            response.read()
        except (OSError, http.client.HTTPException):
            status = 0
        finally:
            conn.close()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 202:
            self.acked += numbers
        elif status == 0:
            self.maybe += numbers

    def await_acked(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"{count} messages never acknowledged"
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self._running.set()
        self.join(10)


def caught_up(
    watchers: Sequence[MessageWatcher], producer: MessageProducer, timeout: float = 40
) -> bool:
    """Wait until every watcher has the last acknowledged message (False if not in time: the
    check then says what is missing)."""
    last = producer.acked[-1]
    deadline = time.monotonic() + timeout
    while not all(w.seen.messages and w.seen.messages[-1][1] >= last for w in watchers):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def settle(
    watchers: Sequence[MessageWatcher], producer: MessageProducer, timeout: float = 40
) -> None:
    """Stop the producer, let every watcher receive what was acknowledged, stop them."""
    producer.stop()
    caught_up(watchers, producer, timeout)
    for watcher in watchers:
        watcher.stop()


def check_messages(
    watchers: Sequence[MessageWatcher], producer: MessageProducer, *, gap_allowed: bool = False
) -> dict[str, object]:
    """The delivery promise for messages, per watcher (each subscribed before the first POST):
    every acknowledged message once and in order; a message posted with no answer at most once,
    in its place; between two gaps (and before the first, after the last), no message missing.
    Figures for the report."""
    assert producer.acked, "nothing was acknowledged"
    assert set(producer.statuses) <= {202, 503, 0}, producer.statuses
    seen = {n for w in watchers for _, n in w.seen.messages}
    expected = sorted(set(producer.acked) | (set(producer.maybe) & seen))
    place = {n: i for i, n in enumerate(expected)}
    with promise_kept():
        for watcher in watchers:
            name = f"{watcher.name} ({watcher.path})"
            ids = [i for i, _ in watcher.seen.messages]
            numbers = [n for _, n in watcher.seen.messages]
            assert len(set(ids)) == len(ids), f"{name}: an id arrived twice"
            assert numbers == sorted(set(numbers)), f"{name}: doubled or out of order"
            assert set(numbers) <= set(expected), f"{name}: a message that was not logged"
            assert gap_allowed or not watcher.seen.gaps, f"{name}: a gap {watcher.seen.gaps}"
            cuts = {0, *watcher.seen.gaps, len(numbers)}
            bounds = sorted(cuts)
            for start, end in itertools.pairwise(bounds):
                run = [place[n] for n in numbers[start:end]]
                missing = [expected[i] for a, b in itertools.pairwise(run) for i in range(a + 1, b)]
                assert not missing, f"{name}: {len(missing)} missing without a gap: {missing[:8]}"
            assert numbers and numbers[-1] == expected[-1], f"{name}: not the last message"
            if not watcher.seen.gaps:
                assert numbers[0] == expected[0], f"{name}: the first messages are missing"
    return {
        "acknowledged": len(producer.acked),
        "posted without an answer": len(producer.maybe),
        "statuses": dict(sorted(producer.statuses.items())),
        "messages_checked": sum(len(w.seen.messages) for w in watchers),
        "reconnects": sum(w.seen.connects - 1 for w in watchers),
        "gaps": sum(len(w.seen.gaps) for w in watchers),
    }
