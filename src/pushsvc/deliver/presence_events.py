"""Presence events: the streams that asked for them (`?presence=1`) get `event: presence`
with the presence of the topics they name outright, conflated, at most once a second, and only
when it changed.

One greenlet per process (`PresenceEvents.run`) reads, once a `interval_s`, the presence of
every topic such streams name (one read: on Redis, two pipelines), and gives each stream whose
topics' presence differs from what it was last given one message with all of them:

    event: presence
    data: {"topics":{"orders":{"watching":3}}}

(`"subs": [...]` beside `watching` for a topic whose subjects the stream's token may be told).
The message carries no `id:`: it is not an update, and the client's Last-Event-ID stays. A
stream that has not written the last one yet has it replaced by the newer one
(`LiveStream.send_aside`): conflated, never queued. Its first message comes at the first tick
after it is live, whatever the count (the client learns where it starts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import gevent
import gevent.event
import orjson

from pushsvc.core.presence import Presence, PresenceSource
from pushsvc.core.sse import encode_message
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

PRESENCE_EVENT = "presence"


class Aside(Protocol):
    """Where a listener's messages go: its live stream (`LiveStream.send_aside`)."""

    def send_aside(self, message: bytes, /) -> None: ...


def presence_json(presence: Presence, show_subs: bool) -> dict[str, object]:
    """A topic's presence as the API shows it: `watching`, and `subs` when they may be told."""
    shown: dict[str, object] = {"watching": presence.watching}
    if show_subs:
        shown["subs"] = list(presence.subs)
    return shown


@dataclass(eq=False, slots=True)
class Listener:
    """One stream that asked for presence events: its topics (named outright), which of them
    its caller may be told the subjects of, and what it was last given."""

    topics: frozenset[str]
    shows_subs: Callable[[str], bool]
    stream: Aside | None = None
    """Its live stream; None until it is live (its head is being written)."""
    last: dict[str, dict[str, object]] | None = field(default=None)
    """What its last message told (a change of subjects it may not see is no change)."""

    def live(self, stream: Aside) -> None:
        self.stream = stream


class PresenceEvents:
    """Every stream of this process that asked for presence events (see the module
    docstring)."""

    def __init__(self, source: PresenceSource, *, interval_s: float = 1.0) -> None:
        self.source = source
        self.interval_s = interval_s
        self._listeners: set[Listener] = set()
        self.sent = 0

    def listen(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        listener.stream = None

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.wait(self.interval_s):
            try:
                self.tick()
            except BrokerUnavailable:
                pass  # logged where it failed: the next tick tries again
            except Exception:  # the events must outlive any one failure
                log.exception("sending presence events failed")

    def tick(self) -> int:
        """Give each live listener whose topics' presence changed its message; how many were
        given one."""
        live = [listener for listener in self._listeners if listener.stream is not None]
        if not live:
            return 0
        topics: set[str] = set()
        for listener in live:
            topics.update(listener.topics)
        now = self.source.read(topics)
        given = 0
        for listener in live:
            data = {
                topic: presence_json(now[topic], listener.shows_subs(topic))
                for topic in sorted(listener.topics)
            }
            if data == listener.last:
                continue
            listener.last = data
            message = encode_message(orjson.dumps({"topics": data}), event=PRESENCE_EVENT)
            stream = listener.stream
            if stream is not None:
                stream.send_aside(message)
                given += 1
        self.sent += given
        return given
