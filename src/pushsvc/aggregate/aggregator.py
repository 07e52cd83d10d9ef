"""The aggregator: rolling windows per topic, one update draft per event.

A deterministic state machine over what the event log holds: batches of events and rounds
of idle ticks. Applying the same entries in the same order gives the same windows and the
same drafts, which is what lets a standby or a restarted aggregator continue exactly where
another stopped (`pushsvc.aggregate.shard_runner`). Lateness is not judged here: every event that
reaches the aggregator was accepted by the broker (`Broker.append_events`), and one that
falls before every window still yields its update.

Forgetting idle topics (`--topic-ttl`) follows the same pattern as ticks: the aggregator
proposes (`idle_topics`), the broker decides against what it logged meanwhile, and every
aggregator drops what was decided (`forget`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pushsvc.core.updates import UpdateDraft, draft
from pushsvc.ingest import Event, event_json
from pushsvc.stats import STAT_KEYS, TopicWindows, WindowSpec

WallClock = Callable[[], int]
"""Wall time in integer microseconds since the epoch."""


def sweep_interval_s(topic_ttl_us: int) -> float:
    """How often idle topics are looked for: a tenth of the TTL, at least once a minute, so a
    topic is forgotten within 1.1 TTL (60 s more for TTLs over ten minutes)."""
    return min(topic_ttl_us / 10, 60_000_000) / 1_000_000


@dataclass(slots=True)
class _Topic:
    windows: TopicWindows
    # Event clock and wall clock at the last event: idle ticks move the clock by the wall
    # time elapsed since then. Not part of the replicated state: only the active aggregator
    # proposes ticks, and the log records the clocks it proposed.
    event_clock_us: int = 0
    wall_at_event_us: int = 0


class Aggregator:
    """Rolling-window statistics per topic. Not greenlet-safe: one driver calls it."""

    def __init__(
        self,
        *,
        windows_us: Sequence[int],
        labels: Sequence[str],
        stats: Sequence[str] = STAT_KEYS,
        wall_clock: WallClock,
    ) -> None:
        self._spec = WindowSpec(windows_us, labels, stats)
        self._wall_clock = wall_clock
        self._topics: dict[str, _Topic] = {}

    @property
    def widest_us(self) -> int:
        return self._spec.widest_us

    def _topic(self, topic: str) -> _Topic:
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(self._spec.new())
        return state

    def apply_events(self, topic: str, events: Sequence[Event]) -> list[UpdateDraft]:
        """Apply a batch in order; one draft per event, with the statistics right after it."""
        if not events:
            return []
        state = self._topic(topic)
        windows = state.windows
        clock = windows.clock_us
        clocks: list[int] = []
        for event in events:
            if clock is None or event.ts_us > clock:
                clock = event.ts_us
            clocks.append(clock)
        summaries = windows.insert_many([(e.ts_us, e.value) for e in events])
        state.event_clock_us = clocks[-1]
        state.wall_at_event_us = self._wall_clock()
        return [
            draft(topic, at, "event", event_json(e), summary)
            for e, at, summary in zip(events, clocks, summaries, strict=True)
        ]

    def due_ticks(self) -> dict[str, int]:
        """The clocks an idle tick would move topics to now: each topic's last event clock
        plus the wall time since it arrived, where that is ahead of the topic's clock."""
        now = self._wall_clock()
        due = {}
        for topic, state in self._topics.items():
            current = state.windows.clock_us
            if current is None or not len(state.windows):
                continue  # nothing held: nothing to slide
            clock = state.event_clock_us + max(0, now - state.wall_at_event_us)
            if clock > current:
                due[topic] = clock
        return due

    def apply_ticks(self, clocks: Mapping[str, int]) -> list[UpdateDraft]:
        """Move each topic's clock forward; a draft (reason `tick`) where a window changed."""
        drafts = []
        for topic, clock in clocks.items():
            state = self._topics.get(topic)
            if state is not None and state.windows.advance(clock):
                drafts.append(draft(topic, clock, "tick", None, state.windows.summary()))
        return drafts

    def tick(self) -> list[UpdateDraft]:
        """Apply the ticks due now (one process: nothing to log first)."""
        return self.apply_ticks(self.due_ticks())

    def restore_clock(self, topic: str, clock_us: int) -> None:
        """Rebuilding: after the logged events, move the topic's clock to where it stood
        (its latest update's), without drafts. A topic none of whose events is left in the
        log (every one had left every window) comes back empty at that clock, as ticks had
        left it."""
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(self._spec.new())
            state.windows.start_at(clock_us)
            state.wall_at_event_us = self._wall_clock()
        else:
            state.windows.advance(clock_us)
        state.event_clock_us = max(state.event_clock_us, clock_us)

    def idle_topics(self, ttl_us: int, *, ticking: bool) -> dict[str, int]:
        """The topics to forget now, with their clocks: no event applied for `ttl_us` of wall
        time, and every window empty. Without idle ticks (`ticking` False) nothing slides
        the windows, so: empty at the clock an idle tick would have moved the topic to."""
        now = self._wall_clock()
        widest = self._spec.widest_us
        idle = {}
        for topic, state in self._topics.items():
            clock = state.windows.clock_us
            idle_us = now - state.wall_at_event_us
            if clock is None or idle_us < ttl_us:
                continue
            if not len(state.windows) or (
                not ticking and clock <= state.event_clock_us + idle_us - widest
            ):
                idle[topic] = clock
        return idle

    def forget(self, topics: Sequence[str]) -> None:
        """Drop these topics' windows: the next event of one starts it afresh."""
        for topic in topics:
            self._topics.pop(topic, None)

    def clock(self, topic: str) -> int | None:
        state = self._topics.get(topic)
        return None if state is None else state.windows.clock_us

    def topics(self) -> list[str]:
        return list(self._topics)
