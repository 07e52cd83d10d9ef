"""GET /topics/{topic}/series — a topic's (or one group's) closed buckets at one resolution, or
at the resolution that suits a chart (`resolution=auto&points=N`), over any range the tiers
keep: JSON `{"topic", "resolution", "points", "more", "segments"}` or CSV. Read like a stream of
that topic (401/403 alike).

`since` (inclusive) and `until` (exclusive) compare with the points' `t` (bucket start), as
epoch seconds or RFC 3339; without them, everything the tier keeps. With `resolution=auto`
the range is cut into segments (`pushsvc.series.plan`): among the tiers that keep the whole
range, the coarsest that still gives `points / 2` points, the most recent part, which that
tier has not closed yet, from finer tiers. `segments` says which tier answered which part;
`resolution` is the first segment's.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from pushsvc.core import history_table
from pushsvc.core.durations import duration_label
from pushsvc.core.lateness import series_lateness_us
from pushsvc.core.topics import TopicMatcher, validate_topic
from pushsvc.deliver.projection import GroupFilter
from pushsvc.errors import BadRequest, EmptyRange
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import FORMATS, MORE_HEADER, group_filter, time_us
from pushsvc.http.api.whole_numbers import whole_number
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_TS_US
from pushsvc.rules.analytics import Rule
from pushsvc.rules.point import Point
from pushsvc.rules.tiers import SeriesTier
from pushsvc.series.plan import plan_segments
from pushsvc.stats.groups import group_id

bp = Blueprint("series", __name__)

DEFAULT_POINTS = 300
MAX_POINTS = 10_000
MAX_LIMIT = 100_000
RESOLUTION_HEADER = "Pushsvc-Resolution"
# A CSV row: the tier, the bucket start (RFC 3339), then these fields of the point, then the
# rule's distinct counts and top lists (each list JSON-encoded in one cell).
CSV_STATS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    resolution: str
    """A tier's resolution label, or "auto"."""
    points: int
    since_us: int | None
    until_us: int | None
    limit: int
    format: str


def parse_query(args: MultiDict[str, str], accept_csv: bool) -> SeriesQuery:
    """The query string, judged whole before anything is read (400 naming the parameter)."""
    resolution = args.get("resolution", "auto")
    points = whole_number(
        "points", args.get("points"), default=DEFAULT_POINTS, low=2, high=MAX_POINTS
    )
    limit = whole_number("limit", args.get("limit"), default=MAX_LIMIT, high=MAX_LIMIT)
    since = args.get("since")
    until = args.get("until")
    since_us = time_us(since, "since") if since is not None else None
    until_us = time_us(until, "until") if until is not None else None
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise EmptyRange(f"?since= ({since}) must be before ?until= ({until})")
    fmt = args.get("format")
    if fmt is None:
        fmt = "csv" if accept_csv else "json"
    elif fmt not in FORMATS:
        raise BadRequest(f"?format= is json or csv, not {fmt[:40]!r}")
    return SeriesQuery(resolution, points, since_us, until_us, limit, fmt)


@bp.get("/topics/<anytext:topic>/series")
def topic_series(topic: str) -> Response:
    validate_topic(topic)
    rt = runtime()
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    query = parse_query(request.args, accept_csv=best == "text/csv")
    # Answered like a stream of that one topic: 401 or 403 where the stream would be.
    rt.gate.reader(request, TopicMatcher([topic]))
    rule = rt.settings.rules.for_topic(topic)
    tiers = rt.settings.rules.series_of(rule)
    asked = _tier_asked(topic, tiers, query.resolution)
    group = group_filter(request.args.getlist("group"), topic, rule.group_by)
    gid = _group_id(topic, rule, group)
    segments = _segments(topic, rule, tiers, query, asked)
    rows, more = _read(topic, rule, gid, segments, query.limit)
    resolution = duration_label(segments[0][0].resolution_us) if segments else query.resolution
    headers = {
        "Cache-Control": "no-store",
        MORE_HEADER: "true" if more else "false",
        RESOLUTION_HEADER: resolution,
        "Vary": "Accept",
    }
    if query.format == "csv":
        return Response(_csv(rule, rows), mimetype=FORMATS["csv"], headers=headers)
    answer = {
        "topic": topic,
        "resolution": resolution,
        "points": [point.fields(tier.resolution_us) for tier, point in rows],
        "more": more,
        "segments": [
            {
                "resolution": duration_label(tier.resolution_us),
                "since": start / 1_000_000,
                "until": end / 1_000_000,
            }
            for tier, start, end in segments
        ],
    }
    if group is not None:
        answer["group"] = dict(group.pairs)
    return Response(orjson.dumps(answer), mimetype=FORMATS["json"], headers=headers)


Segment = tuple[SeriesTier, int, int]
"""A tier and the range [since, until) it answers, in microseconds."""


def _group_id(topic: str, rule: Rule, group: GroupFilter | None) -> str:
    """The series' group: "" for the whole topic, else the group `?group=` names, which must
    name every tag the topic groups by."""
    if group is None:
        return ""
    missing = [tag for tag in rule.group_by if tag not in group.tags]
    if missing:
        raise BadRequest(
            f"?group= must name every tag topic {topic!r} groups by; {missing[0]!r} is missing"
        )
    values = dict(group.pairs)
    return group_id([values[tag] for tag in rule.group_by])


def _tier_asked(topic: str, tiers: tuple[SeriesTier, ...], resolution: str) -> SeriesTier | None:
    """The tier `?resolution=` names, None for `auto`; 400 for one the topic does not keep."""
    if resolution == "auto":
        return None
    by_label = {duration_label(t.resolution_us): t for t in tiers}
    if resolution not in by_label:
        kept = ", ".join(by_label) or "none"
        raise BadRequest(
            f"?resolution= is auto or a resolution topic {topic!r} keeps ({kept}); "
            f"got {resolution[:40]!r}"
        )
    return by_label[resolution]


def _segments(
    topic: str,
    rule: Rule,
    tiers: tuple[SeriesTier, ...],
    query: SeriesQuery,
    asked: SeriesTier | None,
) -> list[Segment]:
    """Which tier answers which part of the range: the one `asked` for, or the plan."""
    since_us = query.since_us if query.since_us is not None else MIN_TS_US
    until_us = query.until_us if query.until_us is not None else MAX_TS_US
    if asked is not None:
        return [(asked, since_us, until_us)]
    rt = runtime()
    latest = rt.broker.latest(TopicMatcher([topic])).get(topic)
    clock = latest.clock_us if latest is not None else None
    if query.since_us is None or query.until_us is None:
        since_us, until_us = _default_range(tiers, query, clock)
    server_grace = rt.settings.grace_us
    grace = rule.grace_us if rule.grace_us is not None else server_grace
    final = rule.anomaly is not None or rule.forecast is not None
    lateness = series_lateness_us(grace, server_grace, final)  # when points are published
    return plan_segments(tiers, since_us, until_us, clock, query.points, lateness)


def _read(
    topic: str, rule: Rule, gid: str, segments: list[Segment], limit: int
) -> tuple[list[tuple[SeriesTier, Point]], bool]:
    """The points of each segment in turn, `limit` at most; and whether there are more."""
    broker = runtime().broker
    top_tags = tuple(tag for tag, _ in rule.top)
    rows: list[tuple[SeriesTier, Point]] = []
    for tier, start, end in segments:
        page = broker.series(
            topic,
            resolution=duration_label(tier.resolution_us),
            group_id=gid,
            since_us=start,
            until_us=end,
            retention_us=tier.retention_us,
            limit=limit - len(rows),
        )
        rows += [
            (tier, Point.unpacked(t_us, packed, rule.distinct, top_tags))
            for t_us, packed in page.points
        ]
        if page.more or len(rows) >= limit:
            return rows, True
    return rows, False


def _csv(rule: Rule, rows: list[tuple[SeriesTier, Point]]) -> bytes:
    tagged = (
        *(f"distinct_{tag}" for tag in rule.distinct),
        *(f"top_{tag}" for tag, _ in rule.top),
        *(("anomaly", "anomalous") if rule.anomaly is not None else ()),
    )
    # A column of message counts when a point here has some (JSON-encoded, as top lists).
    counted = ("messages",) if any(point.messages for _, point in rows) else ()
    table = (_csv_row(tier, point, (*tagged, *counted)) for tier, point in rows)
    header = ["resolution", "time", *CSV_STATS, *tagged, *counted]
    return history_table.to_csv(table, header).encode()


def _default_range(
    tiers: tuple[SeriesTier, ...], query: SeriesQuery, clock_us: int | None
) -> tuple[int, int]:
    """`resolution=auto` without a bound: up to the topic clock, back as far as the
    coarsest tier keeps."""
    if clock_us is None:
        return MIN_TS_US, MAX_TS_US
    until_us = query.until_us if query.until_us is not None else clock_us + 1
    keeps = max((t.retention_us for t in tiers), default=0)
    since_us = query.since_us if query.since_us is not None else until_us - keeps
    if since_us >= until_us:
        raise EmptyRange("?since= must be before ?until= (the topic clock, when not given)")
    return since_us, until_us


def _csv_row(tier: SeriesTier, point: Point, tagged: tuple[str, ...]) -> list[object]:
    """A point's cells; a distinct count, top list, score or message counts the point lacks
    (stored before the rule named its tag, a tier the rule does not score, a bucket without
    messages) is an empty cell."""
    fields = point.fields(tier.resolution_us)
    cells = [duration_label(tier.resolution_us), point.t_us, *(fields[stat] for stat in CSV_STATS)]
    for name in tagged:
        value = fields.get(name)
        if isinstance(value, list | bool | dict):
            value = orjson.dumps(value).decode()
        cells.append(value)
    return cells
