"""What the Python client returns: typed stream messages (`StreamMessage` of `/stream`, `Message`
and `Gap` of `/messages`), and history as a pandas DataFrame.

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

import orjson

from pushsvc.core import history_table
from pushsvc.extras import require

if TYPE_CHECKING:
    import pandas as pd

Stats = Mapping[str, Any]
"""One window's statistics: count, sum, mean, … (numbers; None where undefined, as in an
empty window), `distinct_<tag>` (an int), `top_<tag>` (a list of objects, `TopValue`),
for a rule that scores anomalies, `anomaly_rate` (a float in [0, 1], None while no scored
bucket closed in the window), and for a session topic, `bounce_rate`, `events_per_session`,
`active` and `funnel` (`SessionStats`)."""


@dataclass(frozen=True, slots=True)
class TopValue:
    """One entry of a `top_<tag>` list: a value and how many events of the window carry it.
    `error` is None when the count is exact; else the count is at most `error` above the
    true one (Space-Saving, docs/design.md)."""

    value: str
    count: int
    error: float | None = None

    @classmethod
    def parse_list(cls, entries: object) -> list[TopValue]:
        if not isinstance(entries, list):
            return []
        return [cls(e["value"], e["count"], e.get("error")) for e in entries]


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
    return TopValue.parse_list((windows.get(window) or {}).get(f"top_{tag}"))


@dataclass(frozen=True, slots=True)
class FunnelStep:
    """One step of a session topic's `funnel` (docs/rules.md, Sessions and funnels): the
    sessions that reached it, as a share of the first step's and of the step before's (None
    where undefined), and the median seconds from the first step to it."""

    step: str
    sessions: int
    conversion: float | None
    step_conversion: float | None
    median_s: float | None

    @classmethod
    def parse_list(cls, entries: object) -> list[FunnelStep]:
        if not isinstance(entries, list):
            return []
        return [
            cls(e["step"], e["sessions"], e["conversion"], e["step_conversion"], e["median_s"])
            for e in entries
        ]


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
    return SessionStats(
        stats["bounce_rate"],
        stats.get("events_per_session"),
        stats.get("active"),
        FunnelStep.parse_list(stats.get("funnel")),
    )


@dataclass(frozen=True, slots=True)
class Event:
    value: float
    ts: float
    tags: Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class StreamUpdate:
    """One `stats` message: the statistics of `topic` right after an event (or a tick)."""

    id: str
    topic: str
    ts: float
    """The topic clock (epoch seconds): the largest event time it has accepted."""
    reason: str
    event: Event | None
    windows: Mapping[str, Stats]

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
        fields = orjson.loads(data)
        raw = fields.get("event")
        event = None if raw is None else Event(raw["value"], raw["ts"], raw.get("tags"))
        return cls(
            fields["id"],
            fields["topic"],
            fields["ts"],
            fields.get("reason", "event"),
            event,
            fields["windows"],
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stream's first message: every subscribed topic's current statistics. `gap`: the
    stream could not resume from the id it was given (the history lost updates after it).
    Later in a stream, a snapshot with `deleted` says those topics were deleted (`DELETE
    /topics/{t}`): everything received of them before is gone, and their next update starts
    them afresh."""

    id: str | None
    gap: bool
    topics: Mapping[str, Mapping[str, Any]]
    """topic -> {"id", "ts", "windows"}"""
    deleted: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: str | bytes, message_id: str | None) -> Snapshot:
        fields = orjson.loads(data)
        deleted = tuple(fields.get("deleted", ()))
        return cls(message_id or None, bool(fields.get("gap")), fields.get("topics", {}), deleted)


@dataclass(frozen=True, slots=True)
class Point:
    """One `point` message (`?series=`): a closed bucket of one series tier of `topic` (or of
    its group `group`), with its statistics (`t` is the bucket's start, epoch seconds)."""

    id: str
    topic: str
    resolution: str
    group: Mapping[str, str | None] | None
    point: Mapping[str, Any]
    """`t`, count, sum, …, p99 (numbers; var and stddev None for one event, every statistic
    but count and sum None for a bucket of messages only), and the rule's `distinct_<tag>` (an
    int) and `top_<tag>` (a list of objects, `TopValue`), on a rule's `anomaly` tier `anomaly`
    (a float in [0, 1]) and `anomalous` (a bool), and where the bucket held messages
    `messages` (`{type: {"count", "rate"}}`)."""
    correction: bool = False
    """The bucket's point again, amended by a late event within its rule's grace: it replaces
    the point of the same `resolution`, group and `t` received before."""

    @property
    def time(self) -> datetime:
        t = self.point["t"]
        assert t is not None
        return datetime.fromtimestamp(t, UTC)

    def distinct(self, tag: str) -> int | None:
        """How many different values of `tag` the bucket's events carry (None: not counted)."""
        value = self.point.get(f"distinct_{tag}")
        return value if isinstance(value, int) else None

    def top(self, tag: str) -> list[TopValue]:
        """The bucket's most frequent values of `tag` (empty: none kept)."""
        return TopValue.parse_list(self.point.get(f"top_{tag}"))

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
        fields = orjson.loads(data)
        group = fields.get("group")
        return cls(
            fields["id"],
            fields["topic"],
            fields["resolution"],
            group,
            fields["point"],
            bool(fields.get("correction", False)),
        )


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One `alert` message of the reserved topic `_alerts`: an alert instance (`alert`,
    `topic`, `group`) changed `state` (`pending`, `firing`, `resolved`, or `inactive` for a
    pending instance that cleared before it fired) at `since` (the topic clock, epoch
    seconds), `value` being the statistic that caused it."""

    id: str
    alert: str
    topic: str
    group: Mapping[str, str | None] | None
    state: str
    value: float | None
    since: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @classmethod
    def parse(cls, data: str | bytes) -> AlertChange:
        fields = orjson.loads(data)
        return cls(
            fields["id"],
            fields["alert"],
            fields["topic"],
            fields.get("group"),
            fields["state"],
            fields.get("value"),
            fields["since"],
            fields.get("labels") or {},
            fields.get("annotations") or {},
        )


StreamMessage = StreamUpdate | Snapshot | Point | AlertChange
"""A typed message of a statistics stream (`/stream`, `Client.subscribe`)."""

_PARSERS: dict[str, Callable[[str | bytes], StreamMessage]] = {
    "stats": StreamUpdate.parse,
    "point": Point.parse,
    "alert": AlertChange.parse,
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
        [TopValue.parse_list(p.get(c)) if c.startswith("top_") else p.get(c) for c in columns]
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


def forecast_dataframe(answer: Mapping[str, Any]) -> pd.DataFrame:
    """A forecast (`GET /topics/{t}/forecast`) as a DataFrame indexed by the start of each
    bucket predicted (`time`, datetime64 UTC), columns `mean` and the 80 % and 95 % interval
    bounds (float64); `attrs` keeps `model`, `stat`, `resolution` and `from` (the start of the
    last bucket learned, epoch ms). Empty while the model learns. Needs pandas."""
    require("Client.forecast()", "pandas")
    import pandas as pd

    points = answer["points"]
    frame = pd.DataFrame(
        [[p[c] for c in FORECAST_COLUMNS] for p in points], columns=list(FORECAST_COLUMNS)
    ).astype("float64")
    times = [p["t"] * 1000 for p in points]
    frame.index = pd.DatetimeIndex(pd.to_datetime(times, unit="us", utc=True), name="time")
    for key in ("model", "stat", "resolution", "from"):
        frame.attrs[key] = answer[key]
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
