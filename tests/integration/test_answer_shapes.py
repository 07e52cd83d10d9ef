"""What the server writes against the classes that define each shape (`pushsvc.core.*_shape`,
`window_stats`): the classes `/openapi.json` is generated from and the client decodes into.

The server does not encode updates, points, snapshots or alerts by these classes: the hot path
writes them with orjson (`pushsvc.core.updates`, `pushsvc.stats`). So each answer and message,
made from events Hypothesis varies, must decode into its class *strictly*: every member of a
known type, and nothing dropped or retyped (the decoded value, turned back into JSON values,
equals the JSON). A member the encoder adds, renames or retypes fails here before a client or
the document disagrees with the server.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import MakeApp
from pushsvc.core import point_shape, window_stats
from pushsvc.core.alert_shape import AlertChangeMessage
from pushsvc.core.listing_shapes import Alerts, Anomalies, History, Series, TopicPresence, Topics
from pushsvc.core.point_shape import Forecast, PointMessage
from pushsvc.core.rules_shape import RulesView
from pushsvc.core.snapshot_shape import SnapshotMessage
from pushsvc.core.update_shape import StreamUpdate
from pushsvc.core.updates import (
    SeriesWrite,
    UpdateId,
    deletion_draft,
    point_draft,
    snapshot_message,
)
from pushsvc.core.updates import Update as Numbered
from pushsvc.http.api.readiness_shape import Readiness

RULES = """
[[rule]]
topics = ["shop.*"]
windows = ["1m"]
last = [5]
stats = ["count", "sum", "mean", "min", "var", "p90", "rate"]
distinct = ["user"]
top = [{ tag = "product", k = 2 }]
group_by = ["region"]
series = ["10s:1h"]
anomaly = { every = "10s", stat = "mean", learn = "2m", threshold = 0.5 }
forecast = { stat = "mean", tier = "10s", model = "linear", range = "2m", horizon = "1m" }

[[alert]]
name = "high"
topics = ["shop.*"]
when = "mean[1m] > 5"
labels = { severity = "page" }

"""
T0 = 1763700000
_topics = itertools.count()


def strict(data: bytes, shape: Any) -> Any:
    """`data` decoded into `shape`, which must keep all of it as it was."""
    decoded = msgspec.json.decode(data, type=shape)
    assert msgspec.to_builtins(decoded) == orjson.loads(data)
    return decoded


def strict_members(members: dict[str, Any], type_of: Any) -> None:
    """Each member of a keyed object (a window's statistics, a point) is of its key's type."""
    for name, value in members.items():
        kind = type_of(name)
        assert kind is not None, f"no such member: {name}"
        assert msgspec.to_builtins(msgspec.convert(value, kind)) == value, name


def strict_windows(windows: dict[str, dict[str, Any]]) -> None:
    for stats in windows.values():
        strict_members(stats, window_stats.stat_type)


def strict_update(data: bytes) -> StreamUpdate:
    update: StreamUpdate = strict(data, StreamUpdate)
    strict_windows(update.windows)
    for group in [update.group] if update.group else update.groups or []:
        strict_windows(group.windows)
    return update


def strict_point(point: dict[str, Any]) -> None:
    assert set(point_shape.REQUIRED) <= set(point)
    strict_members(point, point_shape.stat_type)


@pytest.fixture
def shop(make_app: MakeApp, tmp_path: Path) -> FlaskClient:
    """One app for a test's every example: each example posts to a topic of its own."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    return make_app(rules=str(rules)).test_client()


def _events(draw: st.DrawFn) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    ts = float(T0)
    for _ in range(draw(st.integers(1, 60))):
        ts += draw(st.sampled_from([0, 0.5, 3, 11, -2]))  # -2: late, within the grace
        event: dict[str, Any] = {"ts": ts}
        if draw(st.booleans()) or not events:
            event["value"] = draw(st.floats(-1e6, 1e6) | st.integers(-100, 100))
        if "value" not in event or draw(st.integers(0, 9)) == 0:
            event["type"] = draw(st.sampled_from(["shipped", "paid"]))
            event["data"] = draw(st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5))
        tags = {
            tag: draw(st.sampled_from(values))
            for tag, values in (("user", "abc"), ("product", "xyz"), ("region", ["eu", "us"]))
            if draw(st.booleans())
        }
        if tags:
            event["tags"] = tags
        events.append(event)
    return events


@settings(
    max_examples=15,
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=st.composite(_events)())
def test_what_a_topic_answers_decodes_strictly_into_its_shapes(
    shop: FlaskClient, events: list[dict[str, Any]]
) -> None:
    topic = f"shop.t{next(_topics)}"
    posted = shop.post(f"/topics/{topic}/events", json=events)
    assert posted.status_code == 202
    history: History = strict(shop.get(f"/topics/{topic}/history?limit=10000").data, History)
    updates = [strict_update(orjson.dumps(u)) for u in history.updates]
    # One update an event accepted; a message past the grace has one too, in no statistic.
    answer = orjson.loads(posted.data)
    assert len([u for u in updates if not u.past_grace]) == answer["accepted"]
    assert len([u for u in updates if u.past_grace]) <= answer.get("late", 0)
    strict_update(shop.get(f"/topics/{topic}/stats").data)

    series: Series = strict(shop.get(f"/topics/{topic}/series?resolution=10s").data, Series)
    for n, point in enumerate(series.points):
        strict_point(point)
        write = SeriesWrite("10s", "", 0, b"", 0, revision=n % 2)
        drafted = point_draft(topic, 0, write, point, {"region": "eu"} if n % 2 else None)
        numbered = Numbered.of(drafted, UpdateId("ab", 1, n))
        strict_point(strict(numbered.data, PointMessage).point)
    forecast = shop.get(f"/topics/{topic}/forecast")
    if forecast.status_code == 200:
        strict(forecast.data, Forecast)

    newest = UpdateId.parse(updates[-1].id)
    assert newest is not None
    latest = {topic: Numbered.numbered(topic, newest, 0, orjson.dumps(history.updates[-1]))}
    message = snapshot_message(latest, gap=False, id=None)
    data = message.split(b"data:", 1)[1].strip()
    snapshot: SnapshotMessage = strict(data, SnapshotMessage)
    strict_windows(snapshot.topics[topic].windows)
    strict(deletion_draft(topic, 0).body, SnapshotMessage)


def test_every_listing_decodes_strictly_into_its_shape(shop: FlaskClient) -> None:
    tags = [{"region": r, "user": u, "product": "x"} for r in ("eu", "us") for u in "ab"]
    events = [{"value": 3 + n % 9, "ts": T0 + n * 3, "tags": tags[n % 4]} for n in range(60)]
    assert shop.post("/topics/shop.listed/events", json=events).status_code == 202
    topics: Topics = strict(shop.get("/topics?limit=1000").data, Topics)
    assert "shop.listed" in [t.topic for t in topics.topics]
    alerts: Alerts = strict(shop.get("/alerts").data, Alerts)
    assert alerts.alerts, "the rule fires on the listed topic"
    changes: History = strict(shop.get("/topics/_alerts/history").data, History)
    assert changes.updates
    for change in changes.updates:
        strict(orjson.dumps(change), AlertChangeMessage)
    anomalies: Anomalies = strict(shop.get("/anomalies").data, Anomalies)
    assert anomalies.anomalies
    for entry in anomalies.anomalies:
        for point in entry.points:
            strict_point(point)
    strict(shop.get("/topics/shop.listed/presence").data, TopicPresence)
    ready: Readiness = strict(shop.get("/readyz").data, Readiness)
    assert ready.status == "ready" and ready.shards


EVERY_KIND_OF_RULE = """
[[rule]]
topics = ["shop.*"]
windows = ["10s", "2h"]
last = [50]
stats = ["count", "mean", "p99"]
group_by = ["region"]
series = ["1m:1d"]
distinct = ["user"]
top = [{ tag = "product", k = 3 }]
anomaly = { every = "1m", stat = "mean", learn = "1h", threshold = 0.5 }
forecast = { stat = "mean", tier = "1m", model = "holt_winters", season = "1h", horizon = "10m" }
grace = "1h"
late = "refuse"

[[rule]]
topics = ["line.*"]
windows = ["1m"]
stats = ["count"]
series = ["10s:1h"]
forecast = { stat = "count", tier = "10s", model = "linear", range = "5m", horizon = "1m" }

[[alert]]
name = "slow"
topics = ["shop.*"]
when = "p99[10s] > 5"
clear = "p99[10s] < 3"
for = "30s"
labels = { severity = "page" }
annotations = { summary = "slow" }

[[derive]]
topic = "line.ratio"
every = "10s"
value = "count[1m](line.a) / count[1m](line.b)"

[[session]]
topic = "visits"
from = ["web.*"]
key = "user"
gap = "30m"
max_duration = "4h"
funnel = { tag = "step", steps = ["view", "cart", "paid"], within = "1h" }
"""


def test_the_rules_answer_decodes_strictly_into_its_shape(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """`GET /rules` of a file with every kind of rule and every optional field."""
    rules = tmp_path / "rules.toml"
    rules.write_text(EVERY_KIND_OF_RULE)
    answer: RulesView = strict(
        make_app(rules=str(rules)).test_client().get("/rules").data, RulesView
    )
    shop, line = answer.rules
    assert shop.anomaly and shop.forecast and shop.distinct and shop.top and shop.late
    assert {w.kind for w in shop.windows} == {"time", "count"}
    assert line.forecast and line.forecast.model == "linear"
    assert answer.alerts and answer.alerts[0].clear
    assert answer.derives and answer.session and answer.session[0].funnel
