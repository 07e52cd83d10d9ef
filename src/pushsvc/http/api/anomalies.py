"""GET /anomalies — the topics and groups the caller may read, ranked by anomaly rate over a
range (Netdata's Anomaly Advisor).

For every topic with data whose rule scores anomalies (`anomaly` in the rules file), the topic's
own series and each live group's: the points of the rule's `every` tier whose bucket starts
in `[since, until)` (epoch seconds or RFC 3339, as `/series` takes them; without them,
everything the tier keeps). Each such series is one entry, `{"topic", "group"?, "rate",
"anomalous", "scored", "points"}`: `rate` is anomalous / scored among those points, `points`
its `POINTS` most anomalous (score descending, then oldest first). Entries rank by rate, then
by anomalous points, then topic and group; a series without a scored point in the range is
left out; `limit` (default 20) entries at most.

Cost: every scored point of the range of every such series is read, at most `MAX_LIMIT` per
series (`/series`' cap): a range of a day of 1m buckets over 100 groups reads 144,000 points.
The topics are read from the broker's sorted index, in the ranges both an `anomaly` rule's
selectors and the caller's scope select (`common_ranges`), never every topic: without an
`anomaly` rule, or for a caller who may read no scored topic, a call reads nothing. A ranking
is over every series scored, so its cost grows with them: those the operator scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from flask import Blueprint, request

from pushsvc.core.durations import duration_label
from pushsvc.core.topic_pages import MAX_LIMIT as PAGE_MAX_LIMIT
from pushsvc.core.topic_pages import common_ranges
from pushsvc.core.topics import ALL
from pushsvc.errors import EmptyRange
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import time_us
from pushsvc.http.api.series import MAX_LIMIT
from pushsvc.http.api.whole_numbers import whole_number
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_TS_US
from pushsvc.rules.analytics import Rule, Rules
from pushsvc.rules.point import Point
from pushsvc.stats.groups import group_id

bp = Blueprint("anomalies", __name__)

DEFAULT_ENTRIES = 20
MAX_ENTRIES = 1000
POINTS = 3
"""The most anomalous points an entry shows."""


@bp.get("/anomalies")
def anomalies() -> dict[str, object]:
    since_us, until_us, limit = _query()
    rt = runtime()
    scope = rt.gate.readable(request)
    rules = rt.settings.rules
    entries: list[dict[str, Any]] = []
    for topic in _scored_topics(rules, (ALL,) if scope is None else scope.selectors):
        rule = rules.for_topic(topic)
        if rule.anomaly is None:
            continue
        keys: list[dict[str, str | None] | None] = [None]
        if rule.groups:
            groups = rt.broker.latest_groups([topic]).get(topic, [])
            keys += [orjson.loads(g)["key"] for g in groups]
        for key in keys:
            entry = _entry(topic, rule, key, since_us, until_us)
            if entry is not None:
                entries.append(entry)
    entries.sort(
        key=lambda e: (-e["rate"], -e["anomalous"], e["topic"], orjson.dumps(e.get("group")))
    )
    return {
        "since": None if since_us == MIN_TS_US else since_us / 1_000_000,
        "until": None if until_us == MAX_TS_US else until_us / 1_000_000,
        "anomalies": entries[:limit],
        "more": len(entries) > limit,
    }


def _scored_topics(rules: Rules, readable: Sequence[str]) -> Iterator[str]:
    """The topics with data, in name order, that an `anomaly` rule selects and `readable`
    allows (some may be another rule's, which comes first: the caller checks)."""
    scoring = [s for rule in rules.rules if rule.anomaly is not None for s in rule.selectors]
    if rules.default.anomaly is not None:
        scoring = [ALL]
    if not scoring or not readable:
        return
    ranges = common_ranges(scoring, readable)
    after = None
    while ranges:
        page = runtime().broker.latest_page(ranges, after=after, limit=PAGE_MAX_LIMIT)
        yield from page.latest
        if page.next is None:
            return
        after = page.next


def _entry(
    topic: str,
    rule: Rule,
    key: dict[str, str | None] | None,
    since_us: int,
    until_us: int,
) -> dict[str, Any] | None:
    """One series' entry; None when none of its points in the range is scored."""
    rt = runtime()
    anomaly = rule.anomaly
    assert anomaly is not None
    tier = next(
        (t for t in rt.settings.rules.series_of(rule) if t.resolution_us == anomaly.every_us),
        None,
    )
    if tier is None:
        return None
    gid = "" if key is None else group_id([key.get(tag) for tag in rule.group_by])
    page = rt.broker.series(
        topic,
        resolution=duration_label(tier.resolution_us),
        group_id=gid,
        since_us=since_us,
        until_us=until_us,
        retention_us=tier.retention_us,
        limit=MAX_LIMIT,
    )
    top_tags = tuple(tag for tag, _ in rule.top)
    points = [Point.unpacked(t, packed, rule.distinct, top_tags) for t, packed in page.points]
    scored = [p for p in points if p.anomaly is not None]
    if not scored:
        return None
    flagged = sum(p.anomalous for p in scored)
    worst = sorted(scored, key=lambda p: (-(p.anomaly or 0.0), p.t_us))[:POINTS]
    entry: dict[str, Any] = {"topic": topic}
    if key is not None:
        entry["group"] = key
    entry.update(
        {
            "resolution": anomaly.every,
            "stat": anomaly.stat,
            "rate": flagged / len(scored),
            "anomalous": flagged,
            "scored": len(scored),
            "points": [p.fields(tier.resolution_us) for p in worst],
        }
    )
    return entry


def _query() -> tuple[int, int, int]:
    """`since`, `until` (µs) and `limit`, judged whole before anything is read."""
    args = request.args
    since, until = args.get("since"), args.get("until")
    since_us = time_us(since, "since") if since is not None else MIN_TS_US
    until_us = time_us(until, "until") if until is not None else MAX_TS_US
    if since_us >= until_us:
        raise EmptyRange(f"?since= ({since}) must be before ?until= ({until})")
    limit = whole_number("limit", args.get("limit"), default=DEFAULT_ENTRIES, high=MAX_ENTRIES)
    return since_us, until_us, limit
