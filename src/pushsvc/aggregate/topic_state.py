"""One topic's state in the aggregator: its windows, and the stages its rule asks for.

`TopicFactory` builds a topic's stages from its rule, once per topic, in their one order:
sessions, groups, series, anomaly, alerts (`pushsvc.aggregate.stages`). A topic whose rule
asks for none of them has no stage at all, and the aggregator drafts its updates on a path
of its own (`Aggregator.apply_events`).

A topic costs what it holds. Until its first value a topic keeps no windows of values (its
clock and their empty summary: `pushsvc.stats.unvalued`), and no series of the server's
tiers (`--series`, which a rule that names no tiers of its own gets): those are made by
`TopicFactory.valued` at the log entry that brings its first value, so a topic of messages
only (a channel per user) holds its counts by type and little else. Tiers a rule names
(or that its `anomaly` or `forecast` reads) are the rule asking for series of its topics'
messages too: those are kept from the topic's first event. Made at an entry of the log,
both are made again at the same entry by a rebuild (a checkpoint saying whether the topic
has series: `topic_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pushsvc.alerts.states import TopicAlerts
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.lateness import series_lateness_us
from pushsvc.core.positions import LogPosition
from pushsvc.rules.analytics import Rule, Rules
from pushsvc.rules.tiers import SeriesTier
from pushsvc.stats import TopicWindows
from pushsvc.stats.compiled import CompiledRule, RuleStats
from pushsvc.stats.groups import Group, TopicGroups
from pushsvc.stats.message_counts import MessageCounts
from pushsvc.stats.session_stats import SessionWindows
from pushsvc.stats.unvalued import Unvalued

from .stages.alerts import AlertStage
from .stages.anomaly import AnomalyStage
from .stages.groups import GroupStage
from .stages.series import ForecastWork, SeriesStage
from .stages.sessions import SessionStage
from .stages.step import Stage, Summary


@dataclass(slots=True, frozen=True)
class Replay:
    """Rebuilding from a checkpoint taken after log position `until`: entries up to it feed
    the exact windows only (see `pushsvc.core.checkpoint`). `restored_from`: the checkpoint,
    which a deletion it follows starts the topic from again (`Aggregator.delete`)."""

    until: LogPosition
    restored_from: Checkpoint


@dataclass(slots=True)
class TopicState:
    windows: TopicWindows | RuleStats | Unvalued
    rule: Rule
    stages: tuple[Stage, ...]
    """Every stage below that the rule asks for, in the order they see an event or a tick."""
    groups: GroupStage | None = None
    series: SeriesStage | None = None
    anomaly: AnomalyStage | None = None
    alerts: AlertStage | None = None
    sessions: SessionStage | None = None
    # Event clock and wall clock at the last event: idle ticks move the clock by the wall
    # time elapsed since then. Not part of the replicated state: only the active aggregator
    # proposes ticks, and the log records the clocks it proposed.
    event_clock_us: int = 0
    wall_at_event_us: int = 0
    replay: Replay | None = None
    messages: MessageCounts | None = None
    """The topic's messages by type per exact window, from its first message on."""
    series_from: LogPosition | None = None
    """The log entry its series of the server's tiers were made at (its first value's), None
    where its series came with the topic: a rebuild's replay feeds them no earlier entry."""
    awaits_value: bool = False
    """Whether what the topic keeps of values (its windows, the server's series tiers) is
    still to be made, at its first value (`TopicFactory.valued`)."""

    def message_counts(self) -> MessageCounts:
        """`messages`, made at the topic's first message, at the topic's clock."""
        counts = self.messages
        if counts is None:
            counts = self.messages = MessageCounts(*_message_windows(self.rule))
            if self.windows.clock_us is not None:
                counts.advance(self.windows.clock_us)
        return counts

    def holds_messages(self) -> bool:
        """Whether a window still counts a message (idle ticks must slide it)."""
        return self.messages is not None and len(self.messages) > 0

    def summary(self, clock_us: int) -> Summary:
        """The topic's statistics as its updates give them (a session topic's own merged in,
        and `anomaly_rate` if scored)."""
        summary: Summary = self.windows.summary()
        if self.messages is not None:
            self.messages.advance(clock_us)
            summary = self.messages.merged(summary)
        if self.sessions is not None:
            summary = self.sessions.with_sessions(summary)
        if self.anomaly is not None:
            summary = self.anomaly.topic_rated(summary, clock_us)
        return summary

    def group_summary(self, group: Group, clock_us: int) -> Summary:
        """A group's statistics as its updates give them (with `anomaly_rate` if scored)."""
        if self.anomaly is not None:
            return self.anomaly.group_summary(group, clock_us)
        return group.stats.summary()

    def replaying(self, at: LogPosition | None) -> bool:
        """Whether the entry at `at` is one the checkpoint being rebuilt from covers."""
        return self.replay is not None and at is not None and at <= self.replay.until


_Widths = tuple[tuple[int, ...], tuple[str, ...]]
_MESSAGE_WINDOWS: dict[tuple[tuple[int, ...], tuple[str, ...], int], _Widths] = {}


def _message_windows(rule: Rule) -> _Widths:
    """The widths and labels of `rule`'s exact time windows, one pair shared by every topic
    of the rule (a topic per user holds little else: no copy of them each)."""
    key = (rule.windows_us, rule.window_names, rule.exact_up_to_us)
    found = _MESSAGE_WINDOWS.get(key)
    if found is None:
        widths = rule.exact_windows_us
        labels = tuple(rule.window_label(w) for w in widths)
        found = _MESSAGE_WINDOWS[key] = (widths, labels)
    return found


class TopicFactory:
    """Builds topics' states from the rules: each rule compiled once, its tiers and windows
    looked up once."""

    def __init__(
        self,
        rules: Rules,
        *,
        topic_ttl_us: int,
        lateness_us: int,
        forecast_work: ForecastWork | None = None,
    ) -> None:
        self.rules = rules
        self.forecast_work = forecast_work
        """Shared by every topic's series stage: its forecasts' pause and counts."""
        self._topic_ttl_us = topic_ttl_us
        self._lateness_us = lateness_us
        self._compiled: dict[int, CompiledRule] = {}
        self._tiers: dict[int, tuple[SeriesTier, ...]] = {}  # by rule number
        # (label, width) of each rule's time windows: what `anomaly_rate` is given for.
        self._rated_windows: dict[int, tuple[tuple[str, int], ...]] = {}
        self._session_steps = {
            rule.topic: () if rule.funnel is None else rule.funnel.steps for rule in rules.sessions
        }

    def compiled(self, rule: Rule) -> CompiledRule:
        compiled = self._compiled.get(rule.number)
        if compiled is None:
            compiled = self._compiled[rule.number] = CompiledRule(rule)
        return compiled

    def tiers(self, rule: Rule) -> tuple[SeriesTier, ...]:
        tiers = self._tiers.get(rule.number)
        if tiers is None:
            tiers = self._tiers[rule.number] = self.rules.series_of(rule)
        return tiers

    def new(self, topic: str) -> TopicState:
        """A topic's empty state, with a stage for each feature its rule asks for."""
        rule = self.rules.for_topic(topic)
        compiled = self.compiled(rule)
        state = TopicState(compiled.unvalued(), rule, (), awaits_value=True)
        stages: list[Stage] = []
        groups = None
        steps = self._session_steps.get(topic)
        if steps is not None:
            state.sessions = SessionStage(
                SessionWindows(
                    rule.exact_windows_us,
                    steps,
                    [rule.window_label(w) for w in rule.exact_windows_us],
                    long_us=rule.sketch_windows_us,
                    long_labels=[rule.window_label(w) for w in rule.sketch_windows_us],
                )
            )
            stages.append(state.sessions)
        if rule.groups:
            groups = TopicGroups(compiled, idle_us=self._topic_ttl_us or 2**62)
            state.groups = GroupStage(groups, self._topic_ttl_us)
            stages.append(state.groups)
        if self.tiers(rule) and not self.lazy_series(rule):
            state.series = self._series(topic, rule, groups)
            stages.append(state.series)
            if rule.anomaly is not None:
                windows = self._time_windows(rule)
                state.anomaly = AnomalyStage(state.series, windows, grouping=groups is not None)
                stages.append(state.anomaly)
        matching = self.rules.alerts_for(topic)
        if matching:
            state.alerts = AlertStage(
                TopicAlerts(topic, matching), groups, state.series, rule.forecast
            )
            stages.append(state.alerts)
        state.stages = tuple(stages)
        return state

    def lazy_series(self, rule: Rule) -> bool:
        """Whether `rule`'s topics keep series from their first value only: they have the
        server's tiers (the rule names none), which no anomaly score or forecast reads."""
        return (
            (rule.number == 0 or rule.series is None)
            and rule.anomaly is None
            and rule.forecast is None
            and bool(self.tiers(rule))
        )

    def valued(self, state: TopicState, topic: str, at: LogPosition) -> None:
        """The topic's first value is coming: make its windows of values, at its clock, and
        its series of the server's tiers, if its rule has them (before its alerts, which
        read no series of these: no forecast)."""
        state.awaits_value = False
        if isinstance(state.windows, Unvalued):
            state.windows = self.compiled(state.rule).valued(state.windows)
        if state.series is None and self.lazy_series(state.rule):
            self.with_series(state, topic)
            state.series_from = at

    def with_series(self, state: TopicState, topic: str) -> SeriesStage:
        """Give `state` its series stage (the server's tiers), in its place among its
        stages."""
        groups = None if state.groups is None else state.groups.groups
        series = state.series = self._series(topic, state.rule, groups)
        kept = (state.sessions, state.groups, series, state.anomaly, state.alerts)
        state.stages = tuple(stage for stage in kept if stage is not None)
        return series

    def _series(self, topic: str, rule: Rule, groups: TopicGroups | None) -> SeriesStage:
        # A bucket is published once the server's lateness (`--grace`) has passed, and
        # kept until its topic's grace has: a late event within it is published as a
        # correction. A rule that scores or forecasts its points publishes them at its
        # grace (a model learns each bucket once, right).
        grace = self._lateness_us if rule.grace_us is None else rule.grace_us
        final = rule.anomaly is not None or rule.forecast is not None
        lateness = series_lateness_us(grace, self._lateness_us, final)
        return SeriesStage(
            topic, rule, self.tiers(rule), lateness, groups, grace, self.forecast_work
        )

    def _time_windows(self, rule: Rule) -> tuple[tuple[str, int], ...]:
        labels = self._rated_windows.get(rule.number)
        if labels is None:
            labels = tuple((rule.window_label(w), w) for w in rule.windows_us)
            self._rated_windows[rule.number] = labels
        return labels
