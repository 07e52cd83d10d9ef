"""The sessionizer: feeds `[[session]]` rules' source events to their session assemblers and
appends each ended session to the session topic as one event, exactly once.

What it reads is what subscribers read: the published updates of the source topics, each
carrying its event. It reads them after its cursor (`Broker.replay`), by slots of `settle_ms`
of the time the broker wrote each update (its id's `ms`): a slot is read whole once it ended
`settle_ms` ago (an update written to one partition in it is visible by then), its updates in
event-time order (topic clock, then partition and id). A slot is the same set on every read, so
every replay of the same stretch gives the same order; and partitions whose aggregators publish a
little apart are still read in time order within a slot. Every update moves the assembler's
clock to its topic clock (so an idle tick ends sessions as time passes, with no event); an
update whose event carries the rule's `key` tag is added to it first.

Exactly once, through kill -9 and restarts, rests on determinism and the broker's append:

* The state of a rule (the cursor it read to and the assembler's open sessions) is saved in
  one value (`SessionKeeper.save_session_state`) every `checkpoint_s` (or, with many
  sessions open, every `SAVE_S_PER_OPEN` per open session: see below), after the ended
  sessions of what it covers were appended. A sessionizer that starts (a new lease tenure, a
  restart) restores that state and reads on from its cursor: the same updates in the same
  order give the same sessions.
* Each session is appended with an idempotency key of its own (`session:<key digest>:<first
  event µs>`) and the digest of its event, so a session a predecessor appended after its last
  save is logged once. The key is remembered for `KEY_WINDOW_US`: a sessionizer away longer
  than that past its last save could log a session twice.
* A session's event is never refused as late: it is appended with a lateness of `_ANY_AGE`
  (sessions end in the sources' time, in deadline order, not in the order of their last
  event). One older than every window of the session topic still yields its update.

The history is bounded, and a burst (a backfill) publishes faster than any reader reads.
So the sessionizer holds it (`SessionKeeper.hold_history`): each partition it reads keeps
every update after the cursor last saved (every update, before the first save), whatever
`--history` says, until the next save moves the hold on. The cursor names every partition
it read, how far it read (its newest update, or on Redis the end of the last settled slot),
whether or not its sources had updates there, so that a hold never keeps more than the
sessionizer has still to read.

Limits: past `--history-bytes` of updates held in a partition (or a sessionizer away longer
than a hold lasts, `HOLD_TTL_MS`) the oldest are trimmed even so, and lost to the sessions:
the partition is read on from its newest update, the gap is logged once and counted
(`gaps`), and every session it may have taken events from (one whose events come within
`gap` of the event time the lost updates span) is marked `gap: true`. An event older than
the assembler's clock less its source topic's grace and `skew_us` (a source partition
published that much later than another, its aggregator down) is counted (`late`) and makes no
session.

Late events, and what a long grace costs. A source topic's events are judged late by the grace
its own rule gives it (`grace = "1h"`; else the server's `--grace`), as the broker judged them
on their way in: a click an hour late that its topic accepted joins its session, extending or
joining sessions as an on-time one would. So no session may end while a source could still
bring it an event: each ends once the clock passes its last event plus `gap` plus the longest
grace any of the rule's sources may take (`Rules.widest_grace_under`), not the server's. Every
session stays open that much longer, in memory and in the saved state: the open sessions are
about the sessions begun per second times (their length + `gap` + that grace), each some
hundreds of bytes (docs/rules.md has the figure), bounded by `max_open` (past it the longest
idle ends at once, marked `evicted`); and the session topic's events come that much later.
Saving them costs in proportion too (some 100 bytes and 10 µs per open session), so a
rule's state is saved at most once per `SAVE_S_PER_OPEN` per open session: an hour's grace
over ten sessions begun per second, 36,000 open, is saved every 3.6 s, not every second,
keeping its saves near a tenth of a core (its history is held that much longer).
`max_duration` bounds it too: a session is cut at most that long after its first event, so
the grace the sessions honour is at most `max_duration` (an event later than that makes no
session, and is counted `late`).

One sessionizer appends at a time on Redis: every aggregating process runs one, and the one
holding its lease appends; embedded, the one process runs it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent.event
import orjson

from pushsvc.aggregate.derive import KEY_WINDOW_US
from pushsvc.aggregate.warn_once import WarnOnce
from pushsvc.broker.base import HOLD_TTL_MS, Broker, Replayed, SessionKeeper
from pushsvc.broker.shared_log import Lease
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency, window_ms
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateId
from pushsvc.errors import (
    BrokerUnavailable,
    IdempotencyKeyReused,
    LateEvent,
    ReplicasUnconfirmed,
    TooManyTopics,
)
from pushsvc.rules.analytics import Rules
from pushsvc.rules.sessions import SessionRule
from pushsvc.stats.sessions import EndedSession, Funnel, SessionAssembler, SessionSettings

__all__ = ["SessionBroker", "Sessionizer", "session_event"]

log = logging.getLogger(__name__)

_ANY_AGE = 10 * 365 * 86_400_000_000
"""The lateness a session's event is appended with: any age."""
_STATE_VERSION = 1
SAVE_S_PER_OPEN = 100e-6
"""The least time between two saves of a rule's state, per session open (when longer than
`checkpoint_s`): a save costs some 10 µs per open session (docs/performance.md), so this keeps
saving near a tenth of a core however many a long grace holds open."""
_SAVE_AT_MOST_S = HOLD_TTL_MS / 10_000
"""Saves come at least this often (a tenth of a hold's life), however many sessions are open:
each save renews the holds on the history the sessionizer has still to read."""
_LAST_SEQ = 2**64 - 1
"""The sequence of a read-through position that ends a millisecond (`_read_through`)."""
_GAPS_KEPT = 16
_MARKS_KEPT = 100_000
_GAP_MEMORY_US = 24 * 3600 * 1_000_000
"""How long after a gap a session of a rule without `max_duration` may still be marked."""
NO_STEP = "none"
"""`reached` of a session that reached no funnel step (or of a rule without a funnel)."""


class SessionBroker(Broker, SessionKeeper, Protocol):
    """What the sessionizer needs of a broker: replay, appends and its state."""


def session_event(
    rule: SessionRule, ended: EndedSession, open_now: int, *, gap: bool = False
) -> Event:
    """The session topic's event for one ended session: its duration in seconds at its last
    event's time, tagged with its event count, the deepest funnel step it reached (`none`),
    the sessions open right after it ended (`open`: what the session topic's `active` shows),
    `evicted` when `max_open` ended it early, `gap` when source updates it may have taken
    events from were lost before they were read, and its key with `keep_key`."""
    tags = {"events": str(ended.events), "open": str(open_now)}
    funnel = rule.funnel
    level = ended.funnel.level
    tags["reached"] = funnel.steps[level - 1] if funnel is not None and level else NO_STEP
    if funnel is not None:
        # Seconds from the first step to each step reached: what a funnel's median_s reads.
        for index, since in enumerate(ended.funnel.since_first_us[1:], start=2):
            tags[f"s{index}"] = f"{since / 1_000_000:g}"
    if ended.evicted:
        tags["evicted"] = "true"
    if gap:
        tags["gap"] = "true"
    if rule.keep_key:
        tags[rule.key] = ended.key
    return Event(ended.duration_us / 1_000_000, ended.last_us, tags)


@dataclass
class _Rule:
    """One session rule's reading: its sources, its cursor, its assembler."""

    rule: SessionRule
    settings: SessionSettings
    matcher: TopicMatcher
    cursor: Cursor = field(default_factory=Cursor)
    assembler: SessionAssembler | None = None
    saved_at: float = 0.0
    pending: list[tuple[EndedSession, int]] = field(default_factory=list)
    """Ended sessions not yet appended (the broker was unavailable): appended first."""
    gaps: list[list[int | None]] = field(default_factory=list)
    """The event time each gap may have lost events of: [from, to] µs, `to` None until an
    update after the gap was read (see `_marked`)."""
    marked: dict[str, int] = field(default_factory=dict)
    """Keys of sessions marked since a gap: the last event of the newest (see `_marked`)."""


class Sessionizer:
    """Assembles the sessions of `rules`; `run(stop)` in one greenlet. With `lease`, only while
    it is held (its `keep` runs in a greenlet of its own)."""

    def __init__(
        self,
        broker: SessionBroker,
        rules: Sequence[SessionRule],
        *,
        lateness_us: int,
        lease: Lease | None = None,
        poll_s: float = 0.2,
        settle_ms: int = 0,
        checkpoint_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        skew_us: int = 0,
        analytics: Rules | None = None,
    ) -> None:
        """`lateness_us`: the server's grace (`--grace`), a source topic's unless its rule
        (in `analytics`, the rules file's) gives it another: each source event is judged by
        its topic's, and each session is kept open for the longest of its sources'.
        `settle_ms`: how old an update must be (by its id's time) to be read (0: as soon as
        it is published, where one process publishes every partition); `checkpoint_s`: how
        often each rule's state is saved; `skew_us`: how much
        later than the grace a source event may still reach the assembler (Redis:
        a partition whose updates are published after the others', its aggregator taking
        over), at the cost of sessions ending that much later (at most up to `max_duration`)."""
        self._broker = broker
        self._lateness_us = lateness_us
        self._skew_us = skew_us
        self._analytics = analytics
        self._rules = [
            _Rule(
                rule,
                _settings(rule, self._widest_grace_us(rule) + skew_us),
                TopicMatcher(rule.sources),
            )
            for rule in rules
        ]
        # No session topic is a source, even where a pattern of `from` matches it (rules
        # naming one outright are refused): sessions of sessions would end one another.
        self._topics = frozenset(rule.topic for rule in rules)
        self._lease = lease
        self._poll_s = poll_s
        self._settle_ms = settle_ms
        self._checkpoint_s = checkpoint_s
        self._clock = clock
        self._tenure: str | None = None
        self._warnings = WarnOnce(log)
        self.appended = 0
        """Sessions this sessionizer logged."""
        self.replayed = 0
        """Sessions it found logged already (by a predecessor, after its last save)."""
        self.late = 0
        """Source events too late for the assembler's clock: they make no session."""
        self.gaps = 0
        """Times a partition's updates were lost to it (trimmed from the history)."""

    def _widest_grace_us(self, rule: SessionRule) -> int:
        """The longest grace a source of `rule` may take: how long its sessions stay open
        after their last event, beyond `gap`."""
        if self._analytics is None:
            return self._lateness_us
        return self._analytics.widest_grace_under(rule.sources, self._lateness_us)

    def _grace_us(self, topic: str) -> int:
        """How far behind the assembler's clock an event of `topic` still makes a session:
        its topic's grace, and the skew."""
        if self._analytics is None:
            return self._lateness_us + self._skew_us
        return self._analytics.grace_of(topic, self._lateness_us)[0] + self._skew_us

    @property
    def holding(self) -> bool:
        return self._lease is None or self._lease.holding

    @property
    def evicted(self) -> int:
        """Sessions ended early by `max_open` (over every rule's assembler now)."""
        return sum(r.assembler.evicted_total for r in self._rules if r.assembler is not None)

    def open_sessions(self) -> dict[str, int]:
        """Open sessions now, by session topic (of the rules this process assembles)."""
        return {
            r.rule.topic: r.assembler.open_sessions
            for r in self._rules
            if r.assembler is not None and self.holding
        }

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set():
            if self.holding:
                try:
                    self.step()
                except BrokerUnavailable as exc:
                    self._warnings.warn(
                        "", "unavailable", f"sessionizer: the broker is unavailable ({exc})"
                    )
                    self._restart()
                except Exception:
                    # Next round starts again from the saved state; a sessionizer that died
                    # here would end every session rule silently.
                    self._warnings.failed("failed", "sessionizer: a round failed; starting again")
                    self._restart()
            stop.wait(self._poll_s)

    def _restart(self) -> None:
        for reading in self._rules:
            reading.assembler = None

    def step(self) -> int:
        """One round: every rule reads what was published since its cursor, and appends what
        ended; how many sessions were logged."""
        tenure = "" if self._lease is None else self._lease.token
        if tenure != self._tenure:
            # Another process may have appended and saved meanwhile: start from its state.
            self._tenure = tenure
            self._restart()
        before = self.appended
        for reading in self._rules:
            if not self.holding:
                break
            self._read(reading)
        return self.appended - before

    def _read(self, reading: _Rule) -> None:
        if reading.assembler is None:
            self._load(reading)
        assembler = reading.assembler
        assert assembler is not None
        if reading.pending and not self._append(reading):
            return
        replayed = self._broker.replay(reading.cursor, reading.matcher)
        if replayed.lost:
            self._lost(reading, assembler, replayed)
        done_ms = self._settled_before_ms()
        self._apply(reading, assembler, self._settled(replayed.updates, done_ms))
        self._read_through(reading, replayed, done_ms)
        if reading.pending and not self._append(reading):
            return
        now = self._clock()
        every = max(
            self._checkpoint_s, min(assembler.open_sessions * SAVE_S_PER_OPEN, _SAVE_AT_MOST_S)
        )
        if now - reading.saved_at >= every:
            self._save(reading)

    def _apply(self, reading: _Rule, assembler: SessionAssembler, updates: list[Update]) -> None:
        """Feed `updates` (in order) to the rule's assembler; what ends goes to `pending`."""
        ids = dict(reading.cursor)
        for update in updates:
            ids[update.id.partition] = update.id
            if update.topic in self._topics or not update.is_update:
                continue
            found = self._feed(reading, assembler, update)
            reading.pending += [(e, assembler.open_sessions) for e in found]
        reading.cursor = Cursor(ids.values())
        if updates and reading.gaps and reading.gaps[-1][1] is None:
            reading.gaps[-1][1] = assembler.clock  # the gap ends where reading went on

    def _read_through(self, reading: _Rule, replayed: Replayed, done_ms: int | None) -> None:
        """Move the cursor of each partition read to how far it was read, its sources'
        updates or not: its newest update, or (settling) the end of the last settled slot
        where its newest is not settled yet. What the history is held from
        (`SessionKeeper.hold_history`): no further back than the sessionizer must read."""
        ids = dict(reading.cursor)
        for partition, head in replayed.heads.items():
            if partition in replayed.lost:
                continue
            if done_ms is None or head.ms < done_ms:
                through = head
            elif done_ms > 0:
                through = UpdateId(head.epoch, done_ms - 1, _LAST_SEQ)
            else:
                continue
            known = ids.get(partition)
            if known is None or (
                known.epoch == through.epoch and known.position < through.position
            ):
                ids[partition] = through
        reading.cursor = Cursor(ids.values())

    def _settled_before_ms(self) -> int | None:
        """Settling, the write time (ms) before which every slot ended `settle_ms` ago; None
        without settling (every update is read as soon as it is published)."""
        width = self._settle_ms
        if not width:
            return None
        return (int(self._clock() * 1000) - width) // width * width

    def _settled(self, updates: list[Update], done_ms: int | None) -> list[Update]:
        """The updates to read now, in the order to read them. Without `settle_ms`: all, in
        publish order (one process publishes every partition). With `settle_ms`: those
        of the slots of `settle_ms` of write time (their ids' `ms`) that ended `settle_ms`
        ago, whole, each slot's in event-time order (topic clock, then partition and id): a
        slot is the same set on every read, so every reader gives the assembler the same
        order, and partitions published a little apart are still read in time order."""
        width = self._settle_ms
        if done_ms is None:
            return updates
        done = done_ms // width  # slots before this one ended
        settled = [u for u in updates if u.id.ms // width < done]
        settled.sort(
            key=lambda u: (u.id.ms // width, u.clock_us, u.id.partition, u.id.ms, u.id.seq)
        )
        return settled

    def _feed(
        self, reading: _Rule, assembler: SessionAssembler, update: Update
    ) -> list[EndedSession]:
        rule = reading.rule
        ended: list[EndedSession] = []
        event = _event_of(update.data)
        if event is not None:
            tags = event.get("tags") or {}
            key = tags.get(rule.key)
            if key is not None:
                step = None if rule.funnel is None else rule.funnel.index(tags.get(rule.funnel.tag))
                ts = round(event["ts"] * 1_000_000)
                clock = assembler.clock
                # Judged by its own topic's grace (the assembler's lateness is the longest of
                # the rule's sources', and refuses only what is later than that).
                if clock is not None and ts < clock - self._grace_us(update.topic):
                    added = None
                else:
                    added = assembler.add(key, ts, step)
                if added is None:
                    self.late += 1
                else:
                    ended += added
        ended += assembler.advance(update.clock_us)
        return ended

    def _lost(self, reading: _Rule, assembler: SessionAssembler, replayed: Replayed) -> None:
        """Read on from the newest update of the partitions whose history cannot continue
        from the cursor; the sessions whose events the lost updates may have held are
        marked (`_marked`) from the event time reached, less the allowed lateness."""
        self.gaps += 1
        self._warnings.warn(
            reading.rule.topic,
            "gap",
            f"sessionizer: {reading.rule.topic}: source updates were trimmed from the history "
            "before they were read (past --history-bytes); their events make "
            "no session, and the sessions they may belong to are marked gap (reading on from "
            "the newest)",
        )
        ids = {p: i for p, i in reading.cursor.items() if p not in replayed.lost}
        for partition in replayed.lost:
            head = replayed.heads.get(partition)
            if head is not None:
                ids[partition] = head
        reading.cursor = Cursor(ids.values())
        start = None if assembler.clock is None else assembler.clock - reading.settings.lateness_us
        if reading.gaps and reading.gaps[-1][1] is None:
            return  # the last gap is still open: this one is part of it
        reading.gaps.append([start if start is not None else 0, None])
        del reading.gaps[:-_GAPS_KEPT]

    def _marked(self, reading: _Rule, ended: EndedSession) -> bool:
        """Whether `ended` may lack events of updates lost in a gap: its events come within
        `gap` of the event time a gap spans, or of a marked session of its key (where one
        session ends at `max_duration`, the next begins: where the first began decides
        where they split). Gaps and marks no session still open can reach are forgotten."""
        gaps, marked = reading.gaps, reading.marked
        if not gaps and not marked:
            return False
        rule = reading.rule
        reach = rule.gap_us
        clock = ended.last_us
        span = 2 * reach + reading.settings.lateness_us + (rule.max_duration_us or _GAP_MEMORY_US)
        gaps[:] = [g for g in gaps if g[1] is None or g[1] + span >= clock]
        if len(marked) > _MARKS_KEPT or any(last + span < clock for last in marked.values()):
            reading.marked = marked = {
                k: last for k, last in marked.items() if last + span >= clock
            }
            while len(marked) > _MARKS_KEPT:
                del marked[next(iter(marked))]
        near = ended.first_us - reach
        hit = (ended.key in marked and near <= marked[ended.key]) or any(
            near <= (end if end is not None else ended.first_us)
            and ended.last_us + reach >= (start or 0)
            for start, end in gaps
        )
        if hit:
            marked[ended.key] = max(ended.last_us, marked.get(ended.key, ended.last_us))
        return hit

    def _load(self, reading: _Rule) -> None:
        saved = self._broker.session_state(reading.rule.topic)
        reading.pending = []
        reading.saved_at = self._clock()
        if saved is None:
            reading.cursor = Cursor()
            reading.gaps = []
            reading.marked = {}
            reading.assembler = SessionAssembler(reading.settings)
            self._hold(reading)
            return
        state = orjson.loads(saved)
        if state.get("v") != _STATE_VERSION:
            raise ValueError(f"session state of {reading.rule.topic}: unknown version")
        # An empty cursor was saved before any update was read (a stop within the first
        # `checkpoint_s` of reading): from the start, as a sessionizer with no state reads.
        cursor = Cursor() if state["cursor"] == "" else Cursor.parse(state["cursor"])
        if cursor is None:
            raise ValueError(f"session state of {reading.rule.topic}: a cursor never issued")
        reading.cursor = cursor
        reading.gaps = [list(g) for g in state.get("gaps", ())]
        reading.marked = dict(state.get("marked", {}))
        reading.assembler = SessionAssembler.restore(reading.settings, state["assembler"].encode())
        self._hold(reading)

    def _hold(self, reading: _Rule) -> None:
        """Keep the history after the cursor as saved (a successor reads on from there)."""
        self._broker.hold_history(reading.rule.topic, reading.cursor, reading.matcher)

    def _save(self, reading: _Rule) -> None:
        assert reading.assembler is not None
        state = {
            "v": _STATE_VERSION,
            "cursor": reading.cursor.text,
            "assembler": reading.assembler.checkpoint().decode(),
        }
        if reading.gaps:
            state["gaps"] = reading.gaps
        if reading.marked:
            state["marked"] = reading.marked
        self._broker.save_session_state(reading.rule.topic, orjson.dumps(state))
        # After the state: a hold ahead of the state saved would let go of updates that a
        # successor starting from that state must read.
        self._hold(reading)
        reading.saved_at = self._clock()

    def _append(self, reading: _Rule) -> bool:
        """Log the pending sessions, in order; False when one must be tried again later."""
        rule = reading.rule
        while reading.pending:
            ended, open_now = reading.pending[0]
            event = session_event(rule, ended, open_now, gap=self._marked(reading, ended))
            key_digest = hashlib.sha256(ended.key.encode()).hexdigest()[:32]
            body_digest = hashlib.sha256(
                orjson.dumps([event.value, event.ts_us, event.tags])
            ).digest()
            key = Idempotency(
                f"session:{key_digest}:{ended.first_us}", body_digest, window_ms(KEY_WINDOW_US)
            )
            try:
                appended = self._broker.append_events(
                    rule.topic, [event], lateness_us=_ANY_AGE, idempotency=key
                )
            except IdempotencyKeyReused:
                self.replayed += 1
                self._warnings.warn(
                    rule.topic,
                    "reused",
                    f"sessionizer: {rule.topic}: a session of the same key and start was "
                    "logged already with another end; kept the first",
                )
            except LateEvent:  # pragma: no cover - _ANY_AGE: never late
                self.late += 1
            except (BrokerUnavailable, TooManyTopics, ReplicasUnconfirmed) as exc:
                # Retried with the same key: a no-op if it was logged after all.
                self._warnings.warn(
                    rule.topic, exc.code, f"sessionizer: {rule.topic}: {exc.message}"
                )
                return False
            else:
                if appended.replayed:
                    self.replayed += 1
                else:
                    self.appended += 1
            reading.pending.pop(0)
        return True


_EVENT = b',"event":'
_WINDOWS = b',"windows":'


def _event_of(data: bytes) -> dict[str, Any] | None:
    """The event an update carries (None for a tick), parsed alone: the update's windows are
    most of its bytes and none of the sessionizer's business. The update's members are in
    `pushsvc.core.updates.draft`'s order, and `,"windows":` cannot occur inside the event
    (a quote in a tag is escaped)."""
    start = data.find(_EVENT)
    if start < 0:
        return None
    start += len(_EVENT)
    end = data.find(_WINDOWS, start)
    event = orjson.loads(data[start:end] if end >= 0 else data[start:])
    return event if isinstance(event, dict) else None


def _settings(rule: SessionRule, lateness_us: int) -> SessionSettings:
    funnel = rule.funnel
    if rule.max_duration_us is not None:
        # The assembler's own bound; the rule's is checked against the allowed lateness alone
        # at start (`Settings.load`).
        lateness_us = min(lateness_us, rule.max_duration_us)
    return SessionSettings(
        gap_us=rule.gap_us,
        lateness_us=lateness_us,
        max_duration_us=rule.max_duration_us,
        max_open=rule.max_open,
        funnel=None if funnel is None else Funnel(len(funnel.steps), funnel.within_us),
    )
