"""Read API: latest snapshot of one topic, and the topic list — each only as far as the
caller may read (docs/security.md).

The topic list is paged (`?limit=`, `?after=`): a page is read from the broker's sorted index
of names, only in the ranges of the caller's scope (`pushsvc.core.topic_pages`), so a call
costs the same with 100 topics as with 100,000, and one that may read none of them costs
nothing. Its answer's `next` is the `after` of the following page (null on the last), also
given as a `Link: <…>; rel="next"` header (RFC 8288), as GitHub pages its lists.
"""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from pushsvc.core.topic_pages import DEFAULT_LIMIT, MAX_LIMIT, topic_ranges
from pushsvc.core.topics import ALL, TopicMatcher, validate_topic
from pushsvc.errors import BadRequest, InvalidTopic, NotFound
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import group_filter
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
    text = args.get("limit")
    limit = DEFAULT_LIMIT
    if text is not None:
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
            raise BadRequest(f"?limit= is a whole number from 1 to {MAX_LIMIT}; got {text[:20]!r}")
        limit = int(text)
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
            "last_id": update.id.text,
            "last_ts": update.clock_us / 1_000_000,
            "subscribers": counts[topic],
        }
        for topic, update in page.latest.items()
    ]
    headers = {"Cache-Control": "no-store"}
    if page.next is not None:
        query = urlencode({"limit": limit, "after": page.next})
        headers["Link"] = f'<topics?{query}>; rel="next"'
    body = orjson.dumps({"topics": topics, "next": page.next})
    return Response(body, mimetype="application/json", headers=headers)


@bp.get("/alerts")
def active_alerts() -> dict[str, object]:
    """The alert instances pending or firing now, each as its latest change on `_alerts` (with
    its value and since when), of the topics the caller may read."""
    rt = runtime()
    scope = rt.gate.readable(request)
    readable = None if scope is None else scope.restrict(TopicMatcher([ALL]))
    found = [orjson.loads(body) for body in rt.broker.active_alerts()]
    shown = [a for a in found if readable is None or readable(a["topic"])]
    shown.sort(key=lambda a: (a["alert"], a["topic"], orjson.dumps(a["group"])))
    return {"alerts": shown}
