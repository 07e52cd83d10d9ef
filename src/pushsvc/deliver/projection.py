"""`?windows=1m,5m&stats=mean,p99&precision=4&group=station:grill&series=1m`: send
subscribers only the fields, groups and series tiers they asked for, statistics rounded to the
significant digits they asked for (pure).

Points (closed series buckets) reach only the streams that name their tier (`?series=`); a
group filter applies to them as to updates, the windows and statistics chosen do not (a point
has its own fixed fields).

A projection applies to a grouping topic's group windows as to its own. With a group
filter, a stream gets only the updates that carry a matching group (an event of that group,
a tick that changed it), each with only the matching groups."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pushsvc.core.lists import choose
from pushsvc.core.updates import Update
from pushsvc.deliver.mercure_updates import MercureView
from pushsvc.errors import BadRequest
from pushsvc.stats import STAT_KEYS

MAX_PRECISION = 17
"""Significant digits that give back any double exactly: `?precision=17` changes nothing."""


MAX_GROUP_FILTERS = 16

_MESSAGE_MARK = b',"type":"'
"""What an update carrying a message holds in its event's echo (`pushsvc.core.event`): an
update without it is none, found without parsing it."""


@dataclass(frozen=True, slots=True)
class GroupFilter:
    """`?group=tag:value`, repeatable: a group matches when every pair does."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, given: Sequence[str]) -> GroupFilter | None:
        """None for no `?group=`; BadRequest for one that is not `tag:value`."""
        if not given:
            return None
        if len(given) > MAX_GROUP_FILTERS:
            raise BadRequest(f"at most {MAX_GROUP_FILTERS} ?group= filters")
        pairs = []
        for item in given:
            tag, colon, value = item.partition(":")
            if not colon or not 0 < len(tag) <= 64 or len(value) > 256:
                raise BadRequest(
                    f"?group= takes tag:value (a tag of 1 to 64 characters); got {item[:80]!r}"
                )
            pairs.append((tag, value))
        return cls(tuple(pairs))

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(tag for tag, _ in self.pairs)

    def matches(self, key: Mapping[str, object]) -> bool:
        return all(key.get(tag) == value for tag, value in self.pairs)

    @property
    def key(self) -> str:
        return "&".join(f"{tag}:{value}" for tag, value in self.pairs)


@dataclass(frozen=True, slots=True)
class Projection:
    """Which windows and statistics to keep (None keeps all of them), and how many significant
    digits a statistic that is a float keeps (None: all; counts, the event and `ts` are never
    rounded)."""

    windows: tuple[str, ...] | None
    stats: tuple[str, ...] | None
    precision: int | None = None
    group: GroupFilter | None = None
    series: tuple[str, ...] = ()
    """The tiers (resolution labels) whose points the stream gets."""
    alert_topics: Callable[[str], bool] | None = field(default=None, compare=False)
    """On `_alerts`: the instances' topics the stream may see (None: all; its scope's)."""
    scope_key: str = ""
    """Names the scope `alert_topics` comes from (equal scopes filter alike)."""
    messages: bool = False
    """A messages stream (`/messages`): each update that carries a message becomes that
    message as published (`message_of`), and nothing else is sent."""
    mercure: MercureView | None = None
    """A Mercure subscriber's messages stream: only the updates it may receive, written as a
    Mercure hub writes them (`pushsvc.deliver.mercure_updates`)."""
    forecast: tuple[str, ...] = ()
    """The tiers whose forecasts the stream gets (`?forecast=`: a rule's `forecast`, sent as
    an `event: point` message with `forecast` instead of `point`)."""
    key: str = field(init=False, compare=False)
    """Equal for equal projections; a plain string, cheap to hash on the hot path."""

    def __post_init__(self) -> None:
        key = f"{','.join(self.windows or '*')};{','.join(self.stats or '*')};{self.precision}"
        if self.group is not None:
            key += ";" + self.group.key
        if self.series:
            key += ";series=" + ",".join(self.series)
        if self.forecast:
            key += ";forecast=" + ",".join(self.forecast)
        if self.alert_topics is not None:
            key += ";scope=" + self.scope_key
        if self.messages:
            key += ";messages"
        if self.mercure is not None:
            key += ";" + self.mercure.key
        object.__setattr__(self, "key", key)

    @classmethod
    def parse(
        cls,
        windows: str | None,
        stats: str | None,
        *,
        known_windows: Sequence[str],
        known_stats: Sequence[str] = STAT_KEYS,
        precision: str | None = None,
        group: Sequence[str] = (),
        series: Sequence[str] = (),
        known_series: Sequence[str] = (),
        forecast: Sequence[str] = (),
    ) -> Projection | None:
        """None when nothing is projected. Raises BadRequest naming an unknown window, stat
        or series tier (`known_series`: the resolutions any topic keeps), a precision that is
        not a whole number of digits from 1 to 17, or a group filter that is not
        `tag:value`."""
        chosen_windows = _choose("windows", windows, known_windows)
        chosen_stats = _choose("stats", stats, known_stats)
        digits = _precision(precision)
        chosen_group = GroupFilter.parse(group)
        chosen_series = _series(series, known_series)
        chosen_forecast = _series(forecast, known_series, "forecast")
        if (chosen_windows, chosen_stats, digits, chosen_group, chosen_series) == (
            None,
            None,
            None,
            None,
            (),
        ) and not chosen_forecast:
            return None
        return cls(
            chosen_windows,
            chosen_stats,
            digits,
            chosen_group,
            chosen_series,
            forecast=chosen_forecast,
        )

    def scoped(self, alert_topics: Callable[[str], bool] | None, scope_key: str) -> Projection:
        """This projection, also keeping only the alerts of the topics `alert_topics` allows."""
        return replace(self, alert_topics=alert_topics, scope_key=scope_key)

    @property
    def reshapes(self) -> bool:
        """Whether windows or statistics are cut or rounded (not only groups filtered)."""
        return self.windows is not None or self.stats is not None or self.precision is not None

    def not_kept(self, windows: Sequence[str], stats: Sequence[str]) -> list[str]:
        """The windows and statistics named here that a topic keeping `windows` and `stats`
        (its rule's) does not have, in the order named."""
        return [w for w in self.windows or () if w not in windows] + [
            s for s in self.stats or () if s not in stats
        ]

    def windows_of(self, windows: dict[str, Any]) -> dict[str, Any]:
        # A topic keeps the windows and statistics of its own rule, and a projection may name
        # those of any rule (a pattern stream spans rules): what the topic lacks is left out,
        # and so is a window left with none of the statistics named.
        keep = (
            windows
            if self.windows is None
            else {w: windows[w] for w in self.windows if w in windows}
        )
        if self.stats is not None:
            chosen = self.stats
            keep = {
                w: kept
                for w, stats in keep.items()
                if (kept := {s: stats[s] for s in chosen if s in stats})
            }
        if self.precision is None:
            return keep
        digits = self.precision
        return {
            w: {s: _round(v, digits) if type(v) is float else v for s, v in stats.items()}
            for w, stats in keep.items()
        }

    def data(self, update: Update) -> bytes | None:
        """The update's JSON with only the projected windows, statistics and groups; None
        when a group filter leaves nothing of it (the stream skips the update)."""
        # Parsed afresh, not through the update's cached `fields`: each update is projected once
        # per projection, so the cache buys nothing and keeps a dict alive per update (measured:
        # docs/journal/publish-path.md, 'Publish path, end to end').
        if update.is_point:
            return self._point_data(update)
        if update.is_deletion:
            return update.data  # the topic is gone, every group and window of it with it
        if not update.is_update:
            # An alert: no windows to cut; shown when the scope allows its instance's topic.
            allowed = self.alert_topics
            if allowed is not None and not allowed(orjson.loads(update.data)["topic"]):
                return None
            return update.data
        fields = orjson.loads(update.data)
        if self.group is not None and not self._keep_groups(fields, self.group):
            return None
        if self.reshapes:
            fields["windows"] = self.windows_of(fields["windows"])
            if "group" in fields:
                fields["group"]["windows"] = self.windows_of(fields["group"]["windows"])
            for group in fields.get("groups", ()):
                group["windows"] = self.windows_of(group["windows"])
        return orjson.dumps(fields)

    def _point_data(self, update: Update) -> bytes | None:
        """A series or forecast point, whole, where the stream asked for its resolution (and
        group)."""
        if not self.series and not self.forecast:
            return None
        fields = orjson.loads(update.data)
        if fields["resolution"] not in (self.forecast if "forecast" in fields else self.series):
            return None
        if self.group is not None and not self.group.matches(fields.get("group") or {}):
            return None
        return update.data

    @staticmethod
    def _keep_groups(fields: dict[str, Any], chosen: GroupFilter) -> bool:
        """Cut a statistics update to the groups `chosen` matches; False when none is left
        (or the topic groups by nothing, so no group of it matches)."""
        group = fields.get("group")
        if group is not None:
            return chosen.matches(group["key"])
        if "groups" not in fields:
            return False
        fields["groups"] = [g for g in fields["groups"] if chosen.matches(g["key"])]
        return bool(fields["groups"])

    def message_of(self, update: Update) -> tuple[str, bytes] | None:
        """A messages stream's message of `update`: its type (the SSE event name) and its data
        as compact JSON; None for an update without one (a plain event, a tick, a point),
        and for a late stream's copy of a message its own topic pushed (`"copy": true`,
        `pushsvc.core.lateness`), which no stream pushes twice."""
        if not update.is_update or update.holds_message is False:
            return None
        if _MESSAGE_MARK not in update.data:
            return None
        fields = orjson.loads(update.data)
        event = fields["event"]
        if event is None or "type" not in event or "copy" in fields:
            return None  # a tag value held the mark, or a copy
        return event["type"], orjson.dumps(event["data"])

    def holds_message(self, update: Update) -> bool:
        """Whether `message_of(update)` is a message, told once per update and kept on it
        (`Update.holds_message`): many streams replaying one history parse it once."""
        held = update.holds_message
        if held is None:
            held = update.holds_message = self.message_of(update) is not None
        return held

    def groups_of(self, groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """A snapshot's groups: those matching the filter, their windows projected."""
        chosen = [g for g in groups if self.group is None or self.group.matches(g["key"])]
        if not self.reshapes:
            return chosen
        return [{"key": g["key"], "windows": self.windows_of(g["windows"])} for g in chosen]


def _series(given: Sequence[str], known: Sequence[str], name: str = "series") -> tuple[str, ...]:
    chosen: list[str] = []
    for item in given:
        for resolution in item.split(","):
            if resolution not in known:
                kept = ", ".join(known) or "none"
                raise BadRequest(
                    f"?{name}= takes a resolution of the series kept ({kept});"
                    f" got {resolution[:40]!r}"
                )
            if resolution not in chosen:
                chosen.append(resolution)
    return tuple(chosen)


def _round(value: float, digits: int) -> float:
    """`value` to `digits` significant digits, as the shortest float that prints so."""
    return float(f"{value:.{digits}g}")


def _precision(given: str | None) -> int | None:
    if given is None:
        return None
    digits = int(given) if given.isascii() and given.isdigit() else 0
    if not 1 <= digits <= MAX_PRECISION:
        raise BadRequest(
            f"?precision= takes a whole number of significant digits from 1 to {MAX_PRECISION};"
            f" got {given!r}"
        )
    return None if digits == MAX_PRECISION else digits


def _choose(name: str, given: str | None, known: Sequence[str]) -> tuple[str, ...] | None:
    if given is None:
        return None
    try:
        return choose(given, known)
    except ValueError:
        raise BadRequest(
            f"?{name}= takes a comma-separated list of {', '.join(known)}; got {given!r}"
        ) from None
