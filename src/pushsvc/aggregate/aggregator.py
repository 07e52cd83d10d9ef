"""The aggregator: rolling windows per topic, one update draft per event.

A deterministic state machine over what the event log holds: batches of events and rounds
of idle ticks. Applying the same entries in the same order gives the same windows and the
same drafts, which is what lets a standby or a restarted aggregator continue exactly where
another stopped (`pushsvc.aggregate.shard_runner`). Lateness is not judged here: every event that
reaches the aggregator was accepted by the broker (`Broker.append_events`), and one that
falls before every window still yields its update. An event behind its topic's clock (late,
within the grace) is inserted in place and its update says `"late": true`; the clock does not
move back. A message the broker found past the grace comes marked (`Event.mark`,
`pushsvc.core.lateness`): on its topic it is drafted with the statistics as they are, in none
of them, so that it is pushed in log order; on the late stream it is applied and its update
says it is a copy, which no messages stream pushes again.

Forgetting idle topics (`--topic-ttl`) follows the same pattern as ticks: the aggregator
proposes (`idle_topics`), the broker decides against what it logged meanwhile, and every
aggregator drops what was decided (`forget`).

What a rule adds to its topic's windows (groups, series, anomaly scores, alerts, a session
topic's own statistics) is a stage (`pushsvc.aggregate.stages`): the aggregator inserts an
event into the topic's windows, passes it through the topic's stages, and writes its update
with what follows it (points, then alert changes). A topic whose rule asks for none of them
skips the stages altogether (`apply_events`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial

from pushsvc.alerts.states import AlertChange
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import PAST_GRACE
from pushsvc.core.positions import LogPosition
from pushsvc.core.updates import UpdateDraft, deletion_draft, draft
from pushsvc.ingest import Event, event_json
from pushsvc.rules.analytics import Rules
from pushsvc.stats import TopicWindows
from pushsvc.stats.compiled import RuleStats
from pushsvc.stats.groups import Group
from pushsvc.stats.unvalued import Unvalued

from .stages.alerts import alert_drafts
from .stages.series import ForecastWork, SeriesStage
from .stages.step import EventStep, Summary, TickStep, cached
from .topic_checkpoint import checkpoint_of, horizon_of, restore_into
from .topic_state import TopicFactory, TopicState

WallClock = Callable[[], int]
"""Wall time in integer microseconds since the epoch."""

Statistics = TopicWindows | RuleStats | Unvalued
"""A topic's statistics of values (`Unvalued` until its first value)."""

_NOT_DURABLE, _DURABLE, _WITH_SERIES = range(3)
"""Whether a topic's rule makes it durable (`Aggregator.durable`): no, yes, or once the topic
has series (made at its first value)."""

PACE_EVENTS = 256
"""How many events of a batch an aggregator with a `pause` inserts between two pauses. The
embedded server aggregates on the loop that serves producers, and a big batch inserted at once
holds that loop while every POST waits (measured: docs/performance.md, 'Hostile clients')."""


def sweep_interval_s(topic_ttl_us: int) -> float:
    """How often idle topics are looked for: a tenth of the TTL, at least once a minute, so a
    topic is forgotten within 1.1 TTL (60 s more for TTLs over ten minutes)."""
    return min(topic_ttl_us / 10, 60_000_000) / 1_000_000


class Aggregator:
    """Statistics per topic (and group) as the rules ask. Not greenlet-safe: one driver."""

    def __init__(
        self,
        *,
        rules: Rules,
        wall_clock: WallClock,
        topic_ttl_us: int = 0,
        lateness_us: int = 5_000_000,
        pause: Callable[[], None] | None = None,
    ) -> None:
        """Statistics as `rules` ask (`Settings.rules`: the rules file's, then the settings'
        windows and statistics for every other topic). `topic_ttl_us` (0: never) is how long
        a group may go without an event before it is forgotten. `lateness_us`: the allowed
        lateness, after which a series bucket can take no more events and closes. `pause`, when
        given, is called between every `PACE_EVENTS` events of a batch and before each
        forecast is made (the server's `gevent.sleep`, so that a big batch, or the forecasts of
        many series closing together, let the loop serve others meanwhile); nothing else may
        use this aggregator while it pauses."""
        self.rules = rules
        self.forecast_work = ForecastWork(pause)
        """Its forecasts' pause and counts (`pushsvc_forecast_*` in `/metrics`)."""
        self._factory = TopicFactory(
            rules,
            topic_ttl_us=topic_ttl_us,
            lateness_us=lateness_us,
            forecast_work=self.forecast_work,
        )
        self._wall_clock = wall_clock
        self._topics: dict[str, TopicState] = {}
        self._lateness_us = lateness_us
        self._pause = pause
        self._unpaused = 0  # events inserted since the last pause
        self._durable: dict[str, int] = {}  # the rule's part: `_DURABLE`...
        self._derived_every = {rule.topic: rule.every_us for rule in rules.derives}
        self.group_overflow = 0
        """Events this aggregator routed to an overflow group (`max_groups` reached)."""

    def _topic(self, topic: str) -> TopicState:
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = self._factory.new(topic)
        return state

    # -- events ------------------------------------------------------------------------

    def apply_events(
        self, topic: str, events: Sequence[Event], at: LogPosition = (0, 0)
    ) -> list[UpdateDraft]:
        """Apply a batch in order; one draft per event, with the statistics right after it.
        `at`: the batch's place in the event log (what admits a group, see `groups.py`).
        A marked message (`Event.mark`: the append found it past the grace) is drafted in its
        place as `_marked` says."""
        if not events:
            return []
        state = self._topic(topic)
        if state.awaits_value and any(e.value is not None and e.mark != PAST_GRACE for e in events):
            # Its first value: its windows of values and series from this entry on, whether
            # applied or replayed (`topic_state`).
            self._factory.valued(state, topic, at)
        if state.replay is not None and at <= state.replay.until:
            self._replay_exact(state, events, at)
            return []
        if any(e.mark for e in events):
            return self._marked(state, topic, events, at)
        return self._applied(state, topic, events, at)

    def _marked(
        self, state: TopicState, topic: str, events: Sequence[Event], at: LogPosition
    ) -> list[UpdateDraft]:
        """`apply_events` of a batch with marked messages, in log order: a `PAST_GRACE` one
        (on its topic) is drafted with the topic's statistics as they are, which do not take
        it, and pushed like any message (`"late": true, "past_grace": true`); a
        `PUSHED_ON_TOPIC` one (on a late stream) is applied like any event, its update
        saying `"copy": true` so that no messages stream pushes it twice. The runs of
        unmarked events between them are applied as a batch, each event keeping its index."""
        drafts: list[UpdateDraft] = []
        start = 0
        for index, event in enumerate(events):
            if not event.mark:
                continue
            if start < index:
                drafts += self._applied(state, topic, events[start:index], at, start)
            start = index + 1
            if event.mark == PAST_GRACE:
                drafts.append(_pushed_only(state, topic, event))
            else:
                own = self._applied(state, topic, [event], at, index)
                own[0] = own[0].flagged("copy")
                drafts += own
        if start < len(events):
            drafts += self._applied(state, topic, events[start:], at, start)
        return drafts

    def _applied(
        self,
        state: TopicState,
        topic: str,
        events: Sequence[Event],
        at: LogPosition,
        first: int = 0,
    ) -> list[UpdateDraft]:
        """`apply_events` of unmarked events, the first of them at index `first` of its
        entry."""
        clocks = _clocks(state.windows.clock_us, events)
        summaries = self._summaries_of(state, events, clocks)
        state.event_clock_us = clocks[-1]
        state.wall_at_event_us = self._wall_clock()
        if not state.stages:
            # The plain rule, inlined: `_staged` with no stage to call costs it instructions
            # an event (measured: docs/performance.md, 'What the aggregator's shape saves').
            return [
                draft(topic, at_, "event", event_json(e), summary, late=e.ts_us < at_)
                for e, at_, summary in zip(events, clocks, summaries, strict=True)
            ]
        series = state.series
        if series is not None and state.stages == (series,) and state.groups is None:
            return _series_only(series, topic, events, clocks, summaries)
        return self._staged(state, topic, events, clocks, summaries, at, first)

    def _summaries_of(
        self, state: TopicState, events: Sequence[Event], clocks: Sequence[int]
    ) -> Iterable[Summary]:
        """The windows' summary after each event (paced, see `_paced`), with the message
        counts where the topic has messages."""
        counting = state.messages is not None or any(e.message is not None for e in events)
        if counting:
            # Made (at the clock before this batch) before the windows take the batch: they
            # may take it whole at once, and counts made at the clock after it would count a
            # message of the batch into windows it has left by the batch's end.
            state.message_counts()
        summaries: Iterable[Summary]
        if self._pause is not None and self._unpaused + len(events) > PACE_EVENTS:
            summaries = self._paced(state.windows, events, self._pause)
        else:
            self._unpaused += len(events)
            summaries = _summaries(state.windows, events)
        if counting:
            summaries = _counting_messages(state, events, clocks, summaries)
        return summaries

    def _paced(
        self, windows: Statistics, events: Sequence[Event], pause: Callable[[], None]
    ) -> Iterator[Summary]:
        """`_summaries` of `events` with a pause after every `PACE_EVENTS` events inserted
        since the last one (in this batch or the ones before): lazily, so that each chunk's
        drafts are made before the pause after it."""
        start = 0
        while start < len(events):
            room = PACE_EVENTS - self._unpaused
            if room <= 0:
                pause()
                self._unpaused, room = 0, PACE_EVENTS
            chunk = events[start : start + room]
            self._unpaused += len(chunk)
            start += len(chunk)
            yield from _summaries(windows, chunk)

    def _staged(
        self,
        state: TopicState,
        topic: str,
        events: Sequence[Event],
        clocks: Sequence[int],
        summaries: Iterable[Summary],
        at: LogPosition,
        first: int = 0,
    ) -> list[UpdateDraft]:
        """`apply_events` for a topic with stages: each event through them in order, its
        update, then what they drafted to follow it; then the groups gone idle. `first`: the
        index of the first event in its entry."""
        drafts: list[UpdateDraft] = []
        stages = state.stages
        step = EventStep(at)
        follow = step.follow
        last_update = 0  # the place of the last update among the drafts (points follow)
        for index, (e, now, summary) in enumerate(
            zip(events, clocks, summaries, strict=True), first
        ):
            if e.value is None:
                # A message without a value: counted, pushed, in no statistic of values (its
                # topic's stages judge values; the next event or tick brings them to its clock),
                # but in its series bucket, whose closing points follow its update, and judged
                # by the alerts on message counts.
                points = [] if state.series is None else state.series.on_message(e, now)
                last_update = len(drafts)
                drafts.append(
                    draft(topic, now, "event", event_json(e), summary, late=e.ts_us < now)
                )
                drafts += points
                if state.alerts is not None:
                    drafts += state.alerts.on_message(now, summary)
                continue
            step.index, step.event, step.clock_us, step.summary = index, e, now, summary
            for stage in stages:
                stage.on_event(step)
            last_update = len(drafts)
            drafts.append(
                draft(
                    topic, now, "event", event_json(e), step.summary,
                    group=step.part, late=e.ts_us < now,
                )
            )  # fmt: skip
            if follow:
                drafts += follow
                follow.clear()
        if state.groups is not None:
            self.group_overflow += state.groups.take_overflow()
            forgotten, changes = self._sweep(state, clocks[-1])
            if forgotten:
                drafts[last_update] = drafts[last_update].forgetting(forgotten)
                drafts += alert_drafts(clocks[-1], changes)
        return drafts

    def _sweep(
        self, state: TopicState, clock_us: int
    ) -> tuple[list[tuple[str, Mapping[str, str | None]]], list[AlertChange]]:
        """Forget the topic's idle groups, once every stage has seen the entry: (id, key) of
        each, and the changes of their alert instances."""
        assert state.groups is not None
        forgotten = state.groups.sweep(clock_us)
        if not forgotten:
            return [], []
        if state.series is not None:
            state.series.forget_groups(forgotten)
        changes = [] if state.alerts is None else state.alerts.forget_groups(forgotten, clock_us)
        return [(g.id, g.key) for g in forgotten], changes

    def _replay_exact(self, state: TopicState, events: Sequence[Event], at: LogPosition) -> None:
        """Rebuilding: entries the checkpoint covers feed the exact windows only (and the open
        series buckets and session windows, which keep their own events)."""
        windows = state.windows
        groups, series, sessions = state.groups, state.series, state.sessions
        if state.series_from is not None and at < state.series_from:
            series = None  # made at a later entry (the topic's first value): not in them
        for index, event in enumerate(events):
            if event.mark == PAST_GRACE:
                continue  # in no statistic (`_marked`)
            if event.message is not None or state.messages is not None:
                _count_message(state, event)
            if event.value is None:
                _move_clock(windows, event.ts_us)
                if series is not None:
                    series.replayed_message(event)
                continue
            if isinstance(windows, RuleStats):
                windows.insert_exact(event.ts_us, event.value, event.tags)
            else:
                assert not isinstance(windows, Unvalued)  # made at the entry of its first value
                windows.insert(event.ts_us, event.value)
            group = None
            if groups is not None and windows.clock_us is not None:
                group = groups.replayed(event, (*at, index))
            if series is not None:
                series.replayed(event, group)
            if sessions is not None:
                sessions.windows.insert_exact(event.ts_us, event.tags)

    # -- ticks -------------------------------------------------------------------------

    def tick(self, derived_through: Mapping[str, int] | None = None) -> list[UpdateDraft]:
        """Apply the ticks due now (one process: nothing to log first)."""
        return self.apply_ticks(self.due_ticks(derived_through))

    def due_ticks(self, derived_through: Mapping[str, int] | None = None) -> dict[str, int]:
        """The clocks an idle tick would move topics to now: each topic's last event clock
        plus the wall time since it arrived, where that is ahead of the topic's clock and a
        window holds an event or an alert instance of the topic is pending or firing (its
        `for` and `keep_firing_for` run on that clock, empty windows or not) or a late event
        waits for its series correction (`SeriesBuckets.corrections_due`); and a grouping
        topic's own clock where a group lags behind it (another group's events moved it), so
        that every group is seen at the topic's moment.

        A derived topic (`[[derive]]`) moves no further than its next boundary can still be
        appended, after the boundary its deriver evaluated through (`derived_through`, from
        `Broker.derived_through`; not there: not at all), so that a deriver away for a while
        finds every boundary it missed still open, not refused as late."""
        now = self._wall_clock()
        due = {}
        for topic, state in self._topics.items():
            current = state.windows.clock_us
            if current is None:
                continue
            clock = state.event_clock_us + max(0, now - state.wall_at_event_us)
            every = self._derived_every.get(topic)
            if every is not None:
                through = (derived_through or {}).get(topic)
                if through is None:
                    continue
                clock = min(clock, through + every + self._lateness_us)
            if clock > current and (
                len(state.windows)
                or _alerts_live(state)
                or state.holds_messages()
                or (state.series is not None and state.series.corrections_due())
            ):
                due[topic] = clock
            elif state.groups is not None and state.groups.lagging(current):
                due[topic] = max(clock, current)
        return due

    def derived_topics(self) -> list[str]:
        """The derived topics this aggregator keeps (whose ticks `due_ticks` bounds)."""
        return [topic for topic in self._derived_every if topic in self._topics]

    def apply_ticks(
        self, clocks: Mapping[str, int], at: LogPosition | None = None
    ) -> list[UpdateDraft]:
        """Move each topic's clock (and its groups') forward to the clock given; a draft
        (reason `tick`) where a window changed, carrying the groups that changed. `at`: the
        tick entry's log position (a rebuild replaying a checkpointed topic's older entries
        moves only its clock)."""
        drafts: list[UpdateDraft] = []
        for topic, clock in clocks.items():
            state = self._topics.get(topic)
            if state is None:
                continue
            if state.replaying(at):
                # A checkpointed entry: it moves the exact windows' clock as it moved the
                # topic's then; one past the checkpoint's clock found no topic to move then
                # (it came before the topic's first event), so it moves nothing now.
                if clock <= state.event_clock_us:
                    state.windows.advance(clock)
                    if state.messages is not None:
                        state.messages.advance(clock)
                    if state.sessions is not None:
                        state.sessions.windows.advance(clock)
                continue
            drafts += self._tick(state, topic, clock)
        return drafts

    def _tick(self, state: TopicState, topic: str, clock: int) -> list[UpdateDraft]:
        """One topic's tick through its stages. The order of what it drafts is the one
        published all along: a topic without groups has its update, its alert changes, then
        its points; a grouping topic its update, its points, then its alert changes."""
        changed = state.windows.advance(clock)
        if state.messages is not None:
            changed = state.messages.advance(clock) or changed
        step = TickStep(
            clock,
            changed,
            cached(partial(state.summary, clock)),
            partial(_group_summary, state, clock),
        )
        for stage in state.stages:
            stage.on_tick(step)
        drafts: list[UpdateDraft] = []
        if state.groups is None:
            if step.changed:
                drafts.append(draft(topic, clock, "tick", None, step.topic_summary()))
            drafts += alert_drafts(clock, step.changes)
            drafts += step.points
            return drafts
        forgotten, changes = self._sweep(state, clock)
        if step.changed or step.parts or forgotten:
            tick = draft(topic, clock, "tick", None, step.topic_summary(), groups=step.parts)
            drafts.append(tick.forgetting(forgotten) if forgotten else tick)
        drafts += step.points
        drafts += alert_drafts(clock, step.changes + changes)
        return drafts

    def restore_clock(self, topic: str, clock_us: int, age_us: int | None = None) -> None:
        """Rebuilding: after the logged events, move the topic's clock to where it stood
        (its latest update's, published `age_us` ago), without drafts. A topic none of whose
        events is left in the log (every one had left every window) comes back empty at that
        clock, as ticks had left it. Ticks go on from that clock by the wall time since that
        update was published, downtime included, as an uninterrupted run's would (without
        `age_us`: from now)."""
        state = self._topics.get(topic)
        if state is None:
            state = self._topic(topic)
            state.windows.start_at(clock_us)
            state.wall_at_event_us = self._wall_clock()
        else:
            state.windows.advance(clock_us)
        if state.messages is not None:
            state.messages.advance(clock_us)
        if state.sessions is not None:
            state.sessions.windows.advance(clock_us)
        if state.series is not None:
            state.series.caught_up(clock_us)  # published before: the updates reached this clock
        state.event_clock_us = max(state.event_clock_us, clock_us)
        if age_us is not None:
            # The clock an uninterrupted run has now: the update's clock plus the wall time
            # since it was published. A checkpoint or a logged tick may have left the topic
            # ahead of its latest update (a tick that changed no window publishes none),
            # with the wall time of this rebuild: ticks go on towards that clock all the
            # same, not from where the stop left them.
            resumed = clock_us + max(0, age_us)
            ahead = max(0, resumed - state.event_clock_us)
            state.wall_at_event_us = self._wall_clock() - ahead

    # -- forgetting and deleting -------------------------------------------------------

    def idle_topics(self, ttl_us: int, *, ticking: bool) -> dict[str, int]:
        """The topics to forget now, with their clocks: no event applied for `ttl_us` of wall
        time, every window empty, and no alert instance of it pending or firing. Without idle
        ticks (`ticking` False) nothing slides the windows, so: empty at the clock an idle
        tick would have moved the topic to."""
        now = self._wall_clock()
        idle = {}
        for topic, state in self._topics.items():
            clock = state.windows.clock_us
            idle_us = now - state.wall_at_event_us
            if clock is None or idle_us < ttl_us:
                continue
            if _alerts_live(state):
                continue  # an alert about it is pending or firing: forgetting would drop it
            widest = max((*state.rule.windows_us, 0))
            if state.holds_messages():
                continue  # a window still counts a message: ticks slide it, not forgetting
            if not len(state.windows) or (
                not ticking and clock <= state.event_clock_us + idle_us - widest
            ):
                idle[topic] = clock
        return idle

    def forget(self, topics: Sequence[str]) -> None:
        """Drop these topics' windows: the next event of one starts it afresh."""
        for topic in topics:
            self._topics.pop(topic, None)

    def delete(self, topic: str, at: LogPosition = (0, 0)) -> list[UpdateDraft]:
        """`DELETE /topics/{topic}`, at log position `at`: forget the topic's windows, groups,
        open series buckets and alert instances. The drafts: the deletion (which tells the
        broker to drop its latest update, groups, series and checkpoint, and its streams to
        send a `"gap": true` snapshot), then an `_alerts` change for each instance that was
        live: firing ones resolve, pending ones turn inactive, at the topic's clock. A topic
        this aggregator does not hold still yields its deletion (the broker may keep some of
        it). The topic's next event starts it afresh.

        Rebuilding: a checkpoint taken after `at` was taken after the deletion, so the log's
        entries before `at` were the deleted topic's: the topic starts from that checkpoint
        again, with nothing of them in its exact windows, and nothing is drafted."""
        state = self._topics.pop(topic, None)
        if state is None:
            return [deletion_draft(topic, 0)]
        if state.replay is not None and at <= state.replay.until:
            self.restore(state.replay.restored_from)
            return []
        clock = state.windows.clock_us
        if clock is None:
            clock = state.event_clock_us
        drafts = [deletion_draft(topic, clock)]
        if state.alerts is not None:
            drafts += alert_drafts(clock, state.alerts.alerts.forget_all(clock))
        return drafts

    def clock(self, topic: str) -> int | None:
        state = self._topics.get(topic)
        return None if state is None else state.windows.clock_us

    def topics(self) -> list[str]:
        return list(self._topics)

    def group_count(self) -> int:
        """Live groups over every topic."""
        return sum(len(s.groups) for s in self._topics.values() if s.groups is not None)

    # -- checkpoints -------------------------------------------------------------------

    def durable(self, topic: str) -> bool:
        """Whether `topic` keeps state the log cannot give back (checkpointed)."""
        # Asked for every log entry applied; the rules, hence the rule's part of the answer,
        # never change.
        known = self._durable.get(topic)
        if known is None:
            if len(self._durable) >= 65_536:
                self._durable.clear()  # bounded: topics come and go
            known = self._durable[topic] = self._is_durable(topic)
        if known == _WITH_SERIES:
            state = self._topics.get(topic)
            return state is not None and state.series is not None
        return known == _DURABLE

    def _is_durable(self, topic: str) -> int:
        rule = self.rules.for_topic(topic)
        alerts = bool(self.rules.alerts_for(topic))
        if rule.groups or rule.last or rule.sketch_windows_us or alerts:
            return _DURABLE
        # Coarser series tiers are built from the finest one's closed buckets: their open
        # buckets outlive the log. An anomaly detector's state is the whole past of its
        # series, which no log keeps. So is a forecast model's.
        tiers = len(self._factory.tiers(rule))
        if self._factory.lazy_series(rule):
            # Series made at the topic's first value, which the log may no longer hold:
            # whether it has them is durable (and a topic of messages only is not).
            return _WITH_SERIES
        scored = (rule.anomaly is not None or rule.forecast is not None) and tiers > 0
        return _DURABLE if tiers > 1 or scored else _NOT_DURABLE

    def horizon_us(self, topic: str) -> int | None:
        """The time at or before which no event of `topic` is in an exact window of the topic
        or of its groups (a group lags its topic until a tick brings it along); what a
        rebuild needs of the log besides the checkpoint. None for a topic not held."""
        state = self._topics.get(topic)
        return None if state is None else horizon_of(state)

    def checkpoint(self, topic: str, position: LogPosition) -> Checkpoint | None:
        """`topic`'s durable state as it stands (after the entry at `position`)."""
        state = self._topics.get(topic)
        return None if state is None else checkpoint_of(state, topic, position)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Rebuilding: start `checkpoint.topic` from its checkpoint; the log's entries up to its
        position then feed only the exact windows, until `end_replay`."""
        topic = checkpoint.topic
        self._topics.pop(topic, None)
        state = self._topic(topic)
        restore_into(state, self._factory, checkpoint, self._wall_clock())

    def end_replay(self) -> None:
        """The rebuild's replay is over: exact windows join their durable parts' clock."""
        for state in self._topics.values():
            if state.replay is None:
                continue
            state.replay = None
            if isinstance(state.windows, RuleStats):
                state.windows.catch_up()
            if state.sessions is not None and state.windows.clock_us is not None:
                state.sessions.windows.advance(state.windows.clock_us)
            if state.groups is not None:
                state.groups.end_replay()


def _pushed_only(state: TopicState, topic: str, event: Event) -> UpdateDraft:
    """The update of a message past its topic's grace (`PAST_GRACE`): the topic's statistics
    as they are, at its clock, which neither takes it nor moves."""
    windows = state.windows
    clock = windows.clock_us
    summary: Summary = {}
    if clock is None:
        clock = event.ts_us  # (none yet: the statistics were forgotten, or never kept)
    else:
        summary = windows.summary()
        if state.messages is not None:
            summary = state.messages.merged(summary)
    update = draft(topic, clock, "event", event_json(event), summary, late=True)
    return update.flagged("past_grace")


def _alerts_live(state: TopicState) -> bool:
    """Whether an alert instance of the topic or of one of its groups is pending or firing."""
    return state.alerts is not None and state.alerts.alerts.any_live()


def _group_summary(state: TopicState, clock_us: int, group: Group) -> Summary:
    return state.group_summary(group, clock_us)


def _summaries(windows: Statistics, events: Sequence[Event]) -> Iterable[Summary]:
    """Insert `events` into a topic's windows in order: the summary right after each."""
    if any(e.value is None for e in events):
        return _with_messages_unvalued(windows, events)
    assert not isinstance(windows, Unvalued)  # made at the entry of its first value
    # Every event here has a value (checked above; a list is not narrowed by it).
    if isinstance(windows, RuleStats) and windows.tagged:
        # One summary at a time, each made as its draft is: see `insert_tagged`.
        return windows.insert_tagged([(e.ts_us, e.value, e.tags) for e in events])  # type: ignore[misc]
    return windows.insert_many([(e.ts_us, e.value) for e in events])  # type: ignore[misc]


def _with_messages_unvalued(windows: Statistics, events: Sequence[Event]) -> Iterator[Summary]:
    """`_summaries` of a batch with messages that carry no value: those move the clock and
    leave the statistics of values as they were; the others are inserted as always."""
    for event in events:
        if event.value is None:
            _move_clock(windows, event.ts_us)
            yield windows.summary()
        else:
            yield from _summaries(windows, [event])


def _move_clock(windows: Statistics, ts_us: int) -> None:
    """An event without a value at `ts_us`: the topic's clock moves to it (never back)."""
    if windows.clock_us is None:
        windows.start_at(ts_us)
    else:
        windows.advance(ts_us)


def _count_message(state: TopicState, event: Event) -> None:
    """Count `event` in the topic's message windows if it is a message, and slide them to the
    topic's clock after it either way."""
    counts = state.message_counts()
    clock = counts.clock_us
    now = event.ts_us if clock is None or event.ts_us > clock else clock
    if event.message is not None:
        counts.insert(event.ts_us, event.message.type, now)
    else:
        counts.advance(now)


def _counting_messages(
    state: TopicState,
    events: Sequence[Event],
    clocks: Sequence[int],
    summaries: Iterable[Summary],
) -> Iterator[Summary]:
    """`summaries`, each with the topic's messages by type per window right after its event
    (lazily, in step with them: a paced batch's windows and counts move together)."""
    counts = state.message_counts()
    for event, clock, summary in zip(events, clocks, summaries, strict=True):
        if event.message is not None:
            counts.insert(event.ts_us, event.message.type, clock)
        else:
            counts.advance(clock)
        yield counts.merged(summary)


def _clocks(clock: int | None, events: Sequence[Event]) -> list[int]:
    """The topic clock after each event (the latest `ts` so far), from `clock` before them."""
    clocks: list[int] = []
    for event in events:
        if clock is None or event.ts_us > clock:
            clock = event.ts_us
        clocks.append(clock)
    return clocks


def _series_only(
    series: SeriesStage,
    topic: str,
    events: Sequence[Event],
    clocks: Sequence[int],
    summaries: Iterable[Summary],
) -> list[UpdateDraft]:
    """`apply_events` for a topic whose one stage is its series, what every topic of a rule
    without groups, alerts or anomalies has: inlined like the plain rule, in `_staged`'s
    order (the update, then the points that closed at its clock), which the stage loop would
    cost instructions an event (docs/performance.md, 'What the aggregator's shape saves')."""
    buckets = series.series
    drafts: list[UpdateDraft] = []
    for e, now, summary in zip(events, clocks, summaries, strict=True):
        if e.value is not None:
            buckets.insert(e.ts_us, e.value, e.tags, now)
        if e.message is not None:
            buckets.message(e.ts_us, e.message.type, now)
        drafts.append(draft(topic, now, "event", event_json(e), summary, late=e.ts_us < now))
        if now >= buckets.next_close_us:
            drafts += series.closed_points(now)
    return drafts
