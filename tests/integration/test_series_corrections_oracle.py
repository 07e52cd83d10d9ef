"""Series corrections through the whole path (POST, broker, aggregator, series store, the series
read) against pandas.

A rule's grace (`1m`) is beyond the server's lateness (`--grace 2s`): buckets are published 2 s
after their end and corrected by the late events the grace accepts. Hypothesis draws streams
whose events are on time, late within the grace at every distance (also to its edge), ties
with an earlier event's time, or past the grace (kept on the late stream, in no bucket); one
event far ahead then brings every bucket past its grace. Afterwards every point of every tier
the series read gives equals pandas' `resample` of the accepted events: count, sum, min and
max exactly, mean and var to rounding, percentiles exactly at the finest tier and within the
sketch's 1 % of the order statistics around them above it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MakeApp
from support.series_oracle import check_points

S = 1_000_000
GRACE = 60 * S
TIERS = (("1s", S), ("10s", 10 * S), ("1m", 60 * S))
RULES = """
[[rule]]
topics = ["late.*"]
windows = ["10s"]
grace = "1m"
series = ["1s:1h", "10s:1h", "1m:1d"]
"""
BASE = 1_763_700_000 * S + 250_000
KINDS = st.sampled_from(["next", "next", "next", "within", "within", "tie", "edge", "past"])
VALUES = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6, allow_nan=False))


@st.composite
def streams(draw: st.DrawFn) -> list[list[tuple[int, float]]]:
    """Batches of (ts_us, value), the first event on time."""
    clock = BASE
    seen = [BASE]
    events = [(BASE, draw(VALUES))]
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(KINDS)
        if kind == "next":
            ts = clock + draw(st.sampled_from([1, S // 2, S, 3 * S, 11 * S, 75 * S]))
        elif kind == "tie":
            ts = draw(st.sampled_from(seen))
        elif kind == "within":
            ts = clock - draw(st.integers(1, GRACE - 1))
        elif kind == "edge":
            ts = clock - GRACE + draw(st.sampled_from([-1, 0, 1]))
        else:
            ts = clock - GRACE - draw(st.integers(1, 4 * GRACE))
        events.append((ts, draw(VALUES)))
        seen.append(ts)
        clock = max(clock, ts)
    sizes = draw(st.lists(st.integers(1, 4), min_size=len(events), max_size=len(events)))
    batches, at = [], 0
    for size in sizes:
        if at >= len(events):
            break
        batches.append(events[at : at + size])
        at += size
    return batches


def _post(client: FlaskClient, topic: str, batch: list[tuple[int, float]]) -> None:
    body = [{"value": value, "ts": ts / S} for ts, value in batch]
    assert client.post(f"/topics/{topic}/events", json=body).status_code == 202


def _read(client: FlaskClient, topic: str, resolution: str) -> list[dict[str, Any]]:
    answer = client.get(f"/topics/{topic}/series?resolution={resolution}&since=0&limit=10000")
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert not body["more"]
    points: list[dict[str, Any]] = body["points"]
    return points


def check_series(
    client: FlaskClient, topic: str, batches: list[list[tuple[int, float]]]
) -> list[tuple[int, float]]:
    """Post `batches`, then an event past every bucket's grace; check every tier's points
    against pandas over the accepted events (returned)."""
    clock: int | None = None
    accepted: list[tuple[int, float]] = []
    for batch in batches:
        for ts, value in batch:
            if clock is not None and ts < clock - GRACE:
                continue  # past the grace: on the late stream
            clock = ts if clock is None else max(clock, ts)
            accepted.append((ts, value))
        _post(client, topic, batch)
    assert clock is not None
    _post(client, topic, [(clock + GRACE + 10 * 60 * S, 0.0)])  # in no bucket read below
    for label, width in TIERS:
        points = [p for p in _read(client, topic, label) if p["t"] * S <= clock]
        check_points(points, accepted, label=label, width_us=width, exact_percentiles=label == "1s")
    return accepted


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=streams())
def test_every_corrected_point_equals_pandas_resample(
    make_app: MakeApp, tmp_path_factory: Any, batches: list[list[tuple[int, float]]]
) -> None:
    client = _client(make_app, tmp_path_factory.mktemp("rules"))
    check_series(client, f"late.{uuid.uuid4().hex[:10]}", batches)


def test_a_late_event_into_a_published_bucket_corrects_it_and_its_coarser_buckets(
    make_app: MakeApp, tmp_path: Path
) -> None:
    client = _client(make_app, tmp_path)
    topic = f"late.{uuid.uuid4().hex[:10]}"
    minute = BASE - BASE % (60 * S)
    _post(client, topic, [(minute, 1.0), (minute + 30 * S, 2.0)])
    # Published 2 s after their end, long before the grace of a minute is over.
    assert [p["count"] for p in _read(client, topic, "1s")] == [1]
    assert [p["count"] for p in _read(client, topic, "10s")] == [1]
    _post(client, topic, [(minute + S // 2, 5.0), (minute + S // 4, 6.0)])  # late, same bucket
    assert [p["count"] for p in _read(client, topic, "1s")] == [1]  # until the next second
    _post(client, topic, [(minute + 31 * S, 3.0)])  # the clock passes the next second
    assert [(p["count"], p["sum"]) for p in _read(client, topic, "1s")] == [(3, 12.0)]
    assert [(p["count"], p["sum"]) for p in _read(client, topic, "10s")] == [(3, 12.0)]
    _post(client, topic, [(minute + 65 * S, 0.0)])
    assert [(p["count"], p["sum"]) for p in _read(client, topic, "1m")] == [(5, 17.0)]


_APPS: dict[int, FlaskClient] = {}


def _client(make_app: MakeApp, where: Path) -> FlaskClient:
    """One app per test run (Hypothesis calls the test once per example; each example posts to
    a topic of its own)."""
    key = id(make_app)
    if key not in _APPS:
        _APPS.clear()
        rules = where / "rules.toml"
        rules.write_text(RULES)
        app = make_app(grace="2s", rules=str(rules), max_future="1000d")
        _APPS[key] = app.test_client()
    return _APPS[key]
