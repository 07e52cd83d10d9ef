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

Series: a topic (and each of its groups) also keeps the open buckets of its rule's tiers
(`pushsvc.series.buckets`). A bucket closed by an event's or a tick's clock becomes a point
draft right after that event's or tick's update, so points are published in the same atomic
step as the updates of the events that close them.

Anomalies: a rule's `anomaly` gives the topic's (and each group's) series a `BucketScorer`
(`pushsvc.series.scoring`), which scores each closing point of its `every` tier. For such a
topic the buckets an event's or tick's clock closes are scored before its update is drafted,
so that the update's `anomaly_rate` (each time window's) counts them; the points still follow
the update. The scorers' state is part of the checkpoint, so a topic that scores is durable.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson

from pushsvc.alerts.states import AlertChange, TopicAlerts
from pushsvc.core.checkpoint import Checkpoint, GroupCheckpoint
from pushsvc.core.durations import duration_label
from pushsvc.core.positions import LogPosition
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import (
    GroupPart,
    SeriesWrite,
    UpdateDraft,
    alert_draft,
    deletion_draft,
    draft,
    point_draft,
)
from pushsvc.ingest import Event, event_json
from pushsvc.rules.analytics import Rule, Rules, default_rule
from pushsvc.rules.point import Point
from pushsvc.rules.tiers import SeriesTier
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.series.scoring import BucketScorer
from pushsvc.stats import STAT_KEYS, TopicWindows
from pushsvc.stats.compiled import CompiledRule, RuleStats
from pushsvc.stats.groups import Group, TopicGroups
from pushsvc.stats.session_stats import SessionWindows

Summary = TypeVar("Summary", bound=Mapping[str, Any])
"""Window label -> statistics, as an update gives them."""
WallClock = Callable[[], int]
"""Wall time in integer microseconds since the epoch."""


def sweep_interval_s(topic_ttl_us: int) -> float:
    """How often idle topics are looked for: a tenth of the TTL, at least once a minute, so a
    topic is forgotten within 1.1 TTL (60 s more for TTLs over ten minutes)."""
    return min(topic_ttl_us / 10, 60_000_000) / 1_000_000


@dataclass(slots=True)
class _Topic:
    windows: TopicWindows | RuleStats
    rule: Rule
    groups: TopicGroups | None
    # Event clock and wall clock at the last event: idle ticks move the clock by the wall
    # time elapsed since then. Not part of the replicated state: only the active aggregator
    # proposes ticks, and the log records the clocks it proposed.
    event_clock_us: int = 0
    wall_at_event_us: int = 0
    # Groups are looked at for forgetting once per slot of topic clock (a tenth of the TTL).
    sweep_slot: int = 0
    # Rebuilding from a checkpoint taken after this log position: entries up to it feed the
    # exact windows only (see `pushsvc.core.checkpoint`).
    replay_until: LogPosition | None = None
    # ...and the clock each group stood at then, which the replay brings it to at the end.
    replay_clocks: dict[str, int] | None = None
    # The checkpoint restored (while replaying): a deletion the checkpoint follows starts the
    # topic from it again (`delete`).
    restored_from: Checkpoint | None = None
    # Open series buckets of the topic and of each live group (by group id); None without
    # tiers.
    series: SeriesBuckets | None = None
    group_series: dict[str, SeriesBuckets] | None = None
    # When each group's next bucket closes, (clock, group id), smallest first: a group's
    # buckets close on the topic clock, as the topic's do, without looking at every group
    # on every event. Entries go stale as buckets close; a stale one is skipped.
    series_due: list[tuple[int, str]] | None = None
    # The alert instances of the topic and its groups; None when no alert matches the topic.
    alerts: TopicAlerts | None = None
    # A session topic's own statistics (`[[session]]`), over its exact and long time windows.
    sessions: SessionWindows | None = None


class Aggregator:
    """Statistics per topic (and group) as the rules ask. Not greenlet-safe: one driver."""

    def __init__(
        self,
        *,
        rules: Rules | None = None,
        windows_us: Sequence[int] = (),
        labels: Sequence[str] = (),
        stats: Sequence[str] = STAT_KEYS,
        wall_clock: WallClock,
        topic_ttl_us: int = 0,
        lateness_us: int = 5_000_000,
    ) -> None:
        """`rules`, or (tests, benchmarks) one set of `windows_us` with their `labels` and
        `stats` for every topic. `topic_ttl_us` (0: never) is how long a group may go without
        an event before it is forgotten. `lateness_us`: the allowed lateness, after which a
        series bucket can take no more events and closes."""
        if rules is None:
            if tuple(labels) != tuple(duration_label(w) for w in sorted(windows_us)):
                raise ValueError(f"labels {list(labels)} do not name windows {list(windows_us)}")
            rules = Rules((), default_rule(windows_us, stats))
        self.rules = rules
        self._compiled: dict[int, CompiledRule] = {}
        self._wall_clock = wall_clock
        self._topic_ttl_us = topic_ttl_us
        self._topics: dict[str, _Topic] = {}
        self._lateness_us = lateness_us
        self._tiers: dict[int, tuple[SeriesTier, ...]] = {}  # by rule number
        self._durable: dict[str, bool] = {}
        # (label, width) of each rule's time windows: what `anomaly_rate` is given for.
        self._rated_windows: dict[int, tuple[tuple[str, int], ...]] = {}
        self._derived_every = {rule.topic: rule.every_us for rule in rules.derives}
        self._session_steps = {
            rule.topic: () if rule.funnel is None else rule.funnel.steps for rule in rules.sessions
        }
        self.group_overflow = 0
        """Events this aggregator routed to an overflow group (`max_groups` reached)."""

    def _topic(self, topic: str) -> _Topic:
        state = self._topics.get(topic)
        if state is None:
            rule = self.rules.for_topic(topic)
            compiled = self._compiled.get(rule.number)
            if compiled is None:
                compiled = self._compiled[rule.number] = CompiledRule(rule)
            groups = (
                TopicGroups(compiled, idle_us=self._topic_ttl_us or 2**62) if rule.groups else None
            )
            state = self._topics[topic] = _Topic(compiled.new(), rule, groups)
            steps = self._session_steps.get(topic)
            if steps is not None:
                state.sessions = SessionWindows(
                    rule.exact_windows_us,
                    steps,
                    [rule.window_label(w) for w in rule.exact_windows_us],
                    long_us=rule.sketch_windows_us,
                    long_labels=[rule.window_label(w) for w in rule.sketch_windows_us],
                )
            matching = self.rules.alerts_for(topic)
            if matching:
                state.alerts = TopicAlerts(topic, matching)
            tiers = self._tiers_of(rule)
            if tiers:
                state.series = self._new_series(rule)
                if groups is not None:
                    state.group_series, state.series_due = {}, []
        return state

    def _tiers_of(self, rule: Rule) -> tuple[SeriesTier, ...]:
        tiers = self._tiers.get(rule.number)
        if tiers is None:
            tiers = self._tiers[rule.number] = self.rules.series_of(rule)
        return tiers

    def _new_series(self, rule: Rule) -> SeriesBuckets:
        """Empty open buckets of the rule's tiers, scoring its `anomaly` tier if it has one."""
        series = SeriesBuckets(self._tiers_of(rule), self._lateness_us, rule.distinct, rule.top)
        if rule.anomaly is not None:
            series.scorer = BucketScorer(rule.anomaly, max(rule.windows_us, default=0))
        return series

    def _restored_series(self, rule: Rule, data: bytes, scores: bytes) -> SeriesBuckets:
        """Open buckets from a checkpoint's `series` and `anomaly` parts."""
        series = SeriesBuckets.restored(
            self._tiers_of(rule), self._lateness_us, data, rule.distinct, rule.top
        )
        if rule.anomaly is not None:
            keep = max(rule.windows_us, default=0)
            series.scorer = BucketScorer.restored(rule.anomaly, keep, scores)
        return series

    def _group_series(self, state: _Topic, group: Group) -> SeriesBuckets | None:
        kept = state.group_series
        if kept is None:
            return None
        series = kept.get(group.id)
        if series is None:
            series = kept[group.id] = self._new_series(state.rule)
        return series

    def _group_points(self, state: _Topic, topic: str, clock_us: int) -> list[UpdateDraft]:
        """The points of every group bucket the topic clock `clock_us` closes."""
        due, kept, groups = state.series_due, state.group_series, state.groups
        assert due is not None and kept is not None and groups is not None
        drafts: list[UpdateDraft] = []
        while due and due[0][0] <= clock_us:
            closes, gid = heapq.heappop(due)
            series = kept.get(gid)
            group = groups.get(gid)
            if series is None or group is None or series.next_close_us != closes:
                continue  # stale: closed by a tick, or the group is gone
            drafts += self._points(state, topic, clock_us, series.close(clock_us), group)
            _watch(due, gid, series)
        return drafts

    def apply_events(
        self, topic: str, events: Sequence[Event], at: LogPosition = (0, 0)
    ) -> list[UpdateDraft]:
        """Apply a batch in order; one draft per event, with the statistics right after it.
        `at`: the batch's place in the event log (what admits a group, see `groups.py`)."""
        if not events:
            return []
        state = self._topic(topic)
        if state.replay_until is not None and at <= state.replay_until:
            self._replay_exact(state, events, at)
            return []
        windows = state.windows
        clock = windows.clock_us
        clocks: list[int] = []
        for event in events:
            if clock is None or event.ts_us > clock:
                clock = event.ts_us
            clocks.append(clock)
        summaries: Iterable[Mapping[str, object]]
        if isinstance(windows, RuleStats) and windows.tagged:
            # One summary at a time, each made as its draft is: see `insert_tagged`.
            summaries = windows.insert_tagged([(e.ts_us, e.value, e.tags) for e in events])
        else:
            summaries = windows.insert_many([(e.ts_us, e.value) for e in events])
        if state.sessions is not None:
            summaries = _with_sessions(state.sessions, events, clocks, summaries)
        state.event_clock_us = clocks[-1]
        state.wall_at_event_us = self._wall_clock()
        series = state.series
        alerts = state.alerts
        if state.groups is None:
            if series is None and alerts is None:
                return [
                    draft(topic, at_, "event", event_json(e), summary)
                    for e, at_, summary in zip(events, clocks, summaries, strict=True)
                ]
            if series is not None and series.scorer is not None:
                return self._scored_drafts(state, topic, events, clocks, summaries)
            drafts = []
            for e, now, summary in zip(events, clocks, summaries, strict=True):
                drafts.append(draft(topic, now, "event", event_json(e), summary))
                if series is not None:
                    series.insert(e.ts_us, e.value, e.tags)
                    if now >= series.next_close_us:
                        drafts += self._points(state, topic, now, series.close(now))
                if alerts is not None and (changes := alerts.evaluate(now, summary)):
                    drafts += _alert_drafts(now, changes)
            return drafts
        groups = state.groups
        if series is not None and series.scorer is not None:
            drafts, last_update = self._scored_group_drafts(
                state, topic, events, clocks, summaries, at
            )
        else:
            drafts = []
            last_update = 0  # the place of the last update among the drafts (points follow)
            for index, (e, now, summary) in enumerate(zip(events, clocks, summaries, strict=True)):
                group = groups.route(e.tags, (*at, index))
                part = GroupPart(group.id, group.key, _insert_and_summary(group, e, now))
                last_update = len(drafts)
                drafts.append(draft(topic, now, "event", event_json(e), summary, group=part))
                if series is not None:
                    series.insert(e.ts_us, e.value, e.tags)
                    if now >= series.next_close_us:
                        drafts += self._points(state, topic, now, series.close(now))
                    in_group = self._group_series(state, group)
                    assert in_group is not None and state.series_due is not None
                    closes = in_group.next_close_us
                    in_group.insert(e.ts_us, e.value, e.tags)
                    if in_group.next_close_us != closes:
                        _watch(state.series_due, group.id, in_group)
                    if state.series_due and state.series_due[0][0] <= now:
                        drafts += self._group_points(state, topic, now)
                if alerts is not None:
                    changes = alerts.evaluate(now, summary)
                    changes += alerts.evaluate(now, part.windows, group.id, group.key)
                    if changes:  # seldom: most evaluations change nothing
                        drafts += _alert_drafts(now, changes)
        self.group_overflow += groups.overflowed
        groups.overflowed = 0
        forgotten = self._sweep(state, clocks[-1])
        if forgotten:
            last = drafts[last_update]
            drafts[last_update] = last.forgetting([(g.id, g.key) for g in forgotten])
            if alerts is not None:
                for group in forgotten:
                    drafts += _alert_drafts(clocks[-1], alerts.forget_group(group.id, clocks[-1]))
        return drafts

    def _into_group_series(
        self, state: _Topic, topic: str, group: Group, e: Event, now: int
    ) -> list[UpdateDraft]:
        """The event into its group's series; the points of every group bucket the topic
        clock `now` closes. (`apply_events` has the same steps inline: a call per event
        costs the topics that score nothing.)"""
        in_group = self._group_series(state, group)
        assert in_group is not None and state.series_due is not None
        closes = in_group.next_close_us
        in_group.insert(e.ts_us, e.value, e.tags)
        if in_group.next_close_us != closes:
            _watch(state.series_due, group.id, in_group)
        if state.series_due and state.series_due[0][0] <= now:
            return self._group_points(state, topic, now)
        return []

    def _scored_group_drafts(
        self,
        state: _Topic,
        topic: str,
        events: Sequence[Event],
        clocks: Sequence[int],
        summaries: Iterable[Mapping[str, object]],
        at: LogPosition,
    ) -> tuple[list[UpdateDraft], int]:
        """`apply_events`' drafts for a grouping topic whose rule scores anomalies, and the
        place of the last update among them: as `_scored_drafts`, the topic's and the event's
        group's `anomaly_rate` count the buckets the event's clock closes."""
        series, alerts, groups = state.series, state.alerts, state.groups
        assert series is not None and series.scorer is not None and groups is not None
        scorer = series.scorer
        drafts: list[UpdateDraft] = []
        last_update = 0
        for index, (e, now, summary) in enumerate(zip(events, clocks, summaries, strict=True)):
            group = groups.route(e.tags, (*at, index))
            windows_of_group = _insert_and_summary(group, e, now)
            series.insert(e.ts_us, e.value, e.tags)
            points = []
            if now >= series.next_close_us:
                points += self._points(state, topic, now, series.close(now))
            points += self._into_group_series(state, topic, group, e, now)
            in_group = self._group_series(state, group)
            assert in_group is not None and in_group.scorer is not None
            rated = self._rated(state, summary, scorer, now)
            part = GroupPart(
                group.id, group.key, self._rated(state, windows_of_group, in_group.scorer, now)
            )
            last_update = len(drafts)
            drafts.append(draft(topic, now, "event", event_json(e), rated, group=part))
            drafts += points
            if alerts is not None:
                changes = alerts.evaluate(now, rated)
                changes += alerts.evaluate(now, part.windows, group.id, group.key)
                if changes:
                    drafts += _alert_drafts(now, changes)
        return drafts, last_update

    def _scored_drafts(
        self,
        state: _Topic,
        topic: str,
        events: Sequence[Event],
        clocks: Sequence[int],
        summaries: Iterable[Mapping[str, object]],
    ) -> list[UpdateDraft]:
        """`apply_events`' drafts for a topic without groups whose rule scores anomalies: the
        buckets an event's clock closes are scored before its update is drafted, so that its
        `anomaly_rate` counts them; the points follow the update, as for any topic. (A loop
        of its own: the other topics' loop pays nothing for it.)"""
        series, alerts = state.series, state.alerts
        assert series is not None and series.scorer is not None
        scorer = series.scorer
        drafts: list[UpdateDraft] = []
        for e, now, summary in zip(events, clocks, summaries, strict=True):
            series.insert(e.ts_us, e.value, e.tags)
            points = []
            if now >= series.next_close_us:
                points = self._points(state, topic, now, series.close(now))
            rated = self._rated(state, summary, scorer, now)
            drafts.append(draft(topic, now, "event", event_json(e), rated))
            drafts += points
            if alerts is not None and (changes := alerts.evaluate(now, rated)):
                drafts += _alert_drafts(now, changes)
        return drafts

    def _points(
        self,
        state: _Topic,
        topic: str,
        clock_us: int,
        closed: Sequence[tuple[str, Point]],
        group: Group | None = None,
    ) -> list[UpdateDraft]:
        """The drafts of the points just closed at `clock_us`, of the topic or of `group`."""
        retention = {t.resolution_label: t.retention_us for t in self._tiers_of(state.rule)}
        gid = "" if group is None else group.id
        key = None if group is None else group.key
        return [
            point_draft(
                topic,
                clock_us,
                SeriesWrite(
                    resolution,
                    gid,
                    point.t_us,
                    point.packed(),
                    clock_us - retention[resolution] + 1,
                ),
                point.fields(),
                key,
            )
            for resolution, point in closed
        ]

    def _replay_exact(self, state: _Topic, events: Sequence[Event], at: LogPosition) -> None:
        windows = state.windows
        for index, event in enumerate(events):
            if isinstance(windows, RuleStats):
                windows.insert_exact(event.ts_us, event.value, event.tags)
            else:
                windows.insert(event.ts_us, event.value)
            if state.series is not None:
                state.series.replayed(event.ts_us, event.value, event.tags)
            if state.sessions is not None:
                state.sessions.insert_exact(event.ts_us, event.tags)
            if state.groups is not None:
                group = state.groups.route_as_then(event.tags, (*at, index))
                clock = windows.clock_us
                if group is not None and clock is not None:
                    _replay_into(group, event)
                    if (in_group := self._group_series(state, group)) is not None:
                        closes = in_group.next_close_us
                        in_group.replayed(event.ts_us, event.value, event.tags)
                        if in_group.next_close_us != closes and state.series_due is not None:
                            _watch(state.series_due, group.id, in_group)

    # -- checkpoints -------------------------------------------------------------------

    def durable(self, topic: str) -> bool:
        """Whether `topic` keeps state the log cannot give back (checkpointed)."""
        # Asked for every log entry applied; the rules, hence the answer, never change.
        known = self._durable.get(topic)
        if known is None:
            if len(self._durable) >= 65_536:
                self._durable.clear()  # bounded: topics come and go
            known = self._durable[topic] = self._is_durable(topic)
        return known

    def _is_durable(self, topic: str) -> bool:
        rule = self.rules.for_topic(topic)
        # Coarser series tiers are built from the finest one's closed buckets: their open
        # buckets outlive the log.
        tiers = len(self._tiers_of(rule))
        alerts = bool(self.rules.alerts_for(topic))
        # An anomaly detector's state is the whole past of its series, which no log keeps.
        scored = rule.anomaly is not None and tiers > 0
        return bool(
            rule.groups or rule.last or rule.sketch_windows_us or tiers > 1 or alerts or scored
        )

    def horizon_us(self, topic: str) -> int | None:
        """The time at or before which no event of `topic` is in an exact window of the topic
        or of its groups (a group lags its topic until a tick brings it along); what a
        rebuild needs of the log besides the checkpoint. None for a topic not held."""
        state = self._topics.get(topic)
        if state is None or (clock := state.windows.clock_us) is None:
            return None
        if state.groups is not None:
            for group in state.groups:
                lagging = group.stats.clock_us
                if lagging is not None and lagging < clock:
                    clock = lagging
        horizon = clock - max((*state.rule.exact_windows_us, 0))
        # ...nor in a series bucket still open (the finest tier's keep their events).
        for series in (state.series, *(state.group_series or {}).values()):
            oldest = None if series is None else series.oldest_open_us
            if oldest is not None and oldest <= horizon:
                horizon = oldest - 1
        return horizon

    def checkpoint(self, topic: str, position: LogPosition) -> Checkpoint | None:
        """`topic`'s durable state as it stands (after the entry at `position`)."""
        state = self._topics.get(topic)
        clock = None if state is None else state.windows.clock_us
        if state is None or clock is None:
            return None
        windows = state.windows
        groups: tuple[GroupCheckpoint, ...] = ()
        kept = state.group_series or {}
        if state.groups is not None:
            groups = tuple(
                GroupCheckpoint(
                    g.id,
                    dict(g.key),
                    g.admitted,
                    g.newest_us,
                    g_clock,
                    _durable(g.stats),
                    _series_state(kept.get(g.id)),
                    _scores_state(kept.get(g.id)),
                )
                for g in state.groups
                if (g_clock := g.stats.clock_us) is not None
            )
        return Checkpoint(
            topic,
            position,
            clock,
            state.sweep_slot,
            _durable(windows),
            groups,
            _series_state(state.series),
            b"" if state.alerts is None else state.alerts.durable_state(),
            _scores_state(state.series),
            b"" if state.sessions is None else state.sessions.durable_state(),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Rebuilding: start `checkpoint.topic` from its checkpoint; the log's entries up to its
        position then feed only the exact windows, until `end_replay`."""
        topic = checkpoint.topic
        self._topics.pop(topic, None)
        state = self._topic(topic)
        compiled = self._compiled[state.rule.number]
        state.windows = compiled.restored(checkpoint.state)
        if not isinstance(state.windows, RuleStats):
            state.windows.start_at(checkpoint.clock_us)
        state.sweep_slot = checkpoint.sweep_slot
        state.event_clock_us = checkpoint.clock_us
        state.wall_at_event_us = self._wall_clock()
        state.replay_until = checkpoint.position
        state.restored_from = checkpoint
        if state.alerts is not None and checkpoint.alerts:
            state.alerts = TopicAlerts.restored(topic, state.alerts.rules, checkpoint.alerts)
        if state.sessions is not None and checkpoint.sessions:
            # A checkpoint written before session topics kept long windows has none: those
            # start empty, the exact windows fill from the log as ever.
            state.sessions.restore(checkpoint.sessions)
        tiers = self._tiers_of(state.rule)
        if tiers and checkpoint.series:
            state.series = self._restored_series(state.rule, checkpoint.series, checkpoint.anomaly)
        if state.groups is not None:
            for saved in checkpoint.groups:
                stats = compiled.restored(saved.state)
                state.groups.restore(
                    Group(saved.id, saved.key, stats, saved.admitted, saved.newest_us)
                )
                if state.group_series is not None and saved.series:
                    restored = self._restored_series(state.rule, saved.series, saved.anomaly)
                    state.group_series[saved.id] = restored
                    assert state.series_due is not None
                    _watch(state.series_due, saved.id, restored)

    def end_replay(self) -> None:
        """The rebuild's replay is over: exact windows join their durable parts' clock."""
        for state in self._topics.values():
            if state.replay_until is None:
                continue
            state.replay_until = None
            state.restored_from = None
            if isinstance(state.windows, RuleStats):
                state.windows.catch_up()
            if state.sessions is not None and state.windows.clock_us is not None:
                state.sessions.advance(state.windows.clock_us)
            clocks, state.replay_clocks = state.replay_clocks or {}, None
            for group in state.groups or ():
                if isinstance(group.stats, RuleStats):
                    group.stats.catch_up()
                elif (clock := clocks.get(group.id)) is not None:
                    if group.stats.clock_us is None:
                        group.stats.start_at(clock)
                    else:
                        group.stats.advance(clock)

    def due_ticks(self, derived_through: Mapping[str, int] | None = None) -> dict[str, int]:
        """The clocks an idle tick would move topics to now: each topic's last event clock
        plus the wall time since it arrived, where that is ahead of the topic's clock and a
        window holds an event or an alert instance of the topic is pending or firing (its
        `for` and `keep_firing_for` run on that clock, empty windows or not); and a grouping
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
            alerts = state.alerts
            if clock > current and (
                len(state.windows) or (alerts is not None and alerts.any_live())
            ):
                due[topic] = clock
            elif state.groups is not None and any(
                g.stats.clock_us != current and len(g.stats) for g in state.groups
            ):
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
        drafts = []
        for topic, clock in clocks.items():
            state = self._topics.get(topic)
            if state is None:
                continue
            if state.replay_until is not None and at is not None and at <= state.replay_until:
                # A checkpointed entry: it moves the exact windows' clock as it moved the
                # topic's then; one past the checkpoint's clock found no topic to move then
                # (it came before the topic's first event), so it moves nothing now.
                if clock <= state.event_clock_us:
                    state.windows.advance(clock)
                    if state.sessions is not None:
                        state.sessions.advance(clock)
                continue
            changed = state.windows.advance(clock)
            if state.sessions is not None:
                state.sessions.advance(clock)
            series = state.series
            alerts = state.alerts
            scorer = None if series is None else series.scorer
            points = []
            if series is not None and clock >= series.next_close_us:
                points += self._points(state, topic, clock, series.close(clock))
            if state.groups is None:
                # A scored bucket closed: the windows' `anomaly_rate` moved.
                changed = changed or (scorer is not None and bool(points))
                if changed or (alerts is not None and alerts.live()):
                    summary = self._topic_summary(state, clock)
                    if changed:
                        drafts.append(draft(topic, clock, "tick", None, summary))
                    if alerts is not None:
                        drafts += _alert_drafts(clock, alerts.evaluate(clock, summary))
                drafts += points
                continue
            if series is not None:
                points += self._group_points(state, topic, clock)
            parts = [
                GroupPart(g.id, g.key, self._group_summary(state, g, clock))
                for g in state.groups
                if g.stats.advance(clock)
            ]
            if alerts is not None:
                # Evaluated where a window changed, and where an instance is live: the clock
                # alone moves a pending instance to firing, or a cleared one to resolved.
                changes = []
                if changed or alerts.live():
                    changes += alerts.evaluate(clock, self._topic_summary(state, clock))
                evaluated = {part.id for part in parts}
                for part in parts:
                    changes += alerts.evaluate(clock, part.windows, part.id, part.key)
                for group in state.groups:
                    if group.id not in evaluated and alerts.live(group.id):
                        changes += alerts.evaluate(
                            clock, self._group_summary(state, group, clock), group.id, group.key
                        )
                # Appended after the tick's update below, with the points.
            forgotten = self._sweep(state, clock)
            if changed or parts or forgotten:
                summary = self._topic_summary(state, clock)
                tick = draft(topic, clock, "tick", None, summary, groups=parts)
                drafts.append(
                    tick.forgetting([(g.id, g.key) for g in forgotten]) if forgotten else tick
                )
            drafts += points
            if alerts is not None:
                for group in forgotten:
                    changes += alerts.forget_group(group.id, clock)
                drafts += _alert_drafts(clock, changes)
        return drafts

    def _topic_summary(self, state: _Topic, clock_us: int) -> Mapping[str, Any]:
        """The topic's statistics as its updates give them (with `anomaly_rate` if scored, and a
        session topic's own)."""
        summary = _summary(state)
        scorer = None if state.series is None else state.series.scorer
        return summary if scorer is None else self._rated(state, summary, scorer, clock_us)

    def _group_summary(self, state: _Topic, group: Group, clock_us: int) -> dict[str, Any]:
        """A group's statistics as its updates give them (with `anomaly_rate` if scored)."""
        summary = group.stats.summary()
        if state.rule.anomaly is None or state.group_series is None:
            return summary
        series = state.group_series.get(group.id)
        if series is not None and series.scorer is not None:
            return self._rated(state, summary, series.scorer, clock_us)
        return summary

    def _rated(
        self, state: _Topic, summary: Summary, scorer: BucketScorer, clock_us: int
    ) -> Summary:
        """`summary` with each time window's `anomaly_rate` (`pushsvc.series.anomaly_rate`):
        new dicts, never the windows' own."""
        out = dict(summary)
        for label, width in self._time_windows(state.rule):
            stats = out.get(label)
            if stats is not None:
                out[label] = {**stats, "anomaly_rate": scorer.flags.rate(clock_us, width)}
        return cast(Summary, out)

    def _time_windows(self, rule: Rule) -> tuple[tuple[str, int], ...]:
        labels = self._rated_windows.get(rule.number)
        if labels is None:
            labels = tuple((rule.window_label(w), w) for w in rule.windows_us)
            self._rated_windows[rule.number] = labels
        return labels

    def _sweep(self, state: _Topic, clock_us: int) -> list[Group]:
        """Forget the topic's idle groups, looking once per slot of a tenth of the TTL of
        topic clock (deterministic: every aggregator looks at the same entries)."""
        if state.groups is None or not self._topic_ttl_us:
            return []
        slot = clock_us // max(1, self._topic_ttl_us // 10)
        if slot == state.sweep_slot:
            return []
        state.sweep_slot = slot
        idle = state.groups.idle(clock_us)
        state.groups.forget(idle)
        if state.group_series is not None:
            # Idle for the TTL (and the widest window): every bucket it had has closed.
            for group in idle:
                state.group_series.pop(group.id, None)
        return idle

    def tick(self, derived_through: Mapping[str, int] | None = None) -> list[UpdateDraft]:
        """Apply the ticks due now (one process: nothing to log first)."""
        return self.apply_ticks(self.due_ticks(derived_through))

    def restore_clock(self, topic: str, clock_us: int) -> None:
        """Rebuilding: after the logged events, move the topic's clock to where it stood
        (its latest update's), without drafts. A topic none of whose events is left in the
        log (every one had left every window) comes back empty at that clock, as ticks had
        left it."""
        state = self._topics.get(topic)
        if state is None:
            state = self._topic(topic)
            state.windows.start_at(clock_us)
            state.wall_at_event_us = self._wall_clock()
        else:
            state.windows.advance(clock_us)
        if state.sessions is not None:
            state.sessions.advance(clock_us)
        if state.series is not None and clock_us >= state.series.next_close_us:
            state.series.close(clock_us)  # published before: the updates reached this clock
        state.event_clock_us = max(state.event_clock_us, clock_us)

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
            if state.alerts is not None and state.alerts.any_live():
                continue  # an alert about it is pending or firing: forgetting would drop it
            widest = max((*state.rule.windows_us, 0))
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
        restored = state.restored_from
        if restored is not None and state.replay_until is not None and at <= state.replay_until:
            self.restore(restored)
            return []
        clock = state.windows.clock_us
        if clock is None:
            clock = state.event_clock_us
        drafts = [deletion_draft(topic, clock)]
        if state.alerts is not None:
            drafts += _alert_drafts(clock, state.alerts.forget_all(clock))
        return drafts

    def clock(self, topic: str) -> int | None:
        state = self._topics.get(topic)
        return None if state is None else state.windows.clock_us

    def topics(self) -> list[str]:
        return list(self._topics)

    def group_count(self) -> int:
        """Live groups over every topic."""
        return sum(len(s.groups) for s in self._topics.values() if s.groups is not None)


def _summary(state: _Topic) -> Mapping[str, Any]:
    """The topic's statistics now, with a session topic's own."""
    summary = state.windows.summary()
    if state.sessions is None:
        return summary
    return _merged(summary, state.sessions.summary())


def _merged(summary: Mapping[str, Any], extra: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        label: {**stats, **extra[label]} if label in extra else stats
        for label, stats in summary.items()
    }


def _with_sessions(
    sessions: SessionWindows,
    events: Sequence[Event],
    clocks: Sequence[int],
    summaries: Iterable[Mapping[str, object]],
) -> Iterator[Mapping[str, object]]:
    """Each summary with the session statistics right after its event (lazily: summaries
    are made one at a time, see `insert_tagged`)."""
    for event, clock, summary in zip(events, clocks, summaries, strict=True):
        sessions.insert(event.ts_us, event.tags)
        sessions.advance(clock)
        yield _merged(summary, sessions.summary())


def _insert_and_summary(group: Group, event: Event, clock_us: int) -> dict[str, dict[str, Any]]:
    """An event into its group, on the topic's clock, and the group's statistics after it:
    the group is seen at `clock_us` first, so an event older than the topic clock is a late
    one for the group too. One call, so that the generated code loads the group's state once
    for both (`insert_and_summary`)."""
    stats = group.stats
    ts_us = event.ts_us
    if ts_us < clock_us:
        if stats.clock_us is None:
            stats.start_at(clock_us)  # a new group's first event is late for it too
        else:
            stats.advance(clock_us)
    if isinstance(stats, RuleStats):
        summary = stats.insert_and_summary(ts_us, event.value, event.tags)
    else:
        summary = stats.insert_and_summary(ts_us, event.value)
    if ts_us > group.newest_us:
        group.newest_us = ts_us
    return summary


def _replay_into(group: Group, event: Event) -> None:
    """A rebuild's replay of an entry a checkpoint covers, into its group's exact windows.
    Not advanced: the group's clock then is in the checkpoint, and `end_replay` brings its
    exact windows there (an event older than it is in the same windows either way)."""
    stats = group.stats
    if isinstance(stats, RuleStats):
        stats.insert_exact(event.ts_us, event.value, event.tags)
    else:
        stats.insert(event.ts_us, event.value)


def _alert_drafts(clock_us: int, changes: list[AlertChange]) -> list[UpdateDraft]:
    """The `_alerts` messages of these changes, published at `clock_us`."""
    return [
        alert_draft(
            ALERTS,
            clock_us,
            change.body(),
            f"{change.alert}\x1f{change.topic}\x1f{orjson.dumps(change.group).decode()}",
            change.state in ("pending", "firing"),
        )
        for change in changes
    ]


def _watch(due: list[tuple[int, str]], gid: str, series: SeriesBuckets) -> None:
    """Be told when the group's next bucket closes."""
    if len(series):
        heapq.heappush(due, (series.next_close_us, gid))


def _series_state(series: SeriesBuckets | None) -> bytes:
    return b"" if series is None else series.durable_state()


def _scores_state(series: SeriesBuckets | None) -> bytes:
    scorer = None if series is None else series.scorer
    return b"" if scorer is None else scorer.to_bytes()


def _durable(stats: TopicWindows | RuleStats) -> bytes:
    return stats.durable_state() if isinstance(stats, RuleStats) else b""
