"""A long-lived stream checked against per-topic sequences (bench/soak.py; pure).

The soak's publisher gives each topic's events the values 0, 1, 2, ... in the order it sends
them, and counts per topic what the server accepted. A stream that selects a set of topics
must then carry, for each of them, exactly the values 0..accepted-1, each once and in order,
under strictly increasing update ids. `TopicSequences` is such a stream's reader (a
`loadgen.subscriber.Reader`); it survives reconnections (`reconnected`), so a stream the server
ended and the subscriber resumed with `Last-Event-ID` is judged as one.

Counts, on top of `loadgen.tally.Verdict`'s (judged against the accepted counts):

* gaps — snapshots marked `"gap": true` (the server saying it could not replay);
* id_regressions — an update whose id is not above the one before it (same epoch);
* epochs — id epoch changes (the history was lost);
* ticks — updates that carry no event (window ticks; not counted as deliveries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from harness.sse_parser import EventStreamParser

from bench.loadgen.tally import Verdict
from pushsvc.core.cursor import Cursor

_MAX_VALUE = 100_000_000  # far beyond any soak; bounds the per-topic bitmaps


@dataclass(frozen=True, slots=True)
class SequenceVerdict:
    counts: Verdict
    gaps: int
    id_regressions: int
    epochs: int
    ticks: int

    @property
    def exact(self) -> bool:
        return self.counts.exact and self.gaps == self.id_regressions == self.epochs == 0

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.counts.received,
            "distinct": self.counts.distinct,
            "missing": self.counts.missing,
            "duplicates": self.counts.duplicates,
            "out_of_order": self.counts.out_of_order,
            "unexpected": self.counts.unexpected,
            "gaps": self.gaps,
            "id_regressions": self.id_regressions,
            "epochs": self.epochs,
            "ticks": self.ticks,
        }


def _sequence_number(number: object) -> int:
    """An event's value as a sequence number (the server echoes 12 as 12.0); -1 if none."""
    if isinstance(number, bool) or not isinstance(number, int | float):
        return -1
    if not math.isfinite(number) or number != int(number):
        return -1
    return int(number)


class TopicSequences:
    """One long-lived subscriber's updates, judged against `accepted` (topic → events the
    server accepted; the publisher's live dict) for the topics `wanted` selects."""

    def __init__(self, wanted: Callable[[str], bool], accepted: Mapping[str, int]) -> None:
        self.wanted = wanted
        self._accepted = accepted
        self._parser = EventStreamParser()
        self._seen: dict[str, bytearray] = {}
        self._high: dict[str, int] = {}
        self.last_id: Cursor | None = None
        self.ready = False
        self.complete = False  # a soak has no fixed end: `caught_up` says when it is drained
        self.received = self.distinct = self.duplicates = self.out_of_order = 0
        self.unexpected = self.gaps = self.id_regressions = self.epochs = self.ticks = 0

    def reconnected(self) -> None:
        """A new connection (resumed from `last_id`): its bytes start a new event stream."""
        self._parser = EventStreamParser()

    def feed(self, pieces: list[bytes], now: float) -> int:
        found = 0
        for piece in pieces:
            for message in self._parser.feed(piece):
                if message.event == "snapshot":
                    self.ready = True
                    self.gaps += bool(orjson.loads(message.data).get("gap"))
                elif message.event == "stats":
                    self._check_id(message.id)
                    found += self._record(orjson.loads(message.data))
                else:
                    self.unexpected += 1
        return found

    def _check_id(self, text: str) -> None:
        # A stream over several partitions writes its cursor (a position per partition); one
        # update moves one of them on, and none may go back.
        cursor = Cursor.parse(text)
        if cursor is None:
            self.unexpected += 1
            return
        last = self.last_id
        moved = False
        for partition, update_id in cursor.items():
            before = last.get(partition) if last is not None else None
            if before is None:
                moved = True
            elif before.epoch != update_id.epoch:
                self.epochs += 1
                moved = True
            elif (update_id.ms, update_id.seq) < (before.ms, before.seq):
                self.id_regressions += 1
            elif (update_id.ms, update_id.seq) > (before.ms, before.seq):
                moved = True
        if last is not None and not moved:
            self.id_regressions += 1
        self.last_id = cursor

    def _record(self, update: dict[str, object]) -> int:
        event = update.get("event")
        if event is None:
            self.ticks += 1
            return 0
        topic = update.get("topic")
        number = event.get("value") if isinstance(event, dict) else None
        self.received += 1
        value = _sequence_number(number)
        if not isinstance(topic, str) or not self.wanted(topic) or not 0 <= value < _MAX_VALUE:
            self.unexpected += 1
            return 1
        seen = self._seen.setdefault(topic, bytearray())
        if value >= len(seen):
            seen.extend(bytes(max(value + 1 - len(seen), len(seen))))
        if seen[value]:
            self.duplicates += 1
            return 1
        seen[value] = 1
        self.distinct += 1
        if value < self._high.get(topic, -1):
            self.out_of_order += 1
        else:
            self._high[topic] = value
        return 1

    def _counts(self) -> tuple[int, int]:
        """(accepted events of the wanted topics, distinct values seen beyond them)."""
        expected = beyond = 0
        for topic, count in self._accepted.items():
            if self.wanted(topic):
                expected += count
                beyond += sum(self._seen.get(topic, b"")[count:])
        unknown = (seen for topic, seen in self._seen.items() if topic not in self._accepted)
        beyond += sum(sum(seen) for seen in unknown)
        return expected, beyond

    def caught_up(self) -> bool:
        """Every accepted event of the wanted topics arrived (or more did)."""
        expected, beyond = self._counts()
        return self.distinct - beyond >= expected

    def verdict(self) -> Verdict:
        expected, beyond = self._counts()
        return Verdict(
            received=self.received,
            distinct=self.distinct,
            duplicates=self.duplicates,
            out_of_order=self.out_of_order,
            missing=expected - (self.distinct - beyond),
            unexpected=self.unexpected + beyond,
        )

    def judge(self) -> SequenceVerdict:
        return SequenceVerdict(self.verdict(), self.gaps, self.id_regressions, self.epochs,
                               self.ticks)  # fmt: skip
