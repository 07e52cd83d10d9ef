"""The aggregator: owns topics, applies their events to rolling windows, emits one update per event.

One logical owner per topic: static sharding (`shard=(i, N)`, by a stable hash of
the topic) spreads topics over aggregators; a standby keeps the same state and
stays silent until it holds the lease (see `lease.py`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from pushsvc.broker.base import UpdateDraft
from pushsvc.events import Event, event_json
from pushsvc.stats import STAT_KEYS, TopicWindows

log = logging.getLogger(__name__)

Publish = Callable[[list[UpdateDraft]], object]
WallClock = Callable[[], int]
"""Wall time in integer microseconds since the epoch."""


def owns(topic: str, shard: tuple[int, int]) -> bool:
    """Whether shard `(i, N)` owns `topic`; crc32 is stable across processes and hosts."""
    index, count = shard
    return count == 1 or zlib.crc32(topic.encode()) % count == index


@dataclass(slots=True)
class _Topic:
    windows: TopicWindows
    # Event clock and wall clock at the last event: ticks advance the event clock by
    # the wall time elapsed since then.
    event_clock_us: int = 0
    wall_at_event_us: int = 0


class Aggregator:
    """Rolling-window statistics per topic. Not greenlet-safe by itself: the broker
    delivers batches one at a time, and ticks run in the same greenlet or between batches."""

    def __init__(
        self,
        *,
        windows_us: Sequence[int],
        labels: Sequence[str],
        stats: Sequence[str] = STAT_KEYS,
        allowed_lateness_us: int,
        publish: Publish,
        wall_clock: WallClock,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self._widths = tuple(windows_us)
        self._labels = tuple(labels)
        self._stats = tuple(stats)
        self._lateness = allowed_lateness_us
        self._publish = publish
        self._wall_clock = wall_clock
        self._shard = shard
        self._topics: dict[str, _Topic] = {}
        self.active = True
        """When False (a standby), state is kept up to date but nothing is published."""
        self.late_dropped = 0
        """Events that were too late when they reached the aggregator (a race between producers)."""

    def handle(self, topic: str, events: list[Event]) -> None:
        """Broker handler: apply a batch in order, publish one update per event."""
        if not owns(topic, self._shard):
            return
        state = self._topics.get(topic)
        if state is None:
            windows = TopicWindows(self._widths, self._labels, stats=self._stats)
            state = self._topics[topic] = _Topic(windows)
        windows = state.windows
        accepted: list[Event] = []
        clocks: list[int] = []
        clock = windows.clock_us
        for event in events:
            if clock is not None and event.ts_us < clock - self._lateness:
                # The web tier checked against the clock it knew; another producer moved it since.
                self.late_dropped += 1
                log.warning(
                    "dropped late event on %s (ts_us=%d, clock_us=%d)", topic, event.ts_us, clock
                )
                continue
            if clock is None or event.ts_us > clock:
                clock = event.ts_us
            accepted.append(event)
            clocks.append(clock)
        if accepted:
            summaries = windows.insert_many([(e.ts_us, e.value) for e in accepted])
            prefix = _topic_prefix(topic)
            drafts = [
                UpdateDraft(topic, at, prefix + _body(at, "event", event_json(e), summary))
                for e, at, summary in zip(accepted, clocks, summaries, strict=True)
            ]
            state.event_clock_us = clocks[-1]
            state.wall_at_event_us = self._wall_clock()
            if self.active:
                self._publish(drafts)

    def tick(self) -> int:
        """Slide idle topics' windows with wall time; publish an update where content changed.

        Returns the number of updates published.
        """
        now = self._wall_clock()
        drafts: list[UpdateDraft] = []
        for topic, state in self._topics.items():
            clock = state.event_clock_us + max(0, now - state.wall_at_event_us)
            if state.windows.advance(clock):
                body = _body(clock, "tick", None, state.windows.summary())
                drafts.append(UpdateDraft(topic, clock, _topic_prefix(topic) + body))
        if drafts and self.active:
            self._publish(drafts)
        return len(drafts) if self.active else 0

    def topics(self) -> list[str]:
        return list(self._topics)


def _topic_prefix(topic: str) -> bytes:
    return b'{"topic":' + orjson.dumps(topic) + b","


def _body(clock_us: int, reason: str, event: dict[str, object] | None, windows: object) -> bytes:
    """The update's JSON after `{"topic":…,` (encoded once per batch)."""
    rest = orjson.dumps(
        {"ts": clock_us / 1_000_000, "reason": reason, "event": event, "windows": windows}
    )
    return rest[1:]
