"""A topic's durable state as a `Checkpoint` (`pushsvc.core.checkpoint`), and back.

What the log cannot give back is saved: the long (sketch) windows and count windows of the
topic and of each group (`RuleStats.durable_state`), the groups' keys and admissions, the
open series buckets and their scorers, the alert instances and a session topic's own
statistics. Restoring puts them back and marks the topic as replaying: the log's entries up to
the checkpoint's position then feed the exact windows only, until `end_replay`.
"""

from __future__ import annotations

from pushsvc.alerts.states import TopicAlerts
from pushsvc.core.checkpoint import Checkpoint, GroupCheckpoint
from pushsvc.core.positions import LogPosition
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.stats import TopicWindows
from pushsvc.stats.compiled import RuleStats
from pushsvc.stats.groups import Group
from pushsvc.stats.unvalued import Unvalued

from .topic_state import Replay, TopicFactory, TopicState


def checkpoint_of(state: TopicState, topic: str, position: LogPosition) -> Checkpoint | None:
    """`topic`'s durable state as it stands (after the entry at `position`); None before the
    topic's first event."""
    clock = state.windows.clock_us
    if clock is None:
        return None
    series = None if state.series is None else state.series.series
    return Checkpoint(
        topic,
        position,
        clock,
        0 if state.groups is None else state.groups.sweep_slot,
        _durable(state.windows),
        _groups_of(state),
        _series_state(series),
        b"" if state.alerts is None else state.alerts.alerts.durable_state(),
        _scores_state(series),
        b"" if state.sessions is None else state.sessions.windows.durable_state(),
        _forecast_state(series),
        state.series_from,
    )


def _groups_of(state: TopicState) -> tuple[GroupCheckpoint, ...]:
    if state.groups is None:
        return ()
    kept = {} if state.series is None else (state.series.group_series or {})
    return tuple(
        GroupCheckpoint(
            g.id,
            dict(g.key),
            g.admitted,
            g.newest_us,
            g_clock,
            _durable(g.stats),
            _series_state(kept.get(g.id)),
            _scores_state(kept.get(g.id)),
            _forecast_state(kept.get(g.id)),
        )
        for g in state.groups
        if (g_clock := g.stats.clock_us) is not None
    )


def restore_into(
    state: TopicState, factory: TopicFactory, checkpoint: Checkpoint, wall_us: int
) -> None:
    """Put `checkpoint` into `state`, a topic's fresh state (at wall time `wall_us`). Without
    durable windows (a rule of exact windows only, or a topic without a value yet) the
    windows are made at the first value the replay brings (`TopicFactory.valued`); series of
    the server's tiers are there if the checkpoint has them (made at the topic's first
    value: their state is never empty)."""
    compiled = factory.compiled(state.rule)
    if checkpoint.state:
        state.windows = compiled.restored(checkpoint.state)
    else:
        state.windows = compiled.unvalued(checkpoint.clock_us)
    state.event_clock_us = checkpoint.clock_us
    state.wall_at_event_us = wall_us
    state.replay = Replay(checkpoint.position, checkpoint)
    if state.alerts is not None and checkpoint.alerts:
        alerts = state.alerts.alerts
        state.alerts.alerts = TopicAlerts.restored(alerts.topic, alerts.rules, checkpoint.alerts)
    if state.sessions is not None and checkpoint.sessions:
        # A checkpoint written before session topics kept long windows has none: those
        # start empty, the exact windows fill from the log as ever.
        state.sessions.windows.restore(checkpoint.sessions)
    if state.series is None and checkpoint.series and factory.lazy_series(state.rule):
        factory.with_series(state, checkpoint.topic)
        state.series_from = checkpoint.series_from
    state.awaits_value = isinstance(state.windows, Unvalued) or (
        state.series is None and factory.lazy_series(state.rule)
    )
    series = state.series
    if series is not None and checkpoint.series:
        series.series = series.restored_series(
            checkpoint.series, checkpoint.anomaly, checkpoint.forecast
        )
    if state.groups is not None:
        state.groups.sweep_slot = checkpoint.sweep_slot
        for saved in checkpoint.groups:
            stats = compiled.restored(saved.state)  # (a group has a value: never unvalued)
            state.groups.groups.restore(
                Group(saved.id, saved.key, stats, saved.admitted, saved.newest_us)
            )
            if series is not None and saved.series:
                series.restore_group(saved.id, saved.series, saved.anomaly, saved.forecast)


def horizon_of(state: TopicState) -> int | None:
    """The time at or before which no event of the topic is in an exact window of the topic
    or of its groups; None before its first event."""
    clock = state.windows.clock_us
    if clock is None:
        return None
    if state.groups is not None:
        clock = state.groups.oldest_clock(clock)
    horizon = clock - max((*state.rule.exact_windows_us, 0))
    # ...nor in a series bucket still open (the finest tier's keep their events).
    if state.series is not None:
        for series in state.series.all_series():
            oldest = series.oldest_open_us
            if oldest is not None and oldest <= horizon:
                horizon = oldest - 1
    return horizon


def _series_state(series: SeriesBuckets | None) -> bytes:
    return b"" if series is None else series.durable_state()


def _scores_state(series: SeriesBuckets | None) -> bytes:
    scorer = None if series is None else series.scorer
    return b"" if scorer is None else scorer.to_bytes()


def _forecast_state(series: SeriesBuckets | None) -> bytes:
    forecaster = None if series is None else series.forecaster
    return b"" if forecaster is None else forecaster.to_bytes()


def _durable(stats: TopicWindows | RuleStats | Unvalued) -> bytes:
    return stats.durable_state() if isinstance(stats, RuleStats) else b""
