"""The series stage: a topic's (and each of its groups') open buckets of its rule's tiers.

A bucket closed by an event's or a tick's clock becomes a point draft right after that event's
or tick's update (`pushsvc.series.buckets`), so points are published in the same atomic step
as the updates of the events that close them. A rule's `anomaly` gives each series a
`BucketScorer` (`pushsvc.series.scoring`), which scores the closing points of its `every`
tier as they close here; the anomaly stage then reads the scores. A rule's `forecast` gives
each series a `BucketForecaster` (`pushsvc.series.forecasting`), which learns the closing
points of its tier; each close that learned one adds, after the points' drafts, the forecast's
draft (`forecast_draft`: at most `MESSAGE_STEPS` of its steps, and the model's outlook kept
for `GET /forecast`), in the same atomic step. The topic's buckets count its messages by
type (`SeriesBuckets.message`); a group's do not, as a group's windows do not.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pushsvc.core.event import value_of
from pushsvc.core.updates import (
    SeriesWrite,
    UpdateDraft,
    forecast_draft,
    forecast_write,
    point_draft,
)
from pushsvc.ingest import Event
from pushsvc.rules.analytics import Rule
from pushsvc.rules.point import Point
from pushsvc.rules.tiers import SeriesTier
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.series.forecasting import BucketForecaster
from pushsvc.series.scoring import BucketScorer
from pushsvc.stats.groups import Group, TopicGroups

from .step import EventStep, TickStep


@dataclass(slots=True)
class ForecastWork:
    """What an aggregator's forecasts cost, and how others are let run between them. `pause`
    (the aggregator's: `pushsvc.loop_pause.let_others_run` in a serving process) is called
    before each forecast is made, so that a close of many series' forecasts does not hold the
    loop producers and streams are served on. `made`, `points` and `bytes` count the forecasts
    made, the points their messages carry and their JSON (`/metrics`)."""

    pause: Callable[[], None] | None = None
    made: int = 0
    points: int = 0
    bytes: int = 0


class SeriesStage:
    """Open series buckets of one topic and of each of its live groups."""

    __slots__ = (
        "_grace_us", "_groups", "_lateness_us", "_retention", "_rule", "_tiers", "_topic",
        "_widths", "_work", "due",
        "group_series", "series",
    )  # fmt: skip

    def __init__(
        self,
        topic: str,
        rule: Rule,
        tiers: tuple[SeriesTier, ...],
        lateness_us: int,
        groups: TopicGroups | None,
        grace_us: int | None = None,
        work: ForecastWork | None = None,
    ) -> None:
        self._topic = topic
        self._work = work
        self._grace_us = grace_us
        self._rule = rule
        self._tiers = tiers
        self._lateness_us = lateness_us
        self._retention = {t.resolution_label: t.retention_us for t in tiers}
        self._widths = {t.resolution_label: t.resolution_us for t in tiers}
        self._groups = groups
        self.series = self.new_series()
        self.group_series: dict[str, SeriesBuckets] | None = None if groups is None else {}
        """By group id; None for a topic without groups."""
        # When each group's next bucket closes, (clock, group id), smallest first: a group's
        # buckets close on the topic clock, as the topic's do, without looking at every group
        # on every event. Entries go stale as buckets close; a stale one is skipped.
        self.due: list[tuple[int, str]] = []

    def new_series(self) -> SeriesBuckets:
        """Empty open buckets of the rule's tiers, scoring its `anomaly` tier if it has one."""
        rule = self._rule
        series = SeriesBuckets(
            self._tiers, self._lateness_us, rule.distinct, rule.top, self._grace_us
        )
        if rule.anomaly is not None:
            series.scorer = BucketScorer(rule.anomaly, max(rule.windows_us, default=0))
        if rule.forecast is not None:
            series.forecaster = BucketForecaster(rule.forecast)
        return series

    def restored_series(self, data: bytes, scores: bytes, forecast: bytes = b"") -> SeriesBuckets:
        """Open buckets from a checkpoint's `series`, `anomaly` and `forecast` parts."""
        rule = self._rule
        series = SeriesBuckets.restored(
            self._tiers, self._lateness_us, data, rule.distinct, rule.top, self._grace_us
        )
        if rule.anomaly is not None:
            keep = max(rule.windows_us, default=0)
            series.scorer = BucketScorer.restored(rule.anomaly, keep, scores)
        if rule.forecast is not None:
            series.forecaster = BucketForecaster.restored(rule.forecast, forecast)
        return series

    def restore_group(self, gid: str, data: bytes, scores: bytes, forecast: bytes = b"") -> None:
        """Rebuilding: a group's open buckets as a checkpoint holds them."""
        if self.group_series is not None:
            restored = self.group_series[gid] = self.restored_series(data, scores, forecast)
            _watch(self.due, gid, restored)

    def of_group(self, group: Group) -> SeriesBuckets:
        """The group's open buckets (a grouping topic's), made when first asked for."""
        kept = self.group_series
        assert kept is not None
        series = kept.get(group.id)
        if series is None:
            series = kept[group.id] = self.new_series()
        return series

    def all_series(self) -> Iterator[SeriesBuckets]:
        yield self.series
        if self.group_series is not None:
            yield from self.group_series.values()

    def on_event(self, step: EventStep) -> None:
        e, now = step.event, step.clock_us
        series = self.series
        series.insert(e.ts_us, value_of(e), e.tags, now)
        if e.message is not None:
            series.message(e.ts_us, e.message.type, now)
        if now >= series.next_close_us:
            step.follow += self._points(now, series.closed(now))
        group = step.group
        if group is not None:
            in_group = self.of_group(group)
            closes = in_group.next_close_us
            in_group.insert(e.ts_us, value_of(e), e.tags, now)
            if in_group.next_close_us != closes:
                _watch(self.due, group.id, in_group)
            if self.due and self.due[0][0] <= now:
                step.follow += self._group_points(now)

    def on_tick(self, step: TickStep) -> None:
        clock = step.clock_us
        if clock >= self.series.next_close_us:
            step.points += self._points(clock, self.series.closed(clock))
        if self.group_series is not None:
            step.points += self._group_points(clock)

    def on_message(self, event: Event, clock_us: int) -> list[UpdateDraft]:
        """A message without a value (which the other stages never see): counted in the
        topic's bucket; the drafts of the topic's buckets its clock `clock_us` closes, to
        follow its update, as for any event (a rebuild takes every bucket the restored clock
        passed as published: `caught_up`). A group's close at the next event or tick."""
        assert event.message is not None
        series = self.series
        series.message(event.ts_us, event.message.type, clock_us)
        if clock_us >= series.next_close_us:
            return self._points(clock_us, series.closed(clock_us))
        return []

    def replayed_message(self, event: Event) -> None:
        """Rebuilding: a message without a value that a checkpoint covers (`replayed`)."""
        assert event.message is not None
        self.series.message_replayed(event.ts_us, event.message.type)

    def replayed(self, event: Event, group: Group | None) -> None:
        """Rebuilding: an entry a checkpoint covers, into the topic's buckets and its group's
        (dropped where its bucket had closed by then: the checkpoint holds its merge)."""
        self.series.replayed(event.ts_us, value_of(event), event.tags)
        if event.message is not None:
            self.series.message_replayed(event.ts_us, event.message.type)
        if group is not None and self.group_series is not None:
            in_group = self.of_group(group)
            closes = in_group.next_close_us
            in_group.replayed(event.ts_us, value_of(event), event.tags)
            if in_group.next_close_us != closes:
                _watch(self.due, group.id, in_group)

    def caught_up(self, clock_us: int) -> None:
        """Rebuilding: the topic's updates reached `clock_us`; the buckets it closes were
        published before, so they close without drafts."""
        if clock_us >= self.series.next_close_us:
            self.series.closed(clock_us)

    def corrections_due(self) -> bool:
        """Whether a late event of the topic's or of a group's waits for its correction."""
        return any(series.corrections_due for series in self.all_series())

    def forget_groups(self, groups: Sequence[Group]) -> None:
        """Idle for the TTL (and the widest window): every bucket they had has closed."""
        if self.group_series is not None:
            for group in groups:
                self.group_series.pop(group.id, None)

    def _group_points(self, clock_us: int) -> list[UpdateDraft]:
        """The points of every group bucket the topic clock `clock_us` closes."""
        due, kept, groups = self.due, self.group_series, self._groups
        assert kept is not None and groups is not None
        drafts: list[UpdateDraft] = []
        while due and due[0][0] <= clock_us:
            closes, gid = heapq.heappop(due)
            series = kept.get(gid)
            group = groups.get(gid)
            if series is None or group is None or series.next_close_us != closes:
                continue  # stale: closed by a tick, or the group is gone
            drafts += self._points(clock_us, series.closed(clock_us), group, series)
            _watch(due, gid, series)
        return drafts

    def closed_points(self, clock_us: int) -> list[UpdateDraft]:
        """The drafts of the topic's points that close at `clock_us` (the topic's own: what
        `on_event` drafts for a topic without groups)."""
        return self._points(clock_us, self.series.closed(clock_us))

    def _points(
        self,
        clock_us: int,
        closed: Sequence[tuple[str, Point, int]],
        group: Group | None = None,
        series: SeriesBuckets | None = None,
    ) -> list[UpdateDraft]:
        """The drafts of the points just published at `clock_us` (a revision above 0: a
        correction), of the topic or of `group` (whose buckets are `series`), then the
        forecast's if they include its tier's."""
        retention = self._retention
        gid = "" if group is None else group.id
        key = None if group is None else group.key
        drafts = [
            point_draft(
                self._topic,
                clock_us,
                SeriesWrite(
                    resolution,
                    gid,
                    point.t_us,
                    point.packed(),
                    clock_us - retention[resolution] + 1,
                    revision,
                ),
                point.fields(self._widths[resolution]),
                key,
            )
            for resolution, point, revision in closed
        ]
        forecaster = (self.series if series is None else series).forecaster
        if forecaster is not None and any(label == forecaster.label for label, _, _ in closed):
            work = self._work
            if work is not None and work.pause is not None:
                work.pause()
            fields = forecaster.message_fields()
            write = forecast_write(forecaster.label, gid, forecaster.last_us, forecaster.kept())
            made = forecast_draft(self._topic, clock_us, write, fields, key)
            drafts.append(made)
            if work is not None:
                work.made += 1
                work.points += len(fields["points"])
                work.bytes += len(made.body)
        return drafts


def _watch(due: list[tuple[int, str]], gid: str, series: SeriesBuckets) -> None:
    """Be told when the group's next bucket closes."""
    if len(series):
        heapq.heappush(due, (series.next_close_us, gid))
