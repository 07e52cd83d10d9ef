"""GET /topics/{topic}/history — one topic's recent updates from the bounded history, as JSON
(the updates exactly as streamed) or CSV (`pushsvc.core.history_table`), for the dashboard's first
drawing and for analysts' DataFrames. Read like a stream of that topic (401/403 alike).

`?since=` is an update id (exclusive, like Last-Event-ID: page forward from there), or a time
— epoch seconds or RFC 3339 — compared with the updates' `ts` (inclusive). Without it, the
newest `limit`. Either way newest last, with `resume_id`: the Last-Event-ID a stream of any
topics continues this answer from with no gap and no duplicate (docs/architecture.md).
`more` says updates were left out beyond `limit`: newer ones after a `since` (page on from
`resume_id`), older ones before the newest (read them forward from `since=0`: `resume_id` is
the newest and continues live, not backwards).

The reserved `_alerts` answers its alert changes as streamed: JSON only, `?since=` an id only
(the changes carry their own topics' clocks, which interleave), and under a narrow token only
the changes of topics it may read; `limit` counts them before that filter, as it counts a
topic's updates before a group filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from pushsvc.broker.base import HistoryPage
from pushsvc.core import history_table
from pushsvc.core.topics import ALERTS, TopicMatcher, validate_readable
from pushsvc.core.updates import UpdateId
from pushsvc.deliver.projection import GroupFilter, Projection
from pushsvc.errors import BadRequest, UngroupedTag
from pushsvc.http.api.context import runtime
from pushsvc.http.api.whole_numbers import whole_number
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_TS_US, parse_rfc3339, seconds_to_us

bp = Blueprint("history", __name__)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
FORMATS = {"json": "application/json", "csv": "text/csv"}
# The page's facts travel in headers too, so a CSV answer carries them.
RESUME_HEADER = "Pushsvc-Resume-Id"
MORE_HEADER = "Pushsvc-More"
GAP_HEADER = "Pushsvc-Gap"


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    after: UpdateId | None
    since_us: int | None
    limit: int
    format: str


def parse_query(args: MultiDict[str, str], accept_csv: bool) -> HistoryQuery:
    """The query string, judged whole before anything is read (400 naming the parameter)."""
    after, since_us = None, None
    since = args.get("since")
    if since is not None:
        after = UpdateId.parse(since)
        if after is None:
            since_us = time_us(since, "since", ids=True)
    limit = whole_number("limit", args.get("limit"), default=DEFAULT_LIMIT, high=MAX_LIMIT)
    fmt = args.get("format")
    if fmt is None:
        fmt = "csv" if accept_csv else "json"
    elif fmt not in FORMATS:
        raise BadRequest(f"?format= is json or csv, not {fmt[:40]!r}")
    return HistoryQuery(after, since_us, limit, fmt)


# Epoch seconds as `?since=` takes them, and as /openapi.json describes them: digits, no sign,
# exponent or underscore (all of which float() would take).
EPOCH_SECONDS = re.compile(r"[0-9]{1,11}(?:\.[0-9]+)?")


def time_us(text: str, name: str, *, ids: bool = False) -> int:
    """A time parameter: epoch seconds or RFC 3339 (400 naming `name` otherwise; `ids`: the
    parameter also takes an update id, which the message says)."""
    if not EPOCH_SECONDS.fullmatch(text):
        try:
            return parse_rfc3339(text)
        except ValueError:
            either = "an update id (like a Last-Event-ID), " if ids else ""
            raise BadRequest(
                f"?{name}= takes {either}epoch seconds, or an "
                f"RFC 3339 date-time like 2025-11-21T04:40:00Z; got {text[:60]!r}"
            ) from None
    us = seconds_to_us(float(text))
    if not MIN_TS_US <= us <= MAX_TS_US:
        raise BadRequest(f"?{name}= must be a time in years 1..9999; got {text[:60]!r}")
    return us


@bp.get("/topics/<anytext:topic>/history")
def topic_history(topic: str) -> Response:
    validate_readable(topic)
    if topic == ALERTS:
        return _alerts_history()
    rt = runtime()
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    query = parse_query(request.args, accept_csv=best == "text/csv")
    # Answered like a stream of that one topic: 401 or 403 where the stream would be.
    rt.gate.reader(request, TopicMatcher([topic]))
    rule = rt.settings.rules.for_topic(topic)
    group = group_filter(request.args.getlist("group"), topic, rule.group_by)
    page = rt.broker.history(topic, after=query.after, since_us=query.since_us, limit=query.limit)
    # The table's statistics (CSV columns, and the client's DataFrame from the JSON): top
    # values are lists, not cells; the JSON updates carry them as streamed.
    windows, stats = rule.labels, rule.scalars
    if query.format == "csv":
        tags = history_table.tag_names(u.fields for u in page.updates)
        header = history_table.columns(windows, stats, tags)
        if group is not None:
            # One row per update and group of the filter: that group's windows.
            rows = (
                history_table.row(
                    {**u.fields, "windows": g["windows"]}, u.clock_us, windows, stats, tags
                )
                for u in page.updates
                for g in _groups(u.fields, group)
            )
        else:
            rows = (
                history_table.row(u.fields, u.clock_us, windows, stats, tags) for u in page.updates
            )
        body: bytes = history_table.to_csv(rows, header).encode()
    else:
        only = None if group is None else Projection(None, None, None, group)
        body = _json(topic, page, windows, stats, only)
    return _answer(page, body, query.format)


def _alerts_history() -> Response:
    rt = runtime()
    query = parse_query(request.args, accept_csv=False)
    if request.args.getlist("group"):
        raise BadRequest(f"{ALERTS} has no groups to filter by: each change names its own")
    if query.format == "csv":
        raise BadRequest(f"{ALERTS} answers JSON only: its changes have no windows to tabulate")
    if query.since_us is not None:
        raise BadRequest(
            f"on {ALERTS}, ?since= takes an update id: its changes carry their own topics' "
            "clocks, which interleave"
        )
    reader = rt.gate.reader(request, TopicMatcher([ALERTS]))
    page = rt.broker.history(ALERTS, after=query.after, limit=query.limit)
    scoped = None
    if reader.alert_topics is not None:
        scoped = Projection(None, None).scoped(reader.alert_topics, reader.scope_key)
    return _answer(page, _json(ALERTS, page, (), (), scoped), "json")


def _answer(page: HistoryPage, body: bytes, fmt: str) -> Response:
    headers = {
        "Cache-Control": "no-store",
        MORE_HEADER: "true" if page.more else "false",
        GAP_HEADER: "true" if page.gap else "false",
        "Vary": "Accept",
    }
    if page.resume is not None:
        headers[RESUME_HEADER] = page.resume.text
    return Response(body, mimetype=FORMATS[fmt], headers=headers)


def _groups(fields: dict[str, Any], group: GroupFilter) -> list[dict[str, Any]]:
    """The groups of an update that match `group`."""
    if "group" in fields:
        return [fields["group"]] if group.matches(fields["group"]["key"]) else []
    return [g for g in fields.get("groups", ()) if group.matches(g["key"])]


def _json(
    topic: str,
    page: HistoryPage,
    windows: tuple[str, ...],
    stats: tuple[str, ...],
    only: Projection | None,
) -> bytes:
    head = orjson.dumps(
        {
            "topic": topic,
            "resume_id": page.resume.text if page.resume else None,
            "more": page.more,
            "gap": page.gap,
            "windows": windows,
            "stats": stats,
        }
    )
    # The updates' JSON as streamed, spliced in without parsing or re-encoding; with a group
    # filter (or a narrow scope on `_alerts`), as a stream with that filter gets them.
    if only is None:
        updates = [u.data for u in page.updates]
    else:
        updates = [data for u in page.updates if (data := only.data(u)) is not None]
    return head[:-1] + b',"updates":[' + b",".join(updates) + b"]}"


def group_filter(given: list[str], topic: str, group_by: tuple[str, ...]) -> GroupFilter | None:
    """`?group=` for one topic: 400 when the topic does not group by a tag it names."""
    group = GroupFilter.parse(given)
    if group is not None:
        unknown = [tag for tag in group.tags if tag not in group_by]
        if unknown:
            grouped = f"groups by {', '.join(group_by)}" if group_by else "does not group"
            raise UngroupedTag(f"?group= names tag {unknown[0]!r}, but topic {topic!r} {grouped}")
    return group
