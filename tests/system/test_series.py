"""Long-range series end to end, on the embedded broker and on Redis: every point of every tier
equals pandas' `resample` of the accepted events (percentiles within 1 %), retention keeps
exactly what the tier keeps, groups have series of their own, `resolution=auto` answers
contiguous segments, `?series=` streams each point once in the update sequence and resumes
without a gap or a duplicate, and bad parameters are a 400 naming the parameter."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, start_tool, wait_until
from harness.redis_server import RedisServer

from pushsvc.client import Client

S = 1_000_000
LATENESS_S = 5
RULES = """
[[rule]]
topics = ["series.grouped.*"]
windows = ["10s"]
stats = ["count", "mean"]
group_by = ["station"]
series = ["1m:24h", "1h:2d"]
"""
T0 = 1_763_700_000.25  # event time of the first event, epoch seconds
STATS = ("count", "sum", "mean", "min", "max", "var", "stddev")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


@pytest.fixture(scope="module", params=["memory", "redis"])
def series_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("series") / "rules.toml"
    rules.write_text(RULES)
    args = ["serve", "--tick", "0", "--rules", str(rules)]
    redis_server = None
    if request.param == "redis":
        redis_server = RedisServer().start()
        args += ["--redis-url", redis_server.url, "--prefix", "series:"]
    proc = PushsvcProcess(*args).start()
    yield proc
    proc.stop()
    if redis_server is not None:
        redis_server.stop()


def _three_hours(seed: int) -> list[dict[str, Any]]:
    """Events over three hours of event time, in posting order: irregular steps, ties, late
    events within the lateness, two idle gaps (one longer than an hour), two stations."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    clock = T0
    end = T0 + 3 * 3600
    while clock < end:
        roll = rng.random()
        if roll < 0.0004:
            clock += rng.choice([20 * 60, 70 * 60])  # idle
        elif roll < 0.05:
            pass  # a tie with the previous event
        else:
            clock += rng.expovariate(1 / 2.0)
        ts = clock
        if rng.random() < 0.05:
            ts = clock - rng.uniform(0, LATENESS_S - 0.01)  # late, but accepted
        events.append(
            {
                "value": round(rng.lognormvariate(3, 1), 3),
                "ts": round(ts, 6),
                "tags": {"station": rng.choice(["grill", "fry"])},
            }
        )
    return events


def _post_all(port: int, topic: str, events: list[dict[str, Any]]) -> None:
    """Post in batches, then wait until the last event's update is out (on Redis the
    aggregator applies the log after the 202): its points are published with it."""
    for start in range(0, len(events), 2000):
        status, body = post(port, topic, events[start : start + 2000])
        assert status == 202, body
    wait_until(lambda: _latest_event(port, topic) == events[-1]["value"], what="the last update")


def _latest_event(port: int, topic: str) -> float | None:
    status, _, body = request(port, "GET", f"/topics/{topic}/stats")
    event = json.loads(body).get("event") if status == 200 else None
    return None if event is None else float(event["value"])


def _frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "value": [e["value"] for e in events],
            "station": [e["tags"]["station"] for e in events],
        },
        index=pd.to_datetime([round(e["ts"] * S) for e in events], unit="us", utc=True),
    )
    return frame.sort_index(kind="stable")


def _expected(values: pd.Series, resolution: str, clock_s: float, keep_s: float) -> pd.DataFrame:
    """pandas' points of one tier: closed buckets with events, within the retention."""
    width = pd.Timedelta(resolution).total_seconds()
    table = values.resample(resolution).agg(["count", "sum", "mean", "min", "max", "var", "std"])
    table = table[table["count"] > 0]
    starts = table.index.as_unit("us").asi8 / 1e6
    closed = starts + width + LATENESS_S <= clock_s
    kept = starts > clock_s - keep_s
    return table[closed & kept]


def _series(port: int, topic: str, query: str) -> dict[str, Any]:
    status, _, body = request(port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def _check_points(
    points: list[dict[str, Any]], values: pd.Series, want: pd.DataFrame, resolution: str
) -> None:
    assert [p["t"] for p in points] == pytest.approx(
        list(want.index.as_unit("us").asi8 / 1e6), abs=1e-9
    )
    width = pd.Timedelta(resolution)
    for point, (start, row) in zip(points, want.iterrows(), strict=True):
        assert point["count"] == row["count"]
        for stat in ("sum", "mean", "min", "max"):
            assert point[stat] == pytest.approx(row[stat], rel=1e-12), (start, stat)
        if row["count"] == 1:
            assert point["var"] is None and point["stddev"] is None
        else:
            assert point["var"] == pytest.approx(row["var"], rel=1e-9, abs=1e-12)
            assert point["stddev"] == pytest.approx(row["std"], rel=1e-9, abs=1e-12)
        bucket = values[(values.index >= start) & (values.index < start + width)]
        for name, q in QUANTILES.items():
            exact = float(bucket.quantile(q))
            assert abs(point[name] - exact) <= 0.01 * abs(exact) + 1e-9, (start, name)


def test_every_point_of_every_tier_equals_pandas_resample(series_server: PushsvcProcess) -> None:
    port = series_server.port
    events = _three_hours(seed=21)
    _post_all(port, "series.plain", events)
    frame = _frame(events)
    clock_s = max(e["ts"] for e in events)
    values = frame["value"]
    minute = _series(port, "series.plain", "resolution=1m")
    assert minute["resolution"] == "1m" and not minute["more"]
    want_minute = _expected(values, "1min", clock_s, keep_s=24 * 3600)
    assert len(want_minute) > 100
    _check_points(minute["points"], values, want_minute, "1min")
    # The 1 s tier keeps 15 minutes: exactly the closed buckets starting after clock - 15 min.
    second = _series(port, "series.plain", "resolution=1s")
    want_second = _expected(values, "1s", clock_s, keep_s=15 * 60)
    assert 0 < len(want_second) < len(values[values.index.as_unit("us").asi8 / 1e6 > clock_s - 900])
    _check_points(second["points"], values, want_second, "1s")


def test_groups_keep_series_of_their_own(series_server: PushsvcProcess) -> None:
    port = series_server.port
    topic = "series.grouped.a"
    events = _three_hours(seed=5)
    _post_all(port, topic, events)
    frame = _frame(events)
    clock_s = max(e["ts"] for e in events)
    for station in ("grill", "fry"):
        values = frame[frame["station"] == station]["value"]
        for resolution, pandas_rule in (("1m", "1min"), ("1h", "1h")):
            answer = _series(port, topic, f"resolution={resolution}&group=station:{station}")
            assert answer["group"] == {"station": station}
            want = _expected(values, pandas_rule, clock_s, keep_s=48 * 3600)
            assert len(want) > 0
            _check_points(answer["points"], values, want, pandas_rule)
    # The client takes a group as the HTTP API does ("tag:value") or as a mapping.
    with Client(series_server.base) as client:
        as_text = client.series(topic, resolution="1h", group="station:grill")
        as_mapping = client.series(topic, resolution="1h", group={"station": "grill"})
    pd.testing.assert_frame_equal(as_text, as_mapping)
    api = _series(port, topic, "resolution=1h&group=station:grill")["points"]
    assert list(as_text["count"]) == [p["count"] for p in api] and len(api) > 0
    # The topic's own series holds both stations' events.
    whole = _series(port, topic, "resolution=1h")
    want = _expected(frame["value"], "1h", clock_s, keep_s=48 * 3600)
    _check_points(whole["points"], frame["value"], want, "1h")


def test_csv_holds_the_same_points(series_server: PushsvcProcess) -> None:
    port = series_server.port
    events = [{"value": i % 7 + i / 1000, "ts": T0 + i * 0.7} for i in range(400)]
    _post_all(port, "series.csv", events)
    answer = _series(port, "series.csv", "resolution=1m")
    status, headers, body = request(
        port, "GET", "/topics/series.csv/series?resolution=1m&format=csv"
    )
    assert status == 200 and headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.BytesIO(body), parse_dates=["time"])
    assert list(table["resolution"]) == ["1m"] * len(answer["points"])
    assert list(table["time"].dt.as_unit("us").astype("int64")) == [
        round(p["t"] * S) for p in answer["points"]
    ]
    for stat in STATS:
        assert list(table[stat].astype(float).fillna(-1)) == [
            -1 if p[stat] is None else p[stat] for p in answer["points"]
        ]


def test_auto_resolution_answers_contiguous_segments(series_server: PushsvcProcess) -> None:
    port = series_server.port
    events = [{"value": float(i), "ts": T0 + i} for i in range(3 * 3600)]  # one a second
    _post_all(port, "series.auto", events)
    clock = T0 + 3 * 3600 - 1
    since, until = clock - 2 * 3600, clock + 1
    answer = _series(port, "series.auto", f"resolution=auto&points=200&since={since}&until={until}")
    segments = answer["segments"]
    assert segments[0]["resolution"] == "1m"  # 120 points >= 200 / 2; 1 s would give 7200
    assert segments[0]["since"] == pytest.approx(since)
    assert segments[-1]["until"] == pytest.approx(until)
    for left, right in itertools.pairwise(segments):
        assert left["until"] == pytest.approx(right["since"])
    times = [p["t"] for p in answer["points"]]
    assert times == sorted(times) and len(set(times)) == len(times)
    # The recent part the minute tier has not closed yet comes from the second tier.
    assert segments[-1]["resolution"] == "1s"
    assert times[-1] >= clock - 60
    assert since <= times[0]


def test_auto_resolution_covers_a_range_longer_than_the_finest_tier_keeps(
    series_server: PushsvcProcess,
) -> None:
    """The dashboard's "1 h" at 270 points on the default tiers (1s:15m, 1m:24h): the minute
    tier keeps the whole hour, so the answer reaches back to its start, not the last 15
    minutes the second tier keeps; what the minutes have not closed comes in seconds."""
    port = series_server.port
    topic = "series.auto_hour"
    events = [{"value": float(i % 7), "ts": T0 + 5 * i} for i in range(2 * 720)]  # 2 h, 1 / 5 s
    _post_all(port, topic, events)
    clock = events[-1]["ts"]
    since = clock - 3600
    answer = _series(port, topic, f"resolution=auto&points=270&since={since}")
    assert [s["resolution"] for s in answer["segments"]] == ["1m", "1s"]
    times = [p["t"] for p in answer["points"]]
    assert since <= times[0] < since + 60  # the range's first minute is drawn
    assert times[-1] >= clock - LATENESS_S - 2 * 5  # and its recent part, in seconds
    minutes = [t for t in times if t < answer["segments"][1]["since"]]
    assert len(minutes) >= 58 and all(b - a == 60 for a, b in itertools.pairwise(minutes))


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("resolution=7s", "resolution"),
        ("since=1763700100&until=1763700000", "since"),
        ("until=yesterday", "until"),
        ("since=-5", "since"),
        ("resolution=auto&points=1", "points"),
        ("resolution=auto&points=20000", "points"),
        ("limit=0", "limit"),
        ("format=xml", "format"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(
    series_server: PushsvcProcess, query: str, names: str
) -> None:
    status, _, body = request(series_server.port, "GET", f"/topics/series.plain/series?{query}")
    assert status == 400, body
    assert f"?{names}=" in json.loads(body)["error"]["message"]


def test_a_group_series_must_name_every_tag(series_server: PushsvcProcess) -> None:
    port = series_server.port
    status, _, body = request(port, "GET", "/topics/series.plain/series?group=station:grill")
    assert status == 400 and "?group=" in json.loads(body)["error"]["message"]
    status, _, body = request(port, "GET", "/topics/series.plain/stream?series=7s")
    assert status == 400 and "?series=" in json.loads(body)["error"]["message"]


def test_points_stream_once_in_the_update_sequence_and_resume(
    series_server: PushsvcProcess,
) -> None:
    port = series_server.port
    topic = "series.live"
    path = f"/topics/{topic}/stream?series=1s"
    with SSEClient(port, path) as stream, SSEClient(port, f"/topics/{topic}/stream") as plain:
        stream.next_data("snapshot")
        plain.next_data("snapshot")
        for i in range(12):
            assert post(port, topic, {"value": float(i), "ts": T0 + i})[0] == 202
        # Buckets [T0 + k, T0 + k + 1) close at clock T0 + k + 1 + 5: seven of them by now.
        messages = [stream.next() for _ in range(12 + 6)]
        plain_messages = [plain.next() for _ in range(12)]
    kinds = [m.event for m in messages]
    points = [json.loads(m.data) for m in messages if m.event == "point"]
    assert kinds.count("stats") == 12 and len(points) == 6
    assert [p["point"]["t"] for p in points] == pytest.approx([T0 - 0.25 + k for k in range(6)])
    assert all(p["resolution"] == "1s" and p["topic"] == topic for p in points)
    # Each point right after the update of the event that closed it (clock >= end + lateness).
    for index, message in enumerate(messages):
        if message.event == "point":
            closer = json.loads(messages[index - 1].data)
            t = json.loads(message.data)["point"]["t"]
            assert closer["ts"] >= t + 1 + LATENESS_S
    ids = [m.id for m in messages]
    assert len(set(ids)) == len(ids)
    assert all(m.event == "stats" for m in plain_messages)
    # Resume from the third point: the rest of what was sent, then what comes next.
    resume_at = next(i for i, m in enumerate(messages) if m.event == "point") + 2
    with SSEClient(port, path, headers={"Last-Event-ID": messages[resume_at].id}) as resumed:
        for i in range(12, 14):
            assert post(port, topic, {"value": float(i), "ts": T0 + i})[0] == 202
        again = [resumed.next() for _ in range(len(messages) - resume_at - 1 + 2 + 2)]
    assert [m.id for m in again[: len(messages) - resume_at - 1]] == ids[resume_at + 1 :]
    later = again[len(messages) - resume_at - 1 :]
    assert [m.event for m in later] == ["stats", "point", "stats", "point"]
    assert [json.loads(m.data)["point"]["t"] for m in later if m.event == "point"] == (
        pytest.approx([T0 - 0.25 + 6, T0 - 0.25 + 7])
    )


def test_the_history_holds_updates_and_a_resume_from_it_gets_the_points(
    series_server: PushsvcProcess,
) -> None:
    port = series_server.port
    topic = "series.history"
    _post_all(port, topic, [{"value": float(i), "ts": T0 + i} for i in range(9)])
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=5")
    assert status == 200
    page = json.loads(body)
    # The newest five updates (points are not updates, and do not count against the limit).
    assert [u["event"]["value"] for u in page["updates"]] == [4.0, 5.0, 6.0, 7.0, 8.0]
    # Buckets [T0 + k - 0.25, T0 + k + 0.75) close at clock T0 + k + 5.75: by events 6, 7, 8.
    after = page["updates"][0]["id"]
    with SSEClient(
        port, f"/topics/{topic}/stream?series=1s", headers={"Last-Event-ID": after}
    ) as s:
        kinds = [s.next().event for _ in range(4 + 3)]
    assert kinds == ["stats", "stats", "point", "stats", "point", "stats", "point"]


def test_idle_ticks_close_buckets(tmp_path: Path) -> None:
    proc = PushsvcProcess("serve", "--tick", "100ms", "--grace", "1s", "--series", "1s:1m").start()
    try:
        topic = "series.ticked"
        with SSEClient(proc.port, f"/topics/{topic}/stream?series=1s", timeout=20) as stream:
            stream.next_data("snapshot")
            assert post(proc.port, topic, {"value": 3.0})[0] == 202  # now, on the wall clock
            _, point = stream.next_data("point")
        assert point["point"]["count"] == 1 and point["point"]["sum"] == 3.0
    finally:
        proc.stop()


def test_the_client_reads_series_as_a_frame_and_the_cli_prints_points(
    series_server: PushsvcProcess,
) -> None:
    port = series_server.port
    topic = "series.client"
    events = [{"value": float(i % 11), "ts": T0 + i * 7} for i in range(3 * 600)]  # 3.5 hours
    _post_all(port, topic, events)
    with Client(series_server.base) as client:
        minute = client.series(topic, resolution="1m", since=T0 + 3600, until=T0 + 7200)
        # One frame over tiers: the minute tier, then the seconds of the part not closed in it.
        whole = client.series(topic, since=T0, resolution="auto", points=100)
    api = _series(port, topic, f"resolution=1m&since={T0 + 3600}&until={T0 + 7200}")["points"]
    assert list(minute.index) == list(pd.to_datetime([p["t"] for p in api], unit="s", utc=True))
    assert minute.index.name == "time" and str(minute.index.tz) == "UTC"
    assert list(minute["count"]) == [p["count"] for p in api]
    assert list(minute["mean"]) == [p["mean"] for p in api]
    tiers = [s["resolution"] for s in whole.attrs["segments"]]
    assert tiers[0] == "1m" and whole.index.is_monotonic_increasing
    assert len(whole) > 150
    # `pushsvc subscribe --series 1s` prints each point once it closes, in the update order.
    proc = start_tool("subscribe", f"--url={series_server.base}", "series.cli", "--series", "1s",
                      "--count", "9", "--stats", "count")  # fmt: skip
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["event"] == "snapshot"  # subscribed
    for i in range(9):
        assert post(port, "series.cli", {"value": float(i), "ts": T0 + i})[0] == 202
    lines = [json.loads(line) for line in proc.stdout]
    assert proc.wait(30) == 0
    proc.stdout.close()
    # Buckets T0 - 0.25 and T0 + 0.75 close with events 6 and 7; it stops at the 9th update.
    assert [line["event"] for line in lines] == ["stats"] * 7 + ["point", "stats", "point", "stats"]
    points = [line["data"]["point"]["t"] for line in lines if line["event"] == "point"]
    assert points == [T0 - 0.25, T0 + 0.75]


def test_the_first_buckets_of_the_earliest_time_close_into_points_and_read_back(
    series_server: PushsvcProcess,
) -> None:
    """Events go back to 2000-01-01, the earliest time ingest takes (an earlier `ts` is a time
    left unset, refused): the bucket that starts there is a point like any other, and a range
    reaching before it (from year 1, which reads accept) answers what there is."""
    topic = "series.earliest"
    events = [
        {"value": 1.0, "ts": "2000-01-01T00:00:00Z"},
        {"value": 2.0, "ts": "2000-01-01T00:00:00.5Z"},
        {"value": 3.0, "ts": "2000-01-01T00:02:00Z"},  # closes the first 1s and 1m buckets
    ]
    _post_all(series_server.port, topic, events)
    earliest = 946_684_800
    for resolution, count in (("1s", 2), ("1m", 2)):
        answer = _series(
            series_server.port, topic, f"resolution={resolution}&since=0001-01-01T00:00:00Z"
        )
        first = answer["points"][0]
        assert (first["t"], first["count"]) == (earliest, count), answer
    auto = _series(series_server.port, topic, "resolution=auto&points=300")
    assert auto["points"], auto
