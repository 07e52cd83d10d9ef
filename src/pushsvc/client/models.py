"""What the Python client returns: typed stream messages (`StreamMessage` of `/stream`, `Message`
and `Gap` of `/messages`), and history as a pandas DataFrame.

A stream's messages are decoded by msgspec into the classes that define their shapes
(`pushsvc.core.update_shape`, `point_shape`, `snapshot_shape`, `alert_shape`, `window_stats`),
the same ones `/openapi.json` is generated from; `StreamUpdate` and `Point` add typed readers.

pandas is imported only by `history_dataframe`, and is an extra (`pushsvc[tools]`): the tools that
never load history, and the server, do without it.
The DataFrame's columns are `pushsvc.core.history_table`'s, the same as the CSV answer of
`GET /topics/{t}/history`: `pd.read_csv(url, parse_dates=["time"])` gives an equal frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import orjson

from pushsvc.core import history_table, point_shape, update_shape
from pushsvc.core.alert_shape import AlertChangeMessage
from pushsvc.core.point_shape import Forecast
from pushsvc.core.snapshot_shape import SnapshotEntry, SnapshotMessage
from pushsvc.core.update_shape import EventEcho
from pushsvc.core.window_stats import FunnelStep as FunnelStep
from pushsvc.core.window_stats import TopValue as TopValue
from pushsvc.extras import require

if TYPE_CHECKING:
    import pandas as pd

Stats = Mapping[str, Any]
"""One window's statistics: count, sum, mean, … (numbers; None where undefined, as in an
empty window), `distinct_<tag>` (an int), `top_<tag>` (a list of objects, `TopValue`),
for a rule that scores anomalies, `anomaly_rate` (a float in [0, 1], None while no scored
bucket closed in the window), and for a session topic, `bounce_rate`, `events_per_session`,
`active` and `funnel` (`SessionStats`); `pushsvc.core.window_stats` says each."""

Event = EventEcho
"""The event an update applied (`value` None for a message without one)."""

AlertChange = AlertChangeMessage
"""One `alert` message of the reserved topic `_alerts`: an alert instance (`alert`, `topic`,
`group`) changed `state` (`pending`, `firing`, `resolved`, or `inactive` for a pending
instance that cleared before it fired) at `since` (the topic clock, epoch seconds), `value`
being the statistic that caused it."""


def _top_values(entries: object) -> list[TopValue]:
    return msgspec.convert(entries, list[TopValue]) if isinstance(entries, list) else []


def distinct_of(windows: Mapping[str, Stats], window: str, tag: str) -> int | None:
    """`distinct_<tag>` of one window; None where the topic does not count it."""
    value = (windows.get(window) or {}).get(f"distinct_{tag}")
    return value if isinstance(value, int) else None


def anomaly_rate_of(windows: Mapping[str, Stats], window: str) -> float | None:
    """`anomaly_rate` of one window: anomalous / scored among the series buckets that closed
    in it; None where the topic scores none, or none closed in the window."""
    value = (windows.get(window) or {}).get("anomaly_rate")
    return float(value) if isinstance(value, int | float) else None


def top_of(windows: Mapping[str, Stats], window: str, tag: str) -> list[TopValue]:
    """`top_<tag>` of one window, most frequent first; empty where the topic keeps none."""
    return _top_values((windows.get(window) or {}).get(f"top_{tag}"))


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A session topic's own statistics in one window (None where undefined)."""

    bounce_rate: float | None
    events_per_session: float | None
    active: int | None
    """Sessions open when the topic's newest session ended."""
    funnel: list[FunnelStep]
    """Empty for a session rule without a funnel."""


def sessions_of(windows: Mapping[str, Stats], window: str) -> SessionStats | None:
    """A session topic's own statistics of one window; None for any other topic."""
    stats = windows.get(window) or {}
    if "bounce_rate" not in stats:
        return None
    funnel = stats.get("funnel")
    return SessionStats(
        stats["bounce_rate"],
        stats.get("events_per_session"),
        stats.get("active"),
        msgspec.convert(funnel, list[FunnelStep]) if isinstance(funnel, list) else [],
    )


class StreamUpdate(update_shape.StreamUpdate, frozen=True, kw_only=True, omit_defaults=True):
    """One `stats` message: the statistics of `topic` right after an event (or a tick)."""

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)

    def distinct(self, window: str, tag: str) -> int | None:
        """How many different values of `tag` the window holds (None: not counted)."""
        return distinct_of(self.windows, window, tag)

    def top(self, window: str, tag: str) -> list[TopValue]:
        """The window's most frequent values of `tag` (empty: none kept)."""
        return top_of(self.windows, window, tag)

    def anomaly_rate(self, window: str) -> float | None:
        """The share of anomalous buckets among the scored ones that closed in the window
        (None: the topic scores none, or none closed in it)."""
        return anomaly_rate_of(self.windows, window)

    def sessions(self, window: str) -> SessionStats | None:
        """A session topic's bounce rate, events per session, active sessions and funnel in
        the window (None: not a session topic)."""
        return sessions_of(self.windows, window)

    @classmethod
    def parse(cls, data: str | bytes) -> StreamUpdate:
        return _UPDATES.decode(data)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stream's first message: every subscribed topic's current statistics. `gap`: the
    stream could not resume from the id it was given (the history lost updates after it).
    Later in a stream, a snapshot with `deleted` says those topics were deleted (`DELETE
    /topics/{t}`): everything received of them before is gone, and their next update starts
    them afresh."""

    id: str | None
    gap: bool
    topics: Mapping[str, SnapshotEntry]
    """topic -> its entry: `id`, `ts`, `windows` (and a grouping topic's `groups`)"""
    deleted: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: str | bytes, message_id: str | None) -> Snapshot:
        message = _SNAPSHOTS.decode(data)
        deleted = () if message.deleted is msgspec.UNSET else tuple(message.deleted)
        return cls(message_id or None, message.gap, message.topics, deleted)


class Point(point_shape.PointMessage, frozen=True, kw_only=True, omit_defaults=True):
    """One `point` message (`?series=`): a closed bucket of one series tier of `topic` (or of
    its group `group`), with its statistics `point` (`t` is the bucket's start, epoch
    seconds; `pushsvc.core.point_shape` says each member). `correction`: the bucket's point
    again, amended by a late event within its rule's grace: it replaces the point of the same
    `resolution`, group and `t` received before."""

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.point["t"], UTC)

    def distinct(self, tag: str) -> int | None:
        """How many different values of `tag` the bucket's events carry (None: not counted)."""
        value = self.point.get(f"distinct_{tag}")
        return value if isinstance(value, int) else None

    def top(self, tag: str) -> list[TopValue]:
        """The bucket's most frequent values of `tag` (empty: none kept)."""
        return _top_values(self.point.get(f"top_{tag}"))

    @property
    def messages(self) -> dict[str, int]:
        """The bucket's messages: count by type (empty: it held none)."""
        return message_counts(self.point)

    @property
    def anomaly(self) -> float | None:
        """The bucket's anomaly score in [0, 1] (None: its tier is not scored)."""
        value = self.point.get("anomaly")
        return float(value) if isinstance(value, int | float) else None

    @property
    def anomalous(self) -> bool | None:
        """Whether the score reached the rule's threshold (None: not scored)."""
        value = self.point.get("anomalous")
        return value if isinstance(value, bool) else None

    @classmethod
    def parse(cls, data: str | bytes) -> Point:
        return _POINTS.decode(data)


_UPDATES = msgspec.json.Decoder(StreamUpdate)
_POINTS = msgspec.json.Decoder(Point)
_SNAPSHOTS = msgspec.json.Decoder(SnapshotMessage)
_ALERTS = msgspec.json.Decoder(AlertChange)


StreamMessage = StreamUpdate | Snapshot | Point | AlertChange
"""A typed message of a statistics stream (`/stream`, `Client.subscribe`)."""

_PARSERS: dict[str, Callable[[str | bytes], StreamMessage]] = {
    "stats": StreamUpdate.parse,
    "point": Point.parse,
    "alert": _ALERTS.decode,
}


def typed_message(event: str, message_id: str | None, data: str | bytes) -> StreamMessage | None:
    """The typed message for a stream message's event name; None for an event this client
    does not know (a newer server's), which a subscriber skips."""
    if event == "snapshot":
        return Snapshot.parse(data, message_id)
    parse = _PARSERS.get(event)
    return None if parse is None else parse(data)


class Message(NamedTuple):
    """One of the application's messages, as published (`Client.messages`): `id`, the id to
    resume after it (its update's id, or on a stream over several partitions the stream's
    cursor), `type` (its SSE event name: `message` unless published with one) and `data`,
    parsed from its JSON."""

    id: str
    type: str
    data: Any


class Gap(NamedTuple):
    """Where a messages stream could not resume from the id it was given (the history no
    longer holds what followed it, or the id is of another epoch): messages of `topics`
    published while the client was away may be lost. The stream goes on live after it, and
    `id` resumes from here."""

    id: str
    topics: tuple[str, ...]


GAP_EVENT = "gap"
"""The event a messages stream sends for a gap (a type no message may have)."""


def message_item(event: str, message_id: str, data: str | bytes) -> Message | Gap:
    """What a messages stream's event is: a `Gap` (`event: gap`), else a `Message`."""
    if event == GAP_EVENT:
        return Gap(message_id, tuple(orjson.loads(data)["topics"]))
    return Message(message_id, event, orjson.loads(data))


SERIES_COLUMNS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
_TAGGED = ("distinct_", "top_")
MESSAGES_PREFIX = "messages_"
"""A series frame's column of one message type's counts: this, then the type."""


def message_counts(point: Mapping[str, Any]) -> dict[str, int]:
    """A series point's messages, count by type (empty: its bucket held none)."""
    by_type = point.get("messages")
    if not isinstance(by_type, Mapping):
        return {}
    return {kind: int(entry["count"]) for kind, entry in by_type.items()}


def series_dataframe(points: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Points (`GET /topics/{t}/series`) as a DataFrame indexed by their bucket's start
    (`time`, datetime64 UTC), one column per statistic (`count` int64, the others float64,
    NaN for null), then one per `distinct_<tag>` (float64, NaN where a point lacks it) and
    `top_<tag>` (lists of `TopValue`) the points carry, then `anomaly` (float64) and
    `anomalous` (pandas' nullable boolean; NA where a point is not scored) when any point is
    scored, then `messages_<type>` (int64, 0 where a bucket held none of that type) per
    message type the points count, in type order. Needs pandas (the tools extra)."""
    require("Client.series()", "pandas")
    import pandas as pd

    tagged = list(dict.fromkeys(k for p in points for k in p if k.startswith(_TAGGED)))
    scored = ["anomaly", "anomalous"] if any("anomaly" in p for p in points) else []
    counted = [message_counts(p) for p in points]
    types = sorted({kind for counts in counted for kind in counts})
    columns = [*SERIES_COLUMNS, *tagged, *scored]
    rows = [
        [_top_values(p.get(c)) if c.startswith("top_") else p.get(c) for c in columns]
        + [counts.get(kind, 0) for kind in types]
        for p, counts in zip(points, counted, strict=True)
    ]
    columns += [MESSAGES_PREFIX + kind for kind in types]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.astype(
        {
            c: "int64"
            if c == "count" or c.startswith(MESSAGES_PREFIX)
            else "boolean"
            if c == "anomalous"
            else "float64"
            for c in columns
            if not c.startswith("top_")
        }
    )
    times = [round(p["t"] * 1_000_000) for p in points]
    frame.index = pd.DatetimeIndex(pd.to_datetime(times, unit="us", utc=True), name="time")
    return frame


FORECAST_COLUMNS = ("mean", "lo80", "hi80", "lo95", "hi95")


def forecast_dataframe(forecast: Forecast) -> pd.DataFrame:
    """A forecast (`GET /topics/{t}/forecast`) as a DataFrame indexed by the start of each
    bucket predicted (`time`, datetime64 UTC), columns `mean` and the 80 % and 95 % interval
    bounds (float64); `attrs` keeps `model`, `stat`, `resolution` and `from` (the start of the
    last bucket learned, epoch ms), from `GET /forecast` `clock` and `pending` (how current
    it is), and from a forecast message of a long horizon `every` (it has every `every`-th
    bucket's point only). Empty while the model learns. Needs pandas."""
    require("Client.forecast()", "pandas")
    import pandas as pd

    points = forecast.points
    frame = pd.DataFrame(
        [[getattr(p, c) for c in FORECAST_COLUMNS] for p in points], columns=list(FORECAST_COLUMNS)
    ).astype("float64")
    times = [p.t * 1000 for p in points]
    frame.index = pd.DatetimeIndex(pd.to_datetime(times, unit="us", utc=True), name="time")
    frame.attrs.update(model=forecast.model, stat=forecast.stat, resolution=forecast.resolution)
    frame.attrs["from"] = forecast.from_
    if forecast.every is not None:
        frame.attrs["every"] = forecast.every
    if forecast.clock is not None:
        frame.attrs.update(clock=forecast.clock, pending=forecast.pending)
    return frame


def history_dataframe(
    updates: Sequence[Mapping[str, Any]], windows: Sequence[str], stats: Sequence[str]
) -> pd.DataFrame:
    """One row per update (history order), columns as in `pushsvc.core.history_table`:
    `id`, `reason` (str), `time` (datetime64, UTC), `value` and every statistic (float64,
    NaN for null), `{window}_count` (int64), then `tag.{name}` per tag name the events carry
    (str, None where an event lacks it). Needs pandas (the tools extra)."""
    require("Client.history()", "pandas")
    import pandas as pd

    tags = history_table.tag_names(updates)
    header = history_table.columns(windows, stats, tags)
    rows = [history_table.row(u, round(u["ts"] * 1_000_000), windows, stats, tags) for u in updates]
    frame = pd.DataFrame(rows, columns=header)
    dtypes: dict[str, str] = {"id": "str", "reason": "str", "value": "float64"}
    for window in windows:
        for stat in stats:
            column = history_table.stat_column(window, stat)
            dtypes[column] = "int64" if stat == "count" else "float64"
    frame = frame.astype(dtypes)
    frame["time"] = pd.to_datetime(frame["time"].astype("int64"), unit="us", utc=True)
    return frame
