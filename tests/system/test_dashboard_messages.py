"""The dashboard's messages, in a real headless Chromium against a real `pushsvc serve`: a
topic whose events carry messages shows its latest ones live (from its history, then from
the stream), newest first — time, type, the data cut to a line and whole on hover, always as
text — and per window its messages counted by type with their rate, as the updates carry
them, and on each window's charts its messages per second, a line per type; its tile names its
newest message's type; a message without a value leaves the latest value be. A topic without
messages shows none of it. The pictures of docs/dashboard.md (docs/dashboard-messages.png,
docs/dashboard-messages-chart.png) are taken here, and written there only with
TEST_PUSHSVC_WRITE_SCREENSHOTS=1. Skipped only when Debian's `chromium` is not installed."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from harness.live import PushsvcProcess, post, request, wait_published
from playwright.sync_api import Locator, Page, expect

from support.browser import (
    CHROMIUM,
    DRAWN,
    NO_CHROMIUM,
    figure,
    line_coverage,
    open_dashboard,
    screenshot_path,
    shown,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

SHOWN_CHARS = 160  # of a message's data in its row (js/messages.js)


def unique(prefix: str = "msg") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def compact(data: Any) -> str:
    """Data as the page writes it: JSON.stringify's compact text."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def rows(page: Page) -> Locator:
    return page.locator("#latest-messages tbody tr")


def counts(page: Page, window: str) -> Locator:
    return page.locator(f'#message-counts table[data-window="{window}"]')


def counted(server: PushsvcProcess, topic: str, window: str) -> dict[str, Any]:
    status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
    assert status == 200
    by_type: dict[str, Any] = json.loads(body)["windows"][window]["messages"]
    return by_type


def test_a_topic_shows_its_latest_messages_live_and_its_counts_per_type(
    server: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    topic = unique()
    first = [{"type": "shipped", "data": {"order": 1}}, {"value": 5}]
    assert post(server.port, topic, first)[0] == 202
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(rows(page).locator(".message-type")).to_have_text(["shipped"])  # from the history
    expect(rows(page).locator(".message-data")).to_have_text([compact({"order": 1})])

    hostile = {"html": "<b>bold</b><img src=x onerror=alert(1)>", "line": "a\u2028b"}
    long = {"note": "x" * 300 + " 👋"}
    live = [
        {"type": "error", "data": hostile},
        {"type": "shipped", "data": {"order": 2}},
        {"type": "note.long", "data": long},
    ]
    assert post(server.port, topic, live)[0] == 202
    expect(rows(page).locator(".message-type")).to_have_text(
        ["note.long", "shipped", "error", "shipped"]  # newest first
    )
    data = rows(page).locator(".message-data")
    expect(data.nth(2)).to_have_text(compact(hostile))
    expect(page.locator("#latest-messages b, #latest-messages img")).to_have_count(0)  # text
    # Cut to a line in its row, whole on hover.
    expect(data.nth(0)).to_have_text(compact(long)[:SHOWN_CHARS] + "…")
    expect(data.nth(0)).to_have_attribute("title", compact(long))
    times = rows(page).locator("time")
    expect(times.nth(0)).to_have_attribute("datetime", re.compile(r"^\d{4}-.*Z$"))

    # Each window's counts by type, as the last update carries them.
    want = counted(server, topic, "1m")
    assert {t: c["count"] for t, c in want.items()} == {"error": 1, "note.long": 1, "shipped": 2}
    table = counts(page, "1m")
    expect(table.locator("tbody th")).to_have_text(sorted(want))
    expect(table.locator('td[data-stat="count"]')).to_have_text(["1", "1", "2"])
    expect(table.locator('td[data-stat="rate"]')).to_have_text(
        [shown(want[t]["rate"]) for t in sorted(want)]
    )
    expect(counts(page, "10s")).to_be_visible()
    # The chosen window's only.
    page.select_option("#window-select", "1m")
    expect(page.locator("#message-counts table")).to_have_count(1)
    expect(table).to_be_visible()
    # A message without a value leaves the latest value be.
    expect(page.locator("#topic-value")).to_have_text("5")
    page.locator("#topic-view").screenshot(
        path=str(screenshot_path("dashboard-messages.png", tmp_path))
    )

    # Its tile names its newest message.
    page.goto(f"{server.base}/#/")
    tile = page.locator(f'article.tile[data-topic="{topic}"]')
    expect(tile.locator(".last-message-type")).to_have_text("note.long")
    expect(tile.locator(".value")).to_have_text("5")
    tile.screenshot(path=str(tmp_path / "dashboard-messages-tile.png"))


def test_a_topic_without_messages_shows_none_of_them(server: PushsvcProcess, page: Page) -> None:
    topic = unique("plain")
    assert post(server.port, topic, [{"value": 1}, {"value": 2}])[0] == 202
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(page.locator("#topic-value")).to_have_text("2")
    assert post(server.port, topic, {"value": 3})[0] == 202
    expect(page.locator("#topic-value")).to_have_text("3")
    expect(page.locator("#latest-messages")).to_be_hidden()
    expect(page.locator("#message-counts")).to_be_hidden()
    expect(figure(page, "1m").locator(".chart-main")).to_be_visible()
    expect(figure(page, "1m").locator(".chart-messages")).to_be_hidden()
    expect(figure(page, "1m").locator(".legend-note")).not_to_contain_text("messages")
    page.goto(f"{server.base}/#/")
    tile = page.locator(f'article.tile[data-topic="{topic}"]')
    expect(tile.locator(".value")).to_have_text("3")
    expect(tile.locator(".last-message")).to_be_hidden()


def test_a_window_whose_messages_slid_out_shows_none_in_it(
    server: PushsvcProcess, page: Page
) -> None:
    # A window carries `messages` only while it holds one: the 10s window that counted the
    # message says it holds none once the topic's clock has moved past it, the 1m one still
    # counts it.
    topic = unique()
    ts = 1_763_700_000
    assert post(server.port, topic, {"type": "shipped", "data": {"order": 1}, "ts": ts})[0] == 202
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(counts(page, "10s").locator('td[data-stat="count"]')).to_have_text(["1"])
    assert post(server.port, topic, {"value": 1, "ts": ts + 30})[0] == 202
    expect(page.locator("#topic-value")).to_have_text("1")
    status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
    assert status == 200
    windows = json.loads(body)["windows"]
    assert "messages" not in windows["10s"]
    expect(counts(page, "10s").locator("td.none")).to_have_text("none in this window")
    expect(counts(page, "1m").locator('td[data-stat="count"]')).to_have_text(["1"])


# What a window's messages chart draws, once its newest point is at the topic clock `arg`.
CHARTED = """([fig, clock]) => {
    const el = fig.querySelector('.chart-messages');
    const u = el.uplot;
    if (el.hidden || !u || u.data[0][u.data[0].length - 1] !== clock) return false;
    return {labels: u.series.slice(1).map(s => s.label), data: u.data.map(c => Array.from(c))};
}"""


def charted(page: Page, window: str, clock: float) -> dict[str, Any]:
    """The window's messages chart: its lines' labels and columns ([ts, rate per type...]),
    once it draws the update at `clock`."""
    fig = figure(page, window)
    handle = page.wait_for_function(CHARTED, arg=[fig.element_handle(), clock])
    drawn: dict[str, Any] = handle.json_value()
    return drawn


def test_each_window_charts_its_messages_per_second_by_type(
    server: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    topic = unique("chart")
    t0 = 1_763_700_000
    # Five minutes of events 5 s apart: `shipped` every other one, `error` every seventh and
    # a burst of them in the middle, plain values between.
    events: list[dict[str, Any]] = []
    for i in range(60):
        ts = t0 + 5 * i
        if 30 <= i <= 36 or i % 7 == 3:
            events.append({"type": "error", "data": {"code": 500 + i}, "ts": ts})
        elif i % 2 == 0:
            events.append({"type": "shipped", "data": {"order": i}, "ts": ts})
        else:
            events.append({"value": i % 10, "ts": ts})
    assert post(server.port, topic, events)[0] == 202
    clock = t0 + 5 * 59
    open_dashboard(page, server, f"/#/topics/{topic}")

    # A line per type, each update's rate of it as the window carries it (pandas: the
    # messages of the type in (T - w, T] over w) and ending at what /stats says now.
    frame = pd.DataFrame({"ts": pd.to_datetime([e["ts"] for e in events], unit="s")})
    for window, seconds in (("10s", 10), ("1m", 60)):
        chart = charted(page, window, clock)
        assert chart["labels"] == ["error /s", "shipped /s"]
        assert chart["data"][0] == [e["ts"] for e in events]
        want = counted(server, topic, window)
        for column, kind in zip(chart["data"][1:], ("error", "shipped"), strict=True):
            is_kind = frame.assign(n=[float(e.get("type") == kind) for e in events])
            rates = is_kind.rolling(f"{seconds}s", on="ts")["n"].sum() / seconds
            assert column == pytest.approx(rates.tolist())
            assert column[-1] == pytest.approx(want.get(kind, {"rate": 0})["rate"])
    one_minute = figure(page, "1m")
    canvas = one_minute.locator(".chart-messages canvas")
    assert line_coverage(canvas, "--type-0") > DRAWN  # error, across the five minutes
    assert line_coverage(canvas, "--type-1") > DRAWN  # shipped
    expect(one_minute.locator(".legend-note")).to_contain_text("messages per s by type below")
    expect(one_minute.locator(".chart-messages")).to_have_attribute(
        "aria-label", "1m window: messages per second of error, shipped over time"
    )
    # Its Data table: a column per type, the newest row the rates the window carries now.
    one_minute.get_by_text("Data", exact=True).click()
    table = one_minute.locator("table.data")
    expect(table.locator("thead th").nth(-2)).to_have_text("error /s")
    expect(table.locator("thead th").nth(-1)).to_have_text("shipped /s")
    newest = table.locator("tbody tr").first
    want = counted(server, topic, "1m")
    expect(newest.locator('td[data-type="shipped"]')).to_have_text(shown(want["shipped"]["rate"]))

    # Live: a new type is a new line.
    refund = {"type": "refund", "data": {"order": 8}, "ts": clock + 1}
    assert post(server.port, topic, refund)[0] == 202
    chart = charted(page, "1m", clock + 1)
    assert chart["labels"] == ["error /s", "refund /s", "shipped /s"]
    want = counted(server, topic, "1m")
    assert want["refund"]["rate"] == pytest.approx(1 / 60)
    assert chart["data"][2][-1] == pytest.approx(want["refund"]["rate"])
    assert chart["data"][3][-1] == pytest.approx(want["shipped"]["rate"])

    page.select_option("#window-select", "1m")
    expect(figure(page, "10s")).to_be_hidden()
    page.locator("#topic-view").screenshot(
        path=str(screenshot_path("dashboard-messages-chart.png", tmp_path))
    )


# What a range's messages chart draws, once it draws a line per type of `arg`.
RANGE_CHARTED = """([fig, types]) => {
    const el = fig.querySelector('.chart-messages');
    const u = el.uplot;
    if (fig.hidden || el.hidden || !u) return false;
    const labels = u.series.slice(1).map(s => s.label);
    if (labels.join() !== types.map(t => `${t} /s`).join()) return false;
    return {labels, data: u.data.map(c => Array.from(c))};
}"""


def test_a_range_charts_its_buckets_messages_per_second_by_type(
    server: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    """The 1 h range draws, under its count chart, a line per message type its series points
    count: each closed bucket's rate of the type as `/series` gives it (0 where it held none),
    beside the values' charts; its Data table has a column per type."""
    topic = unique("range")
    now = time.time()
    start = now - 3600
    # An hour, 20 s apart: shipped every third, a burst of errors in the middle, a refund
    # every ninth, plain values between; the last one two minutes ago closes the minutes.
    events: list[dict[str, Any]] = []
    for i in range(int((3600 - 120) / 20)):
        ts = round(start + 20 * i, 3)
        if 80 <= i <= 95 and i % 2:
            events.append({"type": "error", "data": {"code": 500}, "ts": ts})
        elif i % 9 == 4:
            events.append({"type": "refund", "data": {"order": i}, "ts": ts})
        elif i % 3 == 0:
            events.append({"value": 10 + i % 7, "type": "shipped", "data": {"order": i}, "ts": ts})
        else:
            events.append({"value": float(20 + (i * 13) % 30), "ts": ts})
    events.append({"value": 1.0, "ts": round(now - 120, 3)})
    assert post(server.port, topic, events)[0] == 202
    wait_published(server.port, topic, events[-1])
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(page.locator("#topic-title")).to_have_text(topic)
    page.locator("#range-select").select_option(label="1 h")
    fig = figure(page, "range")
    expect(fig).to_be_visible()
    types = ["error", "refund", "shipped"]
    chart = page.wait_for_function(RANGE_CHARTED, arg=[fig.element_handle(), types]).json_value()
    expect(fig).to_have_attribute("data-message-types", ",".join(types))
    # Each closed minute's rates, as the series answers them.
    clock = events[-1]["ts"]
    status, _, body = request(
        server.port, "GET", f"/topics/{topic}/series?resolution=1m&since={clock - 3600}"
    )
    assert status == 200
    points = {p["t"]: p for p in json.loads(body)["points"]}
    assert sum("messages" in p for p in points.values()) > 40
    drawn_at = {t: i for i, t in enumerate(chart["data"][0])}
    compared = 0
    for t, point in points.items():
        if t not in drawn_at:
            continue  # before the range the page asked for (its clock is a moment later)
        row = drawn_at[t]
        for column, kind in zip(chart["data"][1:], types, strict=True):
            want = point.get("messages", {}).get(kind, {"rate": 0})["rate"]
            assert column[row] == pytest.approx(want), (t, kind)
        compared += 1
    assert compared >= 50
    # The burst: error's line peaks in the middle of the hour.
    errors = [v for v in chart["data"][1] if v is not None]
    assert max(errors) == pytest.approx(
        max(p.get("messages", {}).get("error", {"rate": 0})["rate"] for p in points.values())
    )
    canvas = fig.locator(".chart-messages canvas")
    assert line_coverage(canvas, "--type-2") > DRAWN  # shipped, across the hour
    # error: its burst (at 0 elsewhere, mostly under refund's line, drawn after it)
    assert line_coverage(canvas, "--type-0") > 0.1
    expect(fig.locator(".legend-note")).to_contain_text("messages per s by type below")
    expect(fig.locator(".chart-messages")).to_have_attribute(
        "aria-label", "last 1 h, by bucket: messages per second of error, refund, shipped over time"
    )
    fig.get_by_text("Data", exact=True).click()
    head = fig.locator("table.data thead th")
    expect(head.nth(-3)).to_have_text("error /s")
    expect(head.nth(-1)).to_have_text("shipped /s")
    newest_closed = max(t for t in points if t in drawn_at)
    row = fig.locator(f'tbody tr[data-id="1m@{int(newest_closed)}"]')  # a minute: whole seconds
    shipped = points[newest_closed].get("messages", {}).get("shipped", {"rate": 0})["rate"]
    expect(row.locator('td[data-type="shipped"]')).to_have_text(shown(shipped))
    fig.screenshot(path=str(screenshot_path("dashboard-range-messages.png", tmp_path)))
