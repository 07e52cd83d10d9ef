"""What the dashboard's charts show at their edges, in a real headless Chromium against a real
`pushsvc serve`, read through each chart's uPlot instance (its scales, its axes' ticks and
labels, its data): the count axis has whole ticks, not one lone 0; no time label overlaps the
next; "live 5m" spans five minutes of the topic clock; and a chart of series buckets, or a
tile's hour, is at one resolution up to its right edge — the buckets the server has not closed
yet are gathered at that resolution and drawn apart, as what they are so far, never a raw value
or a second's bucket beside minutes'. Skipped only when Debian's `chromium` is not installed."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_published
from playwright.sync_api import Locator, Page, Route, expect

from support.browser import CHROMIUM, NO_CHROMIUM, figure, open_dashboard

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

WINDOWS = ("10s", "1m", "5m")


@pytest.fixture(scope="module")
def quiet() -> Iterator[PushsvcProcess]:
    """No idle ticks: a topic's clock is its newest event's time, and charts hold still."""
    proc = PushsvcProcess("serve", "--tick", "0").start()
    yield proc
    proc.stop()


def _topic() -> str:
    return f"edge.{uuid.uuid4().hex[:8]}"


def _charts(page: Page) -> list[Locator]:
    """Every chart of the topic view that is shown: each window's and the range's."""
    return [
        chart
        for fig in page.locator("figure.window-figure:visible").all()
        for chart in (fig.locator(".chart-main"), fig.locator(".chart-count"))
    ]


# Each line of each x-axis label as drawn: [line number, left, right, text] in canvas pixels,
# from the split it labels, measured in the axis's font (uPlot centres labels on their ticks).
LABEL_LINES = """el => {
  const u = el.uplot, axis = u.axes[0];
  u.ctx.save();
  u.ctx.font = axis.font[0];
  const lines = [];
  axis._splits.forEach((split, i) => {
    const text = axis._values[i];
    if (text === null || text === undefined) return;
    const x = u.valToPos(split, "x", true);
    String(text).split("\\n").forEach((line, k) => {
      const half = u.ctx.measureText(line).width / 2;
      if (line) lines.push([k, x - half, x + half, line]);
    });
  });
  u.ctx.restore();
  return lines;
}"""


# The [x, value] pairs a chart draws for its series labelled `label` (null: not drawn there).
SERIES_POINTS = """(el, label) => {
  const u = el.uplot, i = u.series.findIndex((s) => s.label === label);
  return u.data[0].map((x, k) => [x, u.data[i][k]]).filter(([, v]) => v !== null);
}"""


def _drawn(chart: Locator, label: str) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = chart.evaluate(SERIES_POINTS, label)
    return points


def _assert_labels_apart(chart: Locator) -> None:
    lines: list[tuple[int, float, float, str]] = chart.evaluate(LABEL_LINES)
    assert len(lines) >= 2, lines
    for number in {line[0] for line in lines}:
        row = [line for line in lines if line[0] == number]
        for (_, _, right, text), (_, left, _, following) in itertools.pairwise(row):
            assert right + 4 <= left, f"{text!r} runs into {following!r}: {lines}"


def _now_events(seconds: int, every: float = 1.0) -> list[dict[str, Any]]:
    now = time.time()
    n = int(seconds / every)
    return [{"value": float(10 + (i * 7) % 13), "ts": now - seconds + i * every} for i in range(n)]


# ------------------------------------------------------------------ the count axis


def test_the_count_axis_has_whole_ticks_from_0_to_above_the_largest_count(
    quiet: PushsvcProcess, page: Page
) -> None:
    topic = _topic()
    assert post(quiet.port, topic, _now_events(90))[0] == 202
    open_dashboard(page, quiet, f"/#/topics/{topic}")
    for window in WINDOWS:
        expect(figure(page, window)).to_have_attribute("data-points", "90")
        count = figure(page, window).locator(".chart-count")
        axis = count.evaluate(
            "el => ({splits: el.uplot.axes[1]._splits, values: el.uplot.axes[1]._values, "
            "top: el.uplot.scales.y.max})"
        )
        axis["largest"] = max(v for _, v in _drawn(count, "count"))
        splits, values = axis["splits"], axis["values"]
        assert len(splits) >= 2 and splits[0] == 0, axis  # a lone "0" told nothing
        assert all(float(s).is_integer() for s in splits), axis
        assert splits[-1] == axis["top"] >= axis["largest"], axis
        assert len(set(values)) == len(values) >= 2, axis


def test_a_single_event_counts_on_an_axis_from_0_to_1(quiet: PushsvcProcess, page: Page) -> None:
    topic = _topic()
    assert post(quiet.port, topic, {"value": 3.0})[0] == 202
    open_dashboard(page, quiet, f"/#/topics/{topic}")
    expect(figure(page, "10s")).to_have_attribute("data-points", "1")
    count = figure(page, "10s").locator(".chart-count")
    assert count.evaluate("el => el.uplot.axes[1]._values") == ["0", "1"]


# ------------------------------------------------------------------ time labels


@pytest.mark.parametrize(("width", "seconds"), [(390, 150), (700, 300), (1280, 90)])
def test_no_time_label_runs_into_the_next(
    quiet: PushsvcProcess, page: Page, width: int, seconds: int
) -> None:
    """Spans and widths where uPlot's own labels collided: its first label (the time over the
    date, "11/24/26 11:12am") ran into the next, and at minute steps "11:10am" into
    "11:11am"."""
    topic = _topic()
    assert post(quiet.port, topic, _now_events(seconds, every=seconds / 150))[0] == 202
    page.set_viewport_size({"width": width, "height": 900})
    open_dashboard(page, quiet, f"/#/topics/{topic}")
    expect(figure(page, "5m")).to_have_attribute("data-points", "150")
    charts = _charts(page)
    assert len(charts) == 2 * len(WINDOWS)
    for chart in charts:
        _assert_labels_apart(chart)


def test_no_time_label_of_a_range_runs_into_the_next(quiet: PushsvcProcess, page: Page) -> None:
    topic = _topic()
    assert post(quiet.port, topic, _now_events(1800, every=6))[0] == 202
    page.set_viewport_size({"width": 1280, "height": 900})
    open_dashboard(page, quiet, f"/#/topics/{topic}")
    for label in ("1 h", "6 h", "24 h"):
        page.locator("#range-select").select_option(label=label)
        expect(figure(page, "range").locator(".window-name")).to_have_text(f"last {label}")
        expect(figure(page, "range")).not_to_have_attribute("data-points", "0")
        for chart in _charts(page):
            _assert_labels_apart(chart)


# ------------------------------------------------------------------ the live range


def test_live_5m_spans_five_minutes_of_the_topic_clock(quiet: PushsvcProcess, page: Page) -> None:
    """Ten minutes of events, one every 7 s (none on the range's edge): the live charts show
    the last five, to the clock, whatever else the page holds."""
    topic = _topic()
    events = _now_events(600, every=7)
    assert post(quiet.port, topic, events)[0] == 202
    clock = events[-1]["ts"]
    open_dashboard(page, quiet, f"/#/topics/{topic}")
    expect(page.locator("#range-select")).to_have_value("live")
    expect(page.locator("#range-select option:checked")).to_have_text("live 5m")
    in_range = sum(1 for e in events if e["ts"] >= clock - 300)
    for window in WINDOWS:
        expect(figure(page, window)).to_have_attribute("data-points", str(in_range))
    for chart in _charts(page):
        low, high, first = chart.evaluate(
            "el => [el.uplot.scales.x.min, el.uplot.scales.x.max, el.uplot.data[0][0]]"
        )
        assert math.isclose(high, clock, abs_tol=1e-3), (high, clock)
        assert math.isclose(high - low, 300, abs_tol=1e-3), high - low
        assert first >= low


# ------------------------------------------------------------------ the right edge


def _series(port: int, topic: str, query: str) -> dict[str, Any]:
    status, _, body = request(port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def _resolution_at(answer: dict[str, Any], t: float) -> str:
    for segment in answer["segments"]:
        if segment["since"] <= t < segment["until"]:
            return str(segment["resolution"])
    return str(answer["resolution"])


def _so_far(points: list[dict[str, Any]], width: float) -> dict[float, float]:
    """Finer buckets gathered into buckets of `width`: start -> mean (sum over count)."""
    sums: dict[float, list[float]] = {}
    for p in points:
        start = p["t"] - p["t"] % width
        total = sums.setdefault(start, [0.0, 0.0])
        total[0] += p["sum"]
        total[1] += p["count"]
    return {start: s / n for start, (s, n) in sums.items()}


NONZERO = re.compile(r"^[1-9]\d*$")
# What a tile's chart draws: bucket starts, closed buckets' means, means so far; its x-range.
TILE_DATA = (
    "el => ({x: el.uplot.data[0], closed: el.uplot.data[1], soFar: el.uplot.data[2], "
    "range: [el.uplot.scales.x.min, el.uplot.scales.x.max]})"
)


def _by_minute(events: list[dict[str, Any]]) -> dict[float, list[float]]:
    """Event values by the start of their minute."""
    by_minute: dict[float, list[float]] = {}
    for e in events:
        by_minute.setdefault(e["ts"] - e["ts"] % 60, []).append(e["value"])
    return by_minute


def test_a_ranges_right_edge_is_minutes_closed_then_the_minute_so_far(
    quiet: PushsvcProcess, page: Page
) -> None:
    """A day of events every 45 s, then one a second for 100 s: the series answers minutes,
    and seconds for the part whose minute has not closed. The chart draws the
    closed minutes, and those seconds gathered into their minutes, drawn apart ("so far"):
    never a second's bucket among minutes (its count a sixtieth of theirs)."""
    topic = _topic()
    now = time.time()
    day = [
        {"value": float(10 + (i * 37) % 50), "ts": now - 86400 + 45 * i}
        for i in range(int((86400 - 120) / 45))
    ]
    # The clock 40 s into a minute: its seconds up to 35 s have closed (the allowed lateness
    # is 5 s), the minute has not.
    clock = now - now % 60 + 40
    recent = [{"value": float(20 + i % 9), "ts": clock - 99 + i} for i in range(100)]
    for start in range(0, len(day), 1000):
        assert post(quiet.port, topic, day[start : start + 1000])[0] == 202
    assert post(quiet.port, topic, recent)[0] == 202
    wait_published(quiet.port, topic, recent[-1])
    open_dashboard(page, quiet, f"/#/topics/{topic}")
    page.locator("#range-select").select_option(label="24 h")
    fig = figure(page, "range")
    expect(fig).not_to_have_attribute("data-points", "0")
    width = page.locator("#figures").evaluate("e => e.clientWidth")
    answer = _series(
        quiet.port,
        topic,
        f"resolution=auto&points={max(60, round(width / 3))}&since={clock - 86400}",
    )
    minutes = [p for p in answer["points"] if _resolution_at(answer, p["t"]) == "1m"]
    seconds = [p for p in answer["points"] if _resolution_at(answer, p["t"]) == "1s"]
    assert minutes and seconds, answer["segments"]
    expect(fig).to_have_attribute("data-points", str(len(minutes)))
    main = fig.locator(".chart-main")
    closed, so_far = _drawn(main, "mean"), dict(_drawn(main, "mean so far"))
    assert [x for x, _ in closed] == [p["t"] for p in minutes]
    expected = _so_far(seconds, 60)
    # The dashed "so far" line starts at the newest closed minute and runs to the minutes
    # still open, each the mean of its seconds.
    assert next(iter(so_far)) == minutes[-1]["t"]
    assert list(so_far)[1:] == sorted(expected)
    for start, mean in expected.items():
        assert math.isclose(so_far[start], mean, rel_tol=1e-9), (start, so_far[start], mean)
    low, high = main.evaluate("el => [el.uplot.scales.x.min, el.uplot.scales.x.max]")
    assert math.isclose(high, clock, abs_tol=1e-3)
    assert math.isclose(high - low, 86400, abs_tol=1e-3)
    count = fig.locator(".chart-count")
    assert [x for x, _ in _drawn(count, "count")] == [p["t"] for p in minutes]
    assert [x for x, _ in _drawn(count, "count so far")] == [minutes[-1]["t"], *sorted(expected)]
    # The data table says which rows are so far.
    fig.get_by_text("Data", exact=True).click()
    expect(fig.locator("tbody tr.so-far")).to_have_count(len(expected))


def test_a_tiles_hour_is_bucket_means_to_its_edge(quiet: PushsvcProcess, page: Page) -> None:
    """An hour of events every 10 s: the tile's chart is the mean of each minute, the
    server's where it closed them, then gathered here from the events since, the open one
    apart — not the events' raw values after the buckets' means."""
    topic = _topic()
    events = _now_events(3600, every=10)
    assert post(quiet.port, topic, events)[0] == 202
    clock = events[-1]["ts"]
    open_dashboard(page, quiet)
    spark = page.locator(f'article.tile[data-topic="{topic}"] .spark')
    # The newest events are in no bucket of the series, only in the topic's history, which
    # may come after the buckets: the open minute is drawn once the page holds them.
    expect(spark).to_have_attribute("data-buckets", NONZERO)
    expect(spark).to_have_attribute("data-so-far", NONZERO)
    data = spark.evaluate(TILE_DATA)
    by_minute = _by_minute(events)
    assert all(x % 60 == 0 for x in data["x"]), data["x"]  # bucket starts, every one
    for x, closed, so_far in zip(data["x"], data["closed"], data["soFar"], strict=True):
        mean = sum(by_minute[x]) / len(by_minute[x])
        for value in (closed, so_far):
            assert value is None or math.isclose(value, mean, rel_tol=1e-9), (x, value, mean)
    open_minute = clock - clock % 60
    assert data["x"][-1] == open_minute and data["closed"][-1] is None
    assert data["soFar"][-1] is not None
    assert math.isclose(data["range"][1], clock, abs_tol=1e-3)
    assert math.isclose(data["range"][1] - data["range"][0], 3600, abs_tol=1e-3)


def test_a_tiles_open_minute_waits_for_the_events_no_bucket_holds(
    quiet: PushsvcProcess, page: Page
) -> None:
    """The series closes a second 5 s behind the topic clock (the allowed lateness): the
    newest event is in none of its buckets, only in the topic's updates, which come with its
    history. While that history is held back, the buckets arrive: the tile draws no mean so
    far of the open minute (the mean of its events but the newest), then, once the history
    is in, that minute's mean."""
    topic = _topic()
    now = time.time()
    # The clock 35 s into the minute before now's: the open minute has events at 5, 15, 25
    # and 35 s; its seconds up to 30 s have closed, the newest event's has not.
    clock = now - now % 60 - 25
    events = [{"value": float(10 + (i * 7) % 13), "ts": clock - 10 * (359 - i)} for i in range(360)]
    assert post(quiet.port, topic, events)[0] == 202
    held: list[Route] = []
    released = False

    def hold(route: Route) -> None:
        if released:
            route.continue_()
        else:
            held.append(route)

    page.route(f"**/topics/{topic}/history?*", hold)
    open_dashboard(page, quiet)
    spark = page.locator(f'article.tile[data-topic="{topic}"] .spark')
    expect(spark).to_have_attribute("data-buckets", NONZERO)
    data = spark.evaluate(TILE_DATA)
    by_minute = _by_minute(events)
    open_minute = clock - clock % 60
    assert len(by_minute[open_minute]) == 4
    for x, so_far in zip(data["x"], data["soFar"], strict=True):
        mean = sum(by_minute[x]) / len(by_minute[x])
        assert so_far is None or math.isclose(so_far, mean, rel_tol=1e-9), (x, so_far, mean)
    assert data["soFar"] == [None] * len(data["x"]), data
    expect(spark).to_have_attribute("data-so-far", "0")

    released = True
    for route in held:
        route.continue_()
    expect(spark).to_have_attribute("data-so-far", "1")
    data = spark.evaluate(TILE_DATA)
    assert data["x"][-1] == open_minute and data["closed"][-1] is None, data
    minute = by_minute[open_minute]
    assert math.isclose(data["soFar"][-1], sum(minute) / len(minute), rel_tol=1e-9), data
