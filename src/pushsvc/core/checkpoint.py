"""A topic's durable state at a log position: what a rebuild cannot get back from the log.

The log keeps an entry while an event of it may still be in an exact time window, which is
all a topic without a rule needs. Three things outlive that horizon:

* count windows (the last N events, whatever their age);
* sketch windows (hours or days of sub-buckets: the log must not be that long);
* the group registry (which combinations are live groups: first come, first served);
* the open buckets of the coarser series tiers (an hour's or a day's bucket, built from the
  finest tier's closed buckets; the finest tier's open buckets come back from the log);
* the anomaly detector of each scored series (a rule's `anomaly`): it has learnt from every
  point of the series so far;
* a session topic's own statistics in its long windows, and its `active`
  (`SessionWindows.durable_state`).

So the active aggregator saves, every few seconds, a *checkpoint* of each topic that has
any of them: those parts exactly as they stand after log entry `position`, with the topic
clock and every live group's identity. A cold aggregator restores the checkpoint, then
replays the log: entries up to `position` only into the exact windows (the checkpoint holds
the rest), routing each event to the group it went to then (`TopicGroups.route_as_then`);
entries after it in full. The log is trimmed no further than the oldest checkpoint still
needs (`ShardRunner`).

A checkpoint is valid whoever writes it: every aggregator applying the same entries holds
the same state. It must only never go backwards, and never claim a position the updates
have not reached (the publish of those entries would be lost): the shard runner writes one
only once everything it applied is published, through a fenced script.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from pushsvc.core.positions import EventPosition as Position

__all__ = ["Checkpoint", "GroupCheckpoint"]

_HEAD = b"head"
_TOPIC = b"topic"
_GROUP = b"group:"
_SERIES = b"series"
_ALERTS = b"alerts"
_GROUP_SERIES = b"series:"
_ANOMALY = b"anomaly"
_GROUP_ANOMALY = b"anomaly:"
_SESSIONS = b"sessions"
_FORECAST = b"forecast"
_GROUP_FORECAST = b"forecast:"


@dataclass(frozen=True, slots=True)
class GroupCheckpoint:
    """One live group: its identity, where it was admitted, its newest event time, its clock
    (a group lags its topic until a tick brings it along), and its durable parts (empty when
    its rule keeps only exact time windows)."""

    id: str
    key: dict[str, str | None]
    admitted: Position
    newest_us: int
    clock_us: int
    state: bytes
    series: bytes = b""
    """Its open series buckets (`SeriesBuckets.durable_state`), empty without tiers."""
    anomaly: bytes = b""
    """Its series' anomaly detector (`BucketScorer.to_bytes`), empty when nothing is scored."""
    forecast: bytes = b""
    """Its series' forecast model (`BucketForecaster.to_bytes`), empty when nothing is
    forecast."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A topic's durable state right after the log entry at `position`."""

    topic: str
    position: tuple[int, int]
    clock_us: int
    sweep_slot: int
    state: bytes
    """The topic's own durable parts (count and sketch windows), empty if none."""
    groups: tuple[GroupCheckpoint, ...]
    series: bytes = b""
    """The topic's open series buckets, empty without tiers."""
    alerts: bytes = b""
    """Its alert instances' states (`TopicAlerts.durable_state`), empty without alerts."""
    anomaly: bytes = b""
    """The topic's series' anomaly detector (`BucketScorer.to_bytes`), empty when its rule
    scores nothing."""
    sessions: bytes = b""
    """A session topic's own statistics (`SessionWindows.durable_state`), empty for other
    topics and in a checkpoint written before they were kept (which still loads)."""
    forecast: bytes = b""
    """The topic's series' forecast model (`BucketForecaster.to_bytes`), empty when its rule
    forecasts nothing (or the checkpoint was written before forecasts: it still loads)."""
    series_from: tuple[int, int] | None = None
    """The log entry its series were made at, where they are the server's tiers, made at the
    topic's first value (`pushsvc.aggregate.topic_state`): a rebuild's replay feeds them no
    earlier entry. None: from the topic's first event (or written before: it still loads)."""

    def fields(self) -> dict[bytes, bytes]:
        """As the fields of one Redis hash (written whole, in one step)."""
        head = {
            "topic": self.topic,
            "position": list(self.position),
            "clock": self.clock_us,
            "slot": self.sweep_slot,
            **({} if self.series_from is None else {"series_from": list(self.series_from)}),
            "groups": [
                {
                    "id": g.id,
                    "key": g.key,
                    "admitted": list(g.admitted),
                    "newest": g.newest_us,
                    "clock": g.clock_us,
                }
                for g in self.groups
            ],
        }
        out = {
            _HEAD: orjson.dumps(head),
            _TOPIC: self.state,
            _SERIES: self.series,
            _ALERTS: self.alerts,
        }
        if self.anomaly:
            out[_ANOMALY] = self.anomaly
        if self.sessions:
            out[_SESSIONS] = self.sessions
        if self.forecast:
            out[_FORECAST] = self.forecast
        for group in self.groups:
            out[_GROUP + group.id.encode()] = group.state
            out[_GROUP_SERIES + group.id.encode()] = group.series
            if group.anomaly:
                out[_GROUP_ANOMALY + group.id.encode()] = group.anomaly
            if group.forecast:
                out[_GROUP_FORECAST + group.id.encode()] = group.forecast
        return out

    @classmethod
    def of_fields(cls, fields: Mapping[bytes, bytes]) -> Checkpoint:
        head = orjson.loads(fields[_HEAD])
        groups = tuple(
            GroupCheckpoint(
                g["id"],
                g["key"],
                (g["admitted"][0], g["admitted"][1], g["admitted"][2]),
                g["newest"],
                g["clock"],
                fields[_GROUP + g["id"].encode()],
                fields.get(_GROUP_SERIES + g["id"].encode(), b""),
                fields.get(_GROUP_ANOMALY + g["id"].encode(), b""),
                fields.get(_GROUP_FORECAST + g["id"].encode(), b""),
            )
            for g in head["groups"]
        )
        position = (head["position"][0], head["position"][1])
        return cls(
            head["topic"],
            position,
            head["clock"],
            head["slot"],
            fields[_TOPIC],
            groups,
            fields.get(_SERIES, b""),
            fields.get(_ALERTS, b""),
            fields.get(_ANOMALY, b""),
            fields.get(_SESSIONS, b""),
            fields.get(_FORECAST, b""),
            tuple(head["series_from"]) if "series_from" in head else None,
        )
