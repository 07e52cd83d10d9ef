"""GET /topics/{topic}/forecast — a topic's (or one group's, `?group=tag:value`) latest
forecast: the predicted points over its rule's horizon, each with its 80 % and 95 % prediction
intervals. Read like a stream of that topic (401/403 alike).

    {"topic": "kitchen", "model": "holt_winters", "stat": "mean", "resolution": "1m",
     "from": 1732752000000,
     "points": [{"t": 1732752060000, "mean": 12.5, "lo80": 10.1, "hi80": 14.9,
                 "lo95": 8.8, "hi95": 16.2}, ...]}

(`pushsvc.series.forecasting` makes it; `from` and each `t` are bucket starts in epoch ms.)
The answer says how current it is: `clock`, the topic's clock (its latest update's, epoch ms),
and `pending`, the entries of the topic's partition logged and not yet applied; right after a
bulk post the aggregator is still working through it, and `from` lags `clock` by the time it
has yet to reach.
The forecast is the one the aggregator made when the tier's last bucket closed, published in
the same step as that bucket's point and kept as the only entry of its own series, as the
model's state (its points made from it here, on read: a series keeps a few numbers, not a
horizon of points); so the answer is the same from any web process, through any failover.
`points` is empty while the model is still learning (or learns afresh: a rules file that
changed its model). 404 when the topic's rule forecasts nothing, or when no forecast is kept:
nothing closed yet, or the series has been quiet for longer than its tier's buckets are kept
after the last one closed (the forecast goes as the point would).
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, request

from pushsvc.broker.base import ServingBroker
from pushsvc.core.topics import TopicMatcher, validate_topic
from pushsvc.core.updates import FORECAST_TIER
from pushsvc.errors import BadRequest, NotFound
from pushsvc.http.api.context import runtime
from pushsvc.http.api.history import group_filter
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_TS_US
from pushsvc.series.forecasting import kept_fields
from pushsvc.stats.groups import group_id

bp = Blueprint("forecast", __name__)


def _pending(broker: ServingBroker, topic: str) -> int:
    """Entries of `topic`'s partition logged and not yet applied (BrokerUnavailable when the
    broker cannot say)."""
    index = broker.partition_of(topic)
    return sum(lag.entries for lag in broker.lag() if lag.shard[0] == index)


@bp.get("/topics/<anytext:topic>/forecast")
def topic_forecast(topic: str) -> Response:
    validate_topic(topic)
    rt = runtime()
    unknown = [name for name in request.args if name != "group"]
    if unknown:
        raise BadRequest(f"unknown parameter ?{unknown[0][:40]}=; forecast takes ?group= only")
    rt.gate.reader(request, TopicMatcher([topic]))
    rules = rt.settings.rules
    rule = rules.for_topic(topic)
    group = group_filter(request.args.getlist("group"), topic, rule.group_by)
    gid = ""
    answer: dict[str, object] = {"topic": topic}
    if group is not None:
        missing = [tag for tag in rule.group_by if tag not in group.tags]
        if missing:
            raise BadRequest(
                f"?group= must name every tag topic {topic!r} groups by; {missing[0]!r} is missing"
            )
        values = dict(group.pairs)
        gid = group_id([values[tag] for tag in rule.group_by])
        answer["group"] = values
    forecast = rule.forecast
    if forecast is None:
        raise NotFound(f"topic {topic!r}'s rule has no forecast")
    retention = {t.resolution_label: t.retention_us for t in rules.series_of(rule)}
    page = rt.broker.series(
        topic,
        resolution=FORECAST_TIER + forecast.tier,
        group_id=gid,
        since_us=MIN_TS_US,
        until_us=MAX_TS_US,
        retention_us=retention.get(forecast.tier, MAX_TS_US - MIN_TS_US),
        limit=2,  # the latest, and one a trim has not reached yet
    )
    if not page.points:
        raise NotFound(f"no forecast of topic {topic!r} is kept (yet)")
    # Kept as the outlook over the horizon: its points are made now, as the model made them.
    answer.update(kept_fields(forecast, page.points[-1][1]))
    latest = rt.broker.latest(TopicMatcher([topic])).get(topic)
    answer["clock"] = None if latest is None else latest.clock_us // 1000
    answer["pending"] = _pending(rt.broker, topic)
    return Response(
        orjson.dumps(answer),
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )
