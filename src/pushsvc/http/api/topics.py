"""Read API: latest snapshot of one topic, and the topic list — each only as far as the
caller may read (docs/security.md).

The topic list is paged (`?limit=`, `?after=`): a page is read from the broker's sorted index
of names, only in the ranges of the caller's scope (`pushsvc.core.topic_pages`), so a call
costs the same with 100 topics as with 100,000, and one that may read none of them costs
nothing. Its answer's `next` is the `after` of the following page (null on the last), also
given as a `Link: <…>; rel="next"` header (RFC 8288), as GitHub pages its lists.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from pushsvc.core.topic_pages import DEFAULT_LIMIT, MAX_LIMIT, SCAN, topic_ranges
from pushsvc.core.topics import ALL, TopicMatcher, validate_topic
from pushsvc.errors import BadRequest, InvalidTopic, NotFound
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import group_filter
from pushsvc.http.api.whole_numbers import whole_number
from pushsvc.security.visible_rules import visible_rules

bp = Blueprint("topics", __name__)


@bp.get("/topics/<anytext:topic>/stats")
def topic_stats(topic: str) -> Response:
    validate_topic(topic)
    rt = runtime()
    # Answered like a stream of that one topic: 401 or 403 where the stream would be.
    rt.gate.reader(request, TopicMatcher([topic]))
    rule = rt.settings.rules.for_topic(topic)
    group = group_filter(request.args.getlist("group"), topic, rule.group_by)
    latest = rt.broker.latest(TopicMatcher([topic])).get(topic)
    if latest is None:
        raise NotFound(f"topic {topic!r} has no data yet")
    if not rule.groups:
        return Response(latest.data, mimetype="application/json")
    # A grouping topic: its latest update, and its live groups (those of the filter).
    kept = [orjson.loads(g) for g in rt.broker.latest_groups([topic]).get(topic, [])]
    answer = dict(latest.fields)
    answer.pop("group", None)
    answer["groups"] = [g for g in kept if group is None or group.matches(g["key"])]
    return Response(orjson.dumps(answer), mimetype="application/json")


@bp.get("/rules")
def rules() -> dict[str, object]:
    """The effective analytics rules: what each topic keeps (windows, statistics, groups),
    those of the topics the caller may read (`pushsvc.security.visible_rules`)."""
    rt = runtime()
    return visible_rules(rt.settings.rules, rt.gate.readable(request))


def page_query(args: MultiDict[str, str]) -> tuple[int, str | None]:
    """`?limit=` and `?after=` of a topic listing, judged before anything is read (400 naming
    the parameter)."""
    limit = whole_number("limit", args.get("limit"), default=DEFAULT_LIMIT, high=MAX_LIMIT)
    after = args.get("after")
    if after is not None:
        try:
            validate_topic(after)
        except InvalidTopic:
            raise BadRequest(
                f"?after= is a topic name: the `next` of the previous page; got {after[:64]!r}"
            ) from None
    return limit, after


@bp.get("/topics")
def list_topics() -> Response:
    limit, after = page_query(request.args)
    rt = runtime()
    scope = rt.gate.readable(request)
    ranges = topic_ranges((ALL,) if scope is None else scope.selectors)
    page = rt.broker.latest_page(ranges, after=after, limit=limit)
    counts = rt.hub.subscriber_counts(page.latest)
    topics = [
        {
            "topic": topic,
            "last_id": head.id,
            "last_ts": head.clock_us / 1_000_000,
            "subscribers": counts[topic],
        }
        for topic, head in page.latest.items()
    ]
    body = orjson.dumps({"topics": topics, "next": page.next})
    return Response(body, mimetype="application/json", headers=_paged("topics", limit, page.next))


@bp.get("/alerts")
def active_alerts() -> Response:
    """The alert instances pending or firing now, each as its latest change on `_alerts` (with
    its value and since when), of the topics the caller may read; a page at a time, by alert,
    topic and group. Instances sort by alert first, so a narrow scope's cannot be read by
    range: a call reads at most `SCAN` instances and may answer fewer than `limit`, even
    none, with a `next` to read on from (`scan_page`)."""
    limit, after = _alerts_query(request.args)
    rt = runtime()
    scope = rt.gate.readable(request)
    readable = None if scope is None else scope.restrict(TopicMatcher([ALL]))

    def keep(key: str) -> bool:
        return readable is None or readable(key.split(INSTANCE_SEPARATOR, 2)[1])

    page = rt.broker.active_alerts_page(after=after, limit=limit, scan=SCAN, keep=keep)
    following = None if page.next is None else _cursor(page.next)
    body = b'{"alerts":[' + b",".join(page.changes) + b'],"next":' + orjson.dumps(following) + b"}"
    return Response(body, mimetype="application/json", headers=_paged("alerts", limit, following))


# An alert instance's key (`pushsvc.aggregate.aggregator`): alert, topic and group JSON.
INSTANCE_SEPARATOR = "\x1f"


ALERTS_CURSOR_PATTERN = r"(?:[A-Za-z0-9_-]{4})*[A-Za-z0-9_-]{2,4}"
"""`GET /alerts`' `?after=`: unpadded base64url (never 1 mod 4 characters long)."""
_ALERTS_CURSOR = re.compile(ALERTS_CURSOR_PATTERN)


def _cursor(key: str) -> str:
    """An instance key as `?after=` carries it: base64url, opaque to callers."""
    return base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode()


def _alerts_query(args: MultiDict[str, str]) -> tuple[int, str | None]:
    """`?limit=` and `?after=` of `GET /alerts`. A cursor is a position, not a reference: any
    well-formed one reads on from where it sorts (a key resolved since, or one never issued)."""
    limit = whole_number("limit", args.get("limit"), default=DEFAULT_LIMIT, high=MAX_LIMIT)
    text = args.get("after")
    if text is None:
        return limit, None
    if _ALERTS_CURSOR.fullmatch(text) is None:
        raise BadRequest(f"?after= is the `next` of the previous page of alerts; got {text[:64]!r}")
    key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return limit, key.decode(errors="replace")


def _paged(path: str, limit: int, following: str | None) -> dict[str, str]:
    """A listing's headers: its next page as a `Link` (RFC 8288, relative to the listing)."""
    headers = {"Cache-Control": "no-store"}
    if following is not None:
        query = urlencode({"limit": limit, "after": following})
        headers["Link"] = f'<{path}?{query}>; rel="next"'
    return headers
