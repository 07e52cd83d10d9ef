"""Long ranges on the dashboard, in a real headless Chromium against a real `pushsvc serve`: the
topic view's 24 h range draws the closed buckets `GET /topics/{t}/series` answers (the chart's
data table holds exactly the API's points), then extends live with the points that close
after, without a gap or a repeated bucket (points carrying distinct counts and top lists, which
the chart leaves aside); a group's range is that group's series; the count chart's axis has
real ticks; the page fits 1280 px and 390 px; no console errors. Skipped only when Debian's
`chromium` is not installed."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_published, wait_until
from playwright.sync_api import Page, Request, Route, expect

from support.browser import (
    CHROMIUM,
    DRAWN,
    NO_CHROMIUM,
    drawn,
    figure,
    line_coverage,
    open_dashboard,
    screenshot_path,
    shown,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["kitchen.*"]
windows = ["10s", "1m"]
stats = ["count", "mean", "p90"]
group_by = ["station"]
distinct = ["dish"]
top = [{ tag = "dish", k = 3 }]
"""


@pytest.fixture(scope="module")
def ranged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    yield proc
    proc.stop()


def _day_of_events(now: float, stations: tuple[str, ...] = ("grill",)) -> list[dict[str, Any]]:
    """An event every 45 s over the last day, ending two minutes ago (the minute buckets up to
    then close with the last of them)."""
    start = now - 24 * 3600
    count = int((24 * 3600 - 120) / 45)
    return [
        {
            "value": float(10 + (i * 37) % 50),
            "ts": round(start + i * 45, 3),
            "tags": {"station": stations[i % len(stations)], "dish": f"d{i * i % 7}"},
        }
        for i in range(count)
    ]


def _series(port: int, topic: str, query: str) -> list[dict[str, Any]]:
    status, _, body = request(port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200, body
    points: list[dict[str, Any]] = json.loads(body)["points"]
    return points


def _coarsest(port: int, topic: str, query: str) -> list[dict[str, Any]]:
    """The points of the coarsest tier an `auto` answer has: those a range chart draws as
    closed (the finer ones, of buckets it has not closed, it draws so far)."""
    status, _, body = request(port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200, body
    answer = json.loads(body)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    segment = max(
        answer["segments"], key=lambda s: int(s["resolution"][:-1]) * units[s["resolution"][-1]]
    )
    return [p for p in answer["points"] if segment["since"] <= p["t"] < segment["until"]]


def _choose_range(page: Page, label: str) -> None:
    page.locator("#range-select").select_option(label=label)


def _range_rows(page: Page) -> list[dict[str, str]]:
    return drawn(page, "range")


def test_the_24h_range_draws_the_series_then_extends_live(
    ranged: PushsvcProcess, page: Page
) -> None:
    topic = f"kitchen.{uuid.uuid4().hex[:8]}"
    now = time.time()
    events = _day_of_events(now)
    for start in range(0, len(events), 500):
        assert post(ranged.port, topic, events[start : start + 500])[0] == 202
    wait_published(ranged.port, topic, events[-1])  # the page's clock is the topic's
    open_dashboard(page, ranged, f"/#/topics/{topic}")
    expect(page.locator("#topic-title")).to_have_text(topic)

    # The same query as the page's: its range starts 24 h before its own clock, which may be
    # a minute boundary past what the test would compute.
    def day_query(asked: Request) -> bool:
        since = urllib.parse.parse_qs(urllib.parse.urlsplit(asked.url).query).get("since")
        day_ago = events[-1]["ts"] - 86400
        return (
            f"/topics/{topic}/series?" in asked.url
            and bool(since)
            and abs(float(since[0]) - day_ago) < 3600
        )

    with page.expect_request(day_query) as asked:
        _choose_range(page, "24 h")
    fig = figure(page, "range")
    expect(fig).to_be_visible()
    clock = events[-1]["ts"]
    query = urllib.parse.urlsplit(asked.value.url).query
    api = _coarsest(ranged.port, topic, query)
    assert len(api) > 200 and all(p["top_dish"] and p["distinct_dish"] for p in api)
    expect(fig).to_have_attribute("data-points", str(len(api)))
    rows = [r for r in _range_rows(page) if not r["id"].startswith("so-far@")]
    assert [r["id"].split("@")[1] for r in rows] == [_t(p["t"]) for p in api]
    for row, point in zip(rows, api, strict=True):
        assert row["mean"] == shown(point["mean"]) and row["count"] == shown(point["count"])
    assert line_coverage(fig.locator(".chart-main canvas"), "--accent") > DRAWN
    # The count axis runs from 0 to a round number above the largest count, in whole steps
    # (uPlot's own range around a flat count drew a single "0").
    low, high = fig.locator(".chart-count").evaluate(
        "e => [e.uplot.scales.y.min, e.uplot.scales.y.max]"
    )
    assert low == 0 and high >= max(p["count"] for p in api) and high in (1, 2, 5, 10, 20, 50, 100)

    # Live: an event now closes the last minute bucket (and its seconds): they arrive as points.
    live = {"value": 99.0, "ts": now + 5, "tags": {"station": "grill"}}
    assert post(ranged.port, topic, live)[0] == 202
    wait_published(ranged.port, topic, live)
    minute = _series(ranged.port, topic, f"resolution=1m&since={clock - 120}")
    assert minute and minute[-1]["t"] <= clock < minute[-1]["t"] + 60
    expect(fig.locator(f'tr[data-id="1m@{_t(minute[-1]["t"])}"]')).to_have_count(1)
    ids = [r["id"] for r in _range_rows(page)]
    assert len(ids) == len(set(ids)), "a bucket drawn twice"
    starts = [float(i.split("@")[1]) for i in ids]
    assert starts == sorted(starts)
    # The 1 s points of that minute, drawn before it closed, gave way to the minute's point.
    assert not any(
        i.startswith("1s@") and minute[-1]["t"] <= float(i.split("@")[1]) < minute[-1]["t"] + 60
        for i in ids
    )


def test_a_groups_range_is_that_groups_series(ranged: PushsvcProcess, page: Page) -> None:
    topic = f"kitchen.{uuid.uuid4().hex[:8]}"
    events = _day_of_events(time.time(), ("grill", "fry"))
    for start in range(0, len(events), 500):
        assert post(ranged.port, topic, events[start : start + 500])[0] == 202
    # A 202 means logged: the range below ends at the topic clock, once the last is applied.
    wait_published(ranged.port, topic, events[-1])
    open_dashboard(page, ranged, f"/#/topics/{topic}?group=station:fry")
    expect(page.locator("#group-name")).to_contain_text("fry")
    _choose_range(page, "6 h")
    fig = figure(page, "range")
    clock = events[-1]["ts"]
    width = page.locator("#figures").evaluate("e => e.clientWidth")
    wanted = max(60, round(width / 3))
    api = _coarsest(
        ranged.port,
        topic,
        f"resolution=auto&points={wanted}&since={clock - 21600}&group=station:fry",
    )
    expect(fig).to_have_attribute("data-points", str(len(api)))
    rows = [r for r in _range_rows(page) if not r["id"].startswith("so-far@")]
    assert [r["mean"] for r in rows] == [shown(p["mean"]) for p in api]


def test_a_range_chosen_before_the_clock_is_known_ends_at_the_topic_clock(
    ranged: PushsvcProcess, page: Page
) -> None:
    """A producer's events end 18 hours before the browser's clock. The page's stream is held
    at the network until the 6 h range is chosen, so the page does not know the topic clock
    yet (a busy CI machine once chose it between "live" and the stream's snapshot): the
    range waits for the clock, and then draws the API's last 6 h of the topic clock. It once
    ended at the browser's clock instead: a range after the topic clock, answered 400, and an
    empty chart that stayed empty."""
    topic = f"kitchen.{uuid.uuid4().hex[:8]}"
    behind = time.time() - 18 * 3600
    events = [e for e in _day_of_events(behind) if e["ts"] > behind - 8 * 3600]
    assert post(ranged.port, topic, events)[0] == 202
    wait_published(ranged.port, topic, events[-1])  # the topic clock the range must end at
    clock = events[-1]["ts"]
    held: list[Route] = []
    stream = re.compile(r"/stream\?")

    def hold(route: Route) -> None:
        held.append(route)

    page.route(stream, hold)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/series?" in r.url else None)
    with page.expect_request(stream):
        page.goto(f"{ranged.base}/#/topics/{topic}")
    while not held:  # Playwright calls the handler from its own loop: let it run
        page.wait_for_timeout(10)
    _choose_range(page, "6 h")
    for route in held:
        route.continue_()
    page.unroute(stream)
    expect(page.get_by_role("status")).to_have_attribute("data-state", "live")
    fig = figure(page, "range")
    expect(fig).not_to_have_attribute("data-points", "0")
    wait_until(lambda: bool(asked), what="the range's series asked for")
    since = float(urllib.parse.parse_qs(urllib.parse.urlsplit(asked[0]).query)["since"][0])
    assert since == pytest.approx(clock - 21600, abs=1)
    api = _coarsest(ranged.port, topic, urllib.parse.urlsplit(asked[0]).query)
    assert len(api) > 100
    expect(fig).to_have_attribute("data-points", str(len(api)))
    low, high = fig.locator(".chart-main").evaluate(
        "e => [e.uplot.scales.x.min, e.uplot.scales.x.max]"
    )
    assert (low, high) == pytest.approx((clock - 21600, clock), abs=1)


@pytest.mark.parametrize("width", [1280, 390])
def test_a_range_fits_the_screen(ranged: PushsvcProcess, page: Page, width: int) -> None:
    topic = f"kitchen.{uuid.uuid4().hex[:8]}"
    events = _day_of_events(time.time())[-400:]
    assert post(ranged.port, topic, events)[0] == 202
    page.set_viewport_size({"width": width, "height": 900})
    open_dashboard(page, ranged, f"/#/topics/{topic}")
    _choose_range(page, "1 h")
    fig = figure(page, "range")
    wait_until(lambda: int(fig.get_attribute("data-points") or 0) > 10, what="the hour drawn")
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll} px wide in a {width} px window"


def _t(seconds: float) -> str:
    """A bucket start as the page writes it in a row id (JavaScript's number to string)."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(seconds)


def test_an_overview_sparkline_spans_the_last_hour(ranged: PushsvcProcess, page: Page) -> None:
    """A day of events, one every 45 s: the tile's chart holds the last hour's closed buckets
    (from /series, whatever the update history still holds) and then the newest values."""
    topic = f"kitchen.{uuid.uuid4().hex[:8]}"
    events = _day_of_events(time.time())
    for start in range(0, len(events), 500):
        assert post(ranged.port, topic, events[start : start + 500])[0] == 202
    wait_published(ranged.port, topic, events[-1])
    clock = events[-1]["ts"]
    api = _series(ranged.port, topic, f"resolution=auto&points=60&since={clock - 3600}")
    assert len(api) >= 30
    open_dashboard(page, ranged)
    spark = page.locator(f'article.tile[data-topic="{topic}"] .spark')
    expect(spark).to_have_attribute("data-buckets", str(len(api)))
    expect(spark).to_have_attribute("aria-label", re.compile(r"^last hour: "))


def test_a_range_kept_open_past_its_span_holds_only_the_buckets_inside_it(
    ranged: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    """The 1 h range is chosen while the topic clock is an hour behind; then a further hour of
    events arrives and its minutes close live. The chart holds the last hour of the new clock
    only: its count and its data table are the API's minutes since then (they once kept every
    bucket ever drawn, 119 "buckets of 1m" under "last 1 h"). docs/dashboard-range.png is
    the range's chart at that moment."""
    topic = f"kitchen.{uuid.uuid4().hex[:8]}"
    now = time.time()
    older = [e for e in _day_of_events(now - 3600) if e["ts"] > now - 3 * 3600]
    assert post(ranged.port, topic, older)[0] == 202
    wait_published(ranged.port, topic, older[-1])
    open_dashboard(page, ranged, f"/#/topics/{topic}")
    _choose_range(page, "1 h")
    fig = figure(page, "range")
    expect(fig).to_have_attribute("data-points", re.compile(r"^(5\d|60)$"))
    expect(fig.locator(".points")).to_contain_text("of 1m")

    newer = [
        {"value": float(i % 9), "ts": round(older[-1]["ts"] + 45 * (i + 1), 3)}
        for i in range(int(3600 / 45))
    ]
    assert post(ranged.port, topic, newer)[0] == 202
    wait_published(ranged.port, topic, newer[-1])
    clock = newer[-1]["ts"]
    closed = _series(ranged.port, topic, f"resolution=1m&since={clock - 3600}")
    assert 55 <= len(closed) <= 60
    _range_rows(page)  # opens the data table
    last = closed[-1]["t"]
    expect(fig.locator(f'tr[data-id="1m@{_t(last)}"]')).to_have_count(1)
    expect(fig).to_have_attribute("data-points", str(len(closed)))
    rows = [r for r in _range_rows(page) if r["id"].startswith("1m@")]
    assert [r["id"] for r in rows] == [f"1m@{_t(p['t'])}" for p in closed]
    expect(fig.locator(".points")).to_contain_text(f"{len(closed)} buckets of 1m")
    fig.screenshot(path=screenshot_path("dashboard-range.png", tmp_path))
