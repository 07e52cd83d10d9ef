"""What a subscriber does per message: the ways the load generator counts.

* `deliveries` (bench/fanout.py, "count"): every message is parsed (`harness.sse_parser`) and
  decoded for the server's kind (loadgen/kinds.py, with orjson); its value is tallied (`Tally`:
  order, duplicates) and its publish-to-receive latency recorded. About 6 µs of CPU per delivery.
* `json` (bench/fanout.py, "json"): the same, but each update's data is parsed as a browser
  does, the whole document into objects with the stdlib parser, every statistic read
  (`kinds.browser_loads`).
* `ids` (bench/e2e.py, pushsvc only): update frames are found by one regex over each whole
  read (`IdCounter`), well under a microsecond per delivery; after the drain every stream's
  ids are judged, and compared across streams. The first `references` subscribers also read
  every update's event value, which ties the ids to the events that were published. On a
  messages stream (`messages`), the same of its messages, a stream live from its first bytes.

A mode makes each subscriber's reader and adds its own figures to the result.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np
import orjson
from harness.sse_parser import EventStreamParser

from bench.common import percentiles
from bench.loadgen.idcount import IdCounter, id_keys, judge_ids, judge_values
from bench.loadgen.kinds import READY, Kind, Loads, browser_loads
from bench.loadgen.subscriber import Reader
from bench.loadgen.tally import Tally, Verdict, totals

_SNAPSHOT = b"event: snapshot\n"


class Deliveries:
    """Decodes every delivery (value, sent time), tallies it and records its latency."""

    def __init__(
        self, kind: Kind, expected: int, latencies: array[float], loads: Loads = orjson.loads
    ) -> None:
        self._kind = kind
        self._loads = loads
        self._latencies = latencies
        self._parser = EventStreamParser()
        self.tally = Tally(expected)
        self.ready = not kind.ready_on_snapshot
        self.complete = False

    def feed(self, pieces: list[bytes], now: float) -> int:
        found = 0
        for message in [m for piece in pieces for m in self._parser.feed(piece)]:
            decoded = self._kind.decode(message, self._loads)
            if decoded is None:
                continue
            if decoded == READY:
                self.ready = True
                continue
            value, sent = decoded  # type: ignore[misc]
            self._latencies.append(now - sent)
            if self.tally.record(value):  # the last one missing
                self.complete = True
            found += 1
        return found

    def verdict(self) -> Verdict:
        return self.tally.verdict()


class UpdateIds:
    """Counts update frames by their ids (and, with `values`, reads their event values)."""

    def __init__(self, expected: int, *, values: bool, messages: bool = False) -> None:
        self.counter = IdCounter(values=values, messages=messages)
        self._expected = expected
        self._before_snapshot = b""
        self._messages = messages
        self.ready = False
        self.complete = False

    def feed(self, pieces: list[bytes], now: float) -> int:
        found = 0
        for piece in pieces:
            if self._messages:  # primed before its head: live from its first bytes
                self.ready = True
            if not self.ready:
                self._before_snapshot += piece
                if _SNAPSHOT not in self._before_snapshot:
                    continue
                piece, self._before_snapshot = self._before_snapshot, b""
                self.ready = True
            found += self.counter.feed(piece)
        self.complete = self.counter.count >= self._expected
        return found

    def verdict(self) -> Verdict:
        return judge_ids(self.counter.ids(), self._expected)


class DeliveriesMode:
    """`deliveries`, or with `browser` set, `json` (see the module docstring)."""

    def __init__(self, kind: Kind, events: int, *, browser: bool = False) -> None:
        self.kind, self.events = kind, events
        self.name = "json" if browser else "deliveries"
        self._loads: Loads = browser_loads if browser else orjson.loads
        self.latencies: array[float] = array("d")

    def reader(self, i: int) -> Reader:
        return Deliveries(self.kind, self.events, self.latencies, self._loads)

    def report(self, readers: Sequence[Reader]) -> dict[str, object]:
        """Publish-to-receive latency percentiles (nearest rank), ms."""
        qs = percentiles(self.latencies, (0.50, 0.90, 0.99, 1.0))
        ms = [None if q is None else round(q * 1000, 3) for q in qs]
        return {"latency_ms": dict(zip(("p50", "p90", "p99", "max"), ms, strict=True))}


class IdsMode:
    name = "ids"

    def __init__(self, events: int, references: int, *, messages: bool = False) -> None:
        self.events, self.references, self.messages = events, references, messages

    def reader(self, i: int) -> Reader:
        return UpdateIds(self.events, values=i < self.references, messages=self.messages)

    def report(self, readers: Sequence[Reader]) -> dict[str, object]:
        """Whether every stream carried the same ids, and the reference streams' values."""
        counters = [r.counter for r in readers if isinstance(r, UpdateIds)]
        ids = [c.ids() for c in counters]
        differ = 0
        if ids:  # compare each stream's set of ids with subscriber 0's
            base = min((int(i[:, 0].min()) for i in ids if len(i)), default=0)
            first = np.unique(id_keys(ids[0], base))
            differ = sum(not np.array_equal(np.unique(id_keys(i, base)), first) for i in ids[1:])
        references = [
            judge_values(c.values(), c.count, self.events) for c in counters[: self.references]
        ]
        return {
            "id_sets_differ": differ,
            "reference": {"subscribers": len(references), **totals(references)},
        }
