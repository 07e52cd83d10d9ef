"""Read API: latest snapshot of one topic, and the topic list — each only as far as the
caller may read (docs/security.md)."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, request

from pushsvc.core.topics import ALL, TopicMatcher, validate_topic
from pushsvc.errors import NotFound
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


@bp.get("/topics")
def list_topics() -> dict[str, object]:
    rt = runtime()
    scope = rt.gate.readable(request)
    everything = TopicMatcher([ALL])
    latest = rt.broker.latest(everything if scope is None else scope.restrict(everything))
    counts = rt.hub.subscriber_counts(latest)
    topics = [
        {
            "topic": topic,
            "last_id": update.id.text,
            "last_ts": update.clock_us / 1_000_000,
            "subscribers": counts[topic],
        }
        for topic, update in sorted(latest.items())
    ]
    return {"topics": topics}


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
