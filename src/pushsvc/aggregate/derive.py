"""The deriver: appends each `[[derive]]` rule's value to its topic, once per boundary.

At each boundary `t` (a multiple of the rule's `every`), once every source's clock has
passed `t` plus the allowed lateness (so no event can still land in a bucket before `t`, and
every bucket before it is closed and stored), the rule's expression is evaluated over each
source's closed buckets of tier `every` in `[t - range, t)` and appended to the derived topic
as one event `{"value", "ts": t}` through `Broker.append_events`, like a producer's: the
derived topic is then a topic like any other, wherever its partition is. Nothing here runs
per source event: a round reads the sources' latest updates (their clocks) and, when a
boundary is due, their closed series buckets (`SeriesKeeper.series`).

Exactly once, through failovers and restarts, rests on the broker's append alone:

* Each boundary is appended with an idempotency key of its own (`derive:<t µs>`) and the
  digest of its value, so two derivers appending the same boundary (a successor and a holder
  paused past its lease, or a restarted process redoing what its predecessor did) log it
  once: the check and the append are one atomic step in the derived topic's partition. Values
  are computed from closed buckets only, which never change, so both compute the same value.
* A boundary older than the derived topic's clock less the allowed lateness is refused as
  late: someone appended a later boundary, so this one too (derivers go in order).
* A deriver that starts (a new lease tenure, a restart) starts after the boundary recorded as
  evaluated through (`Broker.note_derived_through`, after each round); with none recorded,
  after the newest boundary the derived topic's published updates show (its latest update's
  event, else the newest event in its history, else its clock less its widest window and a
  margin: ticks move that clock no further than that past its last event). Boundaries
  logged but not yet published are redone, and the idempotency key makes each a no-op.
* Idle ticks move a derived topic's clock no further than the boundary after the recorded
  one plus the allowed lateness (`Aggregator.due_ticks`): a deriver away for a while finds
  the boundaries it missed still open, not refused as late.

One deriver computes at a time on Redis: every aggregating process runs one, and the one
holding its lease (`lease`) appends; on the memory broker the one process runs it. The lease
saves work; it is not what keeps the promise (any number of derivers would still log each
boundary once). The limit: a key is remembered for `KEY_WINDOW_US`, past which a boundary
logged but never applied could be logged again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
from collections.abc import Mapping
from typing import Protocol

import gevent.event
import orjson

from pushsvc.aggregate.warn_once import WarnOnce
from pushsvc.broker.base import Broker, HistoryKeeper, SeriesKeeper
from pushsvc.broker.shared_log import Lease
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency, window_ms
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update
from pushsvc.errors import (
    BrokerUnavailable,
    IdempotencyKeyReused,
    LateEvent,
    ReplicasUnconfirmed,
    TooManyTopics,
)
from pushsvc.rules.analytics import Rules
from pushsvc.rules.derive import DeriveRule, Term, evaluate
from pushsvc.rules.point import Point

__all__ = ["KEY_WINDOW_US", "DeriveBroker", "Deriver"]

log = logging.getLogger(__name__)

KEY_WINDOW_US = 3_600_000_000
"""How long a boundary's idempotency key is remembered: far longer than a failover takes."""
_REWIND_MARGIN_US = 60_000_000
"""Beyond a derived topic's widest window: ticks stop once its windows are empty, so its
clock is never further than that past its last event."""
_BATCH = 1_000
"""Boundaries evaluated per series read (catching up after an outage)."""
_HISTORY_LOOK = 1_000
_SERIES_PAGE = 10_000


class DeriveBroker(Broker, HistoryKeeper, SeriesKeeper, Protocol):
    """What the deriver needs of a broker: appends, latest, history and series."""


class Deriver:
    """Appends the values of `rules.derives`; `run(stop)` in one greenlet. With `lease`, only
    while it is held (its `keep` runs in a greenlet of its own)."""

    def __init__(
        self,
        broker: DeriveBroker,
        rules: Rules,
        *,
        lateness_us: int,
        lease: Lease | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self._broker = broker
        self._derives = rules.derives
        self._lateness_us = lateness_us
        self._lease = lease
        self._poll_s = poll_s
        self._rewind_us = {
            rule.topic: max(rules.for_topic(rule.topic).windows_us, default=0)
            + lateness_us
            + _REWIND_MARGIN_US
            for rule in self._derives
        }
        self._next: dict[str, int] = {}
        """Per derived topic, the next boundary to evaluate (this tenure)."""
        self._noted: dict[str, int] = {}
        """Per derived topic, the boundary last noted as evaluated through."""
        self._tenure: str | None = None
        self._warnings = WarnOnce(log)
        self.appended = 0
        """Boundaries this deriver logged."""
        self.replayed = 0
        """Boundaries it found logged already (by a predecessor, or a paused holder)."""
        self.late = 0
        """Boundaries refused as late: logged later ones exist, or ticks outran it."""

    @property
    def holding(self) -> bool:
        return self._lease is None or self._lease.holding

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set():
            if self.holding:
                try:
                    self.step()
                except BrokerUnavailable as exc:
                    self._warnings.warn(
                        "", "unavailable", f"deriver: the broker is unavailable ({exc})"
                    )
                except Exception as exc:
                    # Next round starts again from what the derived topics show; a deriver
                    # that died here would stop every derived metric silently. Logged with
                    # its traceback once per kind: it may fail every round.
                    self._warnings.failed(
                        type(exc).__name__, "deriver: a round failed; starting again"
                    )
                    self._next.clear()
            stop.wait(self._poll_s)

    def step(self) -> int:
        """One round: every boundary due of every rule; how many were logged."""
        tenure = "" if self._lease is None else self._lease.token
        if tenure != self._tenure:
            # Another process may have appended meanwhile: start again from what the
            # derived topics show.
            self._tenure = tenure
            self._next.clear()
        before = self.appended
        for rule in self._derives:
            if not self.holding:
                break
            self._derive(rule)
        return self.appended - before

    def _derive(self, rule: DeriveRule) -> None:
        latest = self._broker.latest(TopicMatcher(rule.sources))
        if len(latest) < len(rule.sources):
            return  # a source without a clock closes no bucket yet
        every = rule.every_us
        # The newest boundary whose buckets every source has closed: t + lateness <= clock.
        due = (min(u.clock_us for u in latest.values()) - self._lateness_us) // every * every
        first = self._next.get(rule.topic)
        if first is None:
            first = self._start(rule, due)
            if first is None:
                return
            self._next[rule.topic] = first
        try:
            while first <= due and self.holding:
                last = min(due, first + (_BATCH - 1) * every)
                points = self._points(rule, first, last)
                for t in range(first, last + every, every):
                    values = {
                        term: _term(term, points[term.topic], t, every) for term in rule.terms
                    }
                    value = evaluate(rule.expression, values)
                    if value is not None and not self._append(rule, t, value):
                        return  # retried next round, from t
                    self._next[rule.topic] = t + every
                first = last + every
        finally:
            self._note_through(rule)

    def _note_through(self, rule: DeriveRule) -> None:
        """Tell the broker how far this deriver went, so that idle ticks move the derived
        topic's clock that far and no further (`Aggregator.due_ticks`)."""
        through = self._next[rule.topic] - rule.every_us
        if self._noted.get(rule.topic) != through:
            self._broker.note_derived_through(rule.topic, through)
            self._noted[rule.topic] = through

    def _start(self, rule: DeriveRule, due: int) -> int | None:
        """The first boundary this tenure evaluates: the one after the newest the derived
        topic shows; with no derived topic yet, the end of the earliest bucket any source
        keeps (None: none before `due`, where every source's buckets are closed: an earlier
        one could still close in a source whose clock is behind)."""
        every = rule.every_us
        through = self._broker.derived_through([rule.topic]).get(rule.topic)
        if through is not None:
            return through + every
        latest = self._broker.latest(TopicMatcher([rule.topic])).get(rule.topic)
        if latest is not None:
            last = _event_ts(latest)
            if last is None:
                history = self._broker.history(rule.topic, limit=_HISTORY_LOOK)
                found = [ts for u in history.updates if (ts := _event_ts(u)) is not None]
                last = found[-1] if found else latest.clock_us - self._rewind_us[rule.topic]
            return (last // every + 1) * every
        starts = []
        for source, tier in rule.tiers:
            page = self._broker.series(
                source,
                resolution=tier.resolution_label,
                since_us=0,
                until_us=due,
                retention_us=tier.retention_us,
                limit=1,
            )
            if page.points:
                starts.append(page.points[0][0])
        return min(starts) // every * every + every if starts else None

    def _points(self, rule: DeriveRule, first: int, last: int) -> dict[str, dict[int, Point]]:
        """Each source's closed buckets the boundaries `first`..`last` read, by start."""
        out: dict[str, dict[int, Point]] = {}
        for source, tier in rule.tiers:
            widest = max(term.range_us for term in rule.terms if term.topic == source)
            since = first - widest
            kept: dict[int, Point] = {}
            while True:
                page = self._broker.series(
                    source,
                    resolution=tier.resolution_label,
                    since_us=since,
                    until_us=last,
                    retention_us=tier.retention_us,
                    limit=_SERIES_PAGE,
                )
                for t_us, packed in page.points:
                    kept[t_us] = Point.unpacked(t_us, packed)
                if not page.more or not page.points:
                    break
                since = page.points[-1][0] + 1
            out[source] = kept
        return out

    def _append(self, rule: DeriveRule, t: int, value: float) -> bool:
        """Log boundary `t`'s value once; False when it must be tried again later."""
        digest = hashlib.sha256(struct.pack("<qd", t, value)).digest()
        key = Idempotency(f"derive:{t}", digest, window_ms(KEY_WINDOW_US))
        try:
            appended = self._broker.append_events(
                rule.topic, [Event(value, t)], lateness_us=self._lateness_us, idempotency=key
            )
        except LateEvent:
            self.late += 1
            self._warnings.warn(
                rule.topic,
                "late",
                f"deriver: {rule.topic} at {t / 1e6}: refused as late (a later value is logged, "
                "or its clock moved on while no deriver ran)",
            )
            return True
        except IdempotencyKeyReused:
            # Logged already with another value: a source's bucket left its tier between
            # two derivers' reads. The first one stays.
            self.replayed += 1
            self._warnings.warn(
                rule.topic,
                "reused",
                f"deriver: {rule.topic} at {t / 1e6}: logged already with another value; "
                "kept the first",
            )
            return True
        except (BrokerUnavailable, TooManyTopics, ReplicasUnconfirmed) as exc:
            # Retried with the same key: a no-op if it was logged after all.
            self._warnings.warn(
                rule.topic, exc.code, f"deriver: {rule.topic}: {exc.message}; retrying"
            )
            return False
        if appended.replayed:
            self.replayed += 1
        else:
            self.appended += 1
        return True


def _term(term: Term, points: Mapping[int, Point], t: int, every: int) -> float | None:
    """A term at boundary `t`: its statistic over the buckets starting in `[t - range, t)`,
    merged exactly as pandas sums `resample(every)` (None where undefined)."""
    count = 0
    sums: list[float] = []
    low, high = math.inf, -math.inf
    for start in range(t - term.range_us, t, every):
        point = points.get(start)
        if point is not None and point.count:  # a bucket of messages only holds no value
            count += point.count
            sums.append(point.sum)
            low = min(low, point.min)
            high = max(high, point.max)
    stat = term.stat
    if stat == "count":
        return float(count)
    if stat == "rate":
        return count / (term.range_us / 1_000_000)
    if stat == "sum":
        return math.fsum(sums)
    if not count:
        return None
    if stat == "mean":
        return math.fsum(sums) / count
    return low if stat == "min" else high


def _event_ts(update: Update) -> int | None:
    """The event time an update of a derived topic carries (None for a tick)."""
    if not update.is_update:
        return None
    event = orjson.loads(update.data).get("event")
    return None if event is None else round(event["ts"] * 1_000_000)
