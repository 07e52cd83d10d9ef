"""The dashboard at GET /, driven in a real headless Chromium against a real `pushsvc serve`.

Everything a person would see: tiles appearing with their latest value and a chart, tags
shown as text, the filter; the topic view's charts gaining points whose drawn values are the
updates' statistics, continuing after a reload with no gap and no repeated point; the
connection indicator across a server restart and a refused stream; 1280 px and phone widths;
auth by cookie. Every test fails on an uncaught error or a console error in the page. The
pictures of README.md and docs/dashboard.md (docs/dashboard.png, docs/dashboard-topic.png) are
taken here, and written there only with TEST_PUSHSVC_WRITE_SCREENSHOTS=1. Skipped only when Debian's
`chromium` is not installed.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_published, wait_until
from harness.net import free_port
from playwright.sync_api import Browser, Locator, Page, Route, expect

from support.auth_tokens import SECRET, hs256
from support.browser import (
    CHROMIUM,
    DRAWN,
    NO_CHROMIUM,
    allow_network_errors,
    check_page,
    current,
    drawn,
    figure,
    line_coverage,
    new_page,
    open_dashboard,
    screenshot_path,
    shown,
    status,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

WINDOWS = ("10s", "1m", "5m")  # the server's default windows


def tile(page: Page, topic: str) -> Locator:
    """The topic's tile, on screen or not (a tile scrolled out of view is still there)."""
    heading = page.get_by_role("heading", name=topic, exact=True, include_hidden=True)
    return page.locator("article.tile").filter(has=heading)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def history(server: PushsvcProcess, topic: str) -> list[dict[str, Any]]:
    status_code, _, body = request(server.port, "GET", f"/topics/{topic}/history?limit=10000")
    assert status_code == 200
    updates: list[dict[str, Any]] = json.loads(body)["updates"]
    return updates


def expected_points(updates: list[dict[str, Any]], window: str) -> list[dict[str, str]]:
    keys = ("mean", "p50", "p90", "p99", "min", "max", "count")
    return [{"id": u["id"], **{k: shown(u["windows"][window][k]) for k in keys}} for u in updates]


def test_page_and_assets_come_from_pushsvc_itself(server: PushsvcProcess, page: Page) -> None:
    status_code, headers, body = request(server.port, "GET", "/")
    assert status_code == 200
    assert headers["content-type"].startswith("text/html")
    assert b"<title>" in body
    # Tags are producer input: even a rendering mistake must not run injected script.
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy

    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("response", lambda r: r.ok or failed.append(f"{r.status} {r.url}"))
    open_dashboard(page, server)

    assert failed == []
    assert any(url.endswith("/uPlot.iife.min.js") for url in requested)
    assert any(url.endswith("/js/main.js") for url in requested)
    assert any(url.endswith(".css") for url in requested)
    assert [u for u in requested if not u.startswith(server.base + "/")] == []
    # The vendored library ships with its licence.
    assert request(server.port, "GET", "/dashboard/vendor/uplot-1.6.32/LICENSE")[0] == 200


def test_topic_view_shows_the_statistics_of_posted_events(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    open_dashboard(page, server, f"/#/topics/{topic}")
    # Epoch 1763700000 is 2025-11-21 04:40:00 UTC.
    events = [{"value": v, "ts": 1763700000 + i} for i, v in enumerate([10, 20, 60])]
    assert post(server.port, topic, events) == (202, {"accepted": 3})

    # Sample stddev of 10, 20, 60 (mean 30): sqrt((400 + 100 + 900) / 2).
    stddev = f"{math.sqrt(700):.4g}"  # tables show four significant digits
    # Linear interpolation over the sorted values: position q * (n - 1).
    expected = {
        "count": "3",
        "mean": "30",
        "min": "10",
        "max": "60",
        "stddev": stddev,
        "p50": "20",
        "p90": "52",
        "p99": "59.2",
    }
    for window in WINDOWS:
        for name, text in expected.items():
            expect(current(page, window, name)).to_have_text(text)
    expect(page.locator("#topic-value")).to_have_text("60")
    expect(page.locator("#topic-time")).to_have_text("04:40:02")
    expect(page.locator("#topic-time")).to_have_attribute("datetime", "2025-11-21T04:40:02.000Z")
    # The numbers are a real table a screen reader can navigate.
    table = page.get_by_role("table", name="Current statistics per window")
    expect(table.get_by_role("columnheader")).to_have_text(["statistic", *WINDOWS])
    expect(table.get_by_role("rowheader")).to_have_text(list(expected))


def test_the_topic_views_charts_gain_points_that_are_the_updates_statistics(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    open_dashboard(page, server, f"/#/topics/{topic}")
    values = [3, 9, 1, 4, 7.5]
    for n, value in enumerate(values, start=1):
        assert post(server.port, topic, {"value": value})[0] == 202
        for window in WINDOWS:
            expect(figure(page, window)).to_have_attribute("data-points", str(n))
            expect(figure(page, window)).to_contain_text(f"{n} update")
    updates = history(server, topic)
    assert [u["event"]["value"] for u in updates] == values
    for window in WINDOWS:
        assert drawn(page, window) == expected_points(updates, window)
    # Drawn: each chart has a canvas of the width it was given.
    box = figure(page, "10s").locator(".chart-main canvas").bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 100


def test_a_reload_draws_the_history_then_goes_on_live_without_gap_or_repeat(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    for n in range(6):
        assert post(server.port, topic, {"value": n})[0] == 202
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(figure(page, "1m")).to_have_attribute("data-points", "6")
    assert drawn(page, "1m") == expected_points(history(server, topic), "1m")

    page.reload()
    expect(status(page)).to_have_attribute("data-state", "live")
    expect(figure(page, "1m")).to_have_attribute("data-points", "6")
    for n in range(6, 9):
        assert post(server.port, topic, {"value": n})[0] == 202
    expect(figure(page, "1m")).to_have_attribute("data-points", "9")
    points = drawn(page, "1m")
    assert points == expected_points(history(server, topic), "1m")
    assert len({p["id"] for p in points}) == 9


def test_the_page_is_live_before_any_history_arrives_and_they_meet_without_gap_or_repeat(
    server: PushsvcProcess, page: Page
) -> None:
    """With many topics, waiting for every history before streaming kept a page
    "connecting" for seconds: the stream opens first, the histories follow."""
    topic = unique()
    for n in range(5):
        assert post(server.port, topic, {"value": n})[0] == 202
    held: list[Route] = []

    def hold(route: Route) -> None:  # answered only when the test says
        held.append(route)

    page.route("**/history?*", hold)
    open_dashboard(page, server, f"/#/topics/{topic}")  # live, with no history answered
    for n in range(5, 7):
        assert post(server.port, topic, {"value": n})[0] == 202
    expect(figure(page, "1m")).to_have_attribute("data-points", "2")  # the live ones
    assert held, "the page asked for no history"
    for route in held:
        route.continue_()
    expect(figure(page, "1m")).to_have_attribute("data-points", "7")
    points = drawn(page, "1m")
    assert points == expected_points(history(server, topic), "1m")
    assert len({p["id"] for p in points}) == 7


def test_tiles_on_screen_load_their_history_and_those_below_load_when_scrolled_to(
    page: Page,
) -> None:
    proc = PushsvcProcess("serve", "--tick", "0").start()
    try:
        names = [f"m.{n:03d}" for n in range(104)]
        for name in names:
            assert post(proc.port, name, [{"value": 1}, {"value": 2}])[0] == 202
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        open_dashboard(page, proc)
        # A page of tiles, then "Show more".
        expect(page.locator(".tile")).to_have_count(100)
        expect(page.locator("#shown")).to_have_text("100 of 104 topics shown")
        expect(tile(page, "m.000").locator(".spark")).to_have_attribute("data-points", "2")
        below = tile(page, "m.099")
        # Made, with the numbers the stream brought, but far below the fold: never asked for.
        expect(below.locator(".rate")).to_have_text("0.2 /s over 10s")
        assert below.locator(".spark").get_attribute("data-points") is None
        assert not [u for u in asked if "/topics/m.099/" in u]
        below.scroll_into_view_if_needed()
        expect(below.locator(".spark")).to_have_attribute("data-points", "2")
        assert [u for u in asked if "/topics/m.099/history" in u]
        page.get_by_role("button", name="Show the other 4").click()
        expect(page.locator(".tile")).to_have_count(104)
        expect(page.get_by_role("button", name="Show the other 4")).to_be_hidden()
        page.get_by_label("Find topics").fill("m.10")
        expect(page.locator(".tile")).to_have_count(4)
        expect(tile(page, "m.103").locator(".spark")).to_have_attribute("data-points", "2")
    finally:
        proc.stop()


def test_topics_with_data_appear_on_open_with_their_latest_value(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    event = {"value": 1234567.891, "tags": {"region": "eu-west"}}
    assert post(server.port, topic, [{"value": 1}, event])[0] == 202

    open_dashboard(page, server)
    t = tile(page, topic)
    # Large numbers keep every digit left of the point, grouped for the reader.
    expect(t.locator(".latest .value")).to_have_text("1,234,568")
    expect(t.get_by_role("listitem")).to_have_text(["region: eu-west"])
    # From the history: both values, drawn by the small chart.
    expect(t.get_by_role("img")).to_have_attribute(
        "aria-label", "last 2 values, from 1 to 1,234,568"
    )
    expect(t.locator(".rate")).to_have_text("0.2 /s over 10s")


def test_a_topic_whose_windows_emptied_still_shows_its_latest_value(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    now = datetime.now(UTC).timestamp()
    # Then windows slide past it (a later event far ahead empties 10s and 1m of the first).
    assert post(server.port, topic, [{"value": 42.5, "ts": now - 200}])[0] == 202
    assert post(server.port, topic, [{"value": 7, "ts": now}])[0] == 202
    open_dashboard(page, server)
    expect(tile(page, topic).locator(".latest .value")).to_have_text("7")
    expect(tile(page, topic).locator(".rate")).to_have_text("0.1 /s over 10s")


def test_tag_values_are_shown_as_text_never_as_markup(server: PushsvcProcess, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_dashboard(page, server)
    topic = unique()
    hostile = '<img src=x onerror="alert(1)"><b>bold</b>'
    tags = {"<i>key</i>": hostile}
    assert post(server.port, topic, {"value": 7, "tags": tags})[0] == 202

    t = tile(page, topic)
    expect(t.get_by_role("listitem")).to_have_text([f"<i>key</i>: {hostile}"])
    expect(t.locator("img, b, i")).to_have_count(0)
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_a_topic_is_reached_by_keyboard_and_linked_by_its_address(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique("k")
    assert post(server.port, topic, {"value": 5})[0] == 202
    open_dashboard(page, server)
    page.get_by_label("Find topics").fill(topic)
    link = tile(page, topic).get_by_role("link", name=topic)
    link.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"#/topics/{topic}$"))
    expect(page.get_by_role("heading", name=topic, exact=True)).to_be_focused()
    expect(current(page, "10s", "count")).to_have_text("1")
    # Pause holds the charts; resume catches up with what arrived meanwhile.
    pause = page.get_by_role("button", name="Pause")
    pause.press("Enter")
    expect(page.get_by_role("button", name="Resume")).to_have_attribute("aria-pressed", "true")
    assert post(server.port, topic, {"value": 6})[0] == 202
    # The update reached the page (the button counts it), and the paused chart held still.
    resume = page.get_by_role("button", name="Resume (1 new)", exact=True)
    expect(resume).to_be_visible()
    expect(figure(page, "10s")).to_have_attribute("data-points", "1")
    resume.click()
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_visible()
    expect(figure(page, "10s")).to_have_attribute("data-points", "2")
    # The window selector shows one window's chart.
    page.get_by_label("Window", exact=True).select_option("1m")
    expect(figure(page, "1m")).to_be_visible()
    expect(figure(page, "10s")).to_be_hidden()
    page.get_by_role("link", name="← All topics").click()
    expect(tile(page, topic)).to_be_visible()


def test_filter_shows_only_topics_whose_name_holds_it(server: PushsvcProcess, page: Page) -> None:
    open_dashboard(page, server)
    group = unique("f")
    kept = [f"{group}.alpha", f"{group}.beta"]
    other = unique("g")
    for topic in [*kept, other]:
        assert post(server.port, topic, {"value": 1})[0] == 202
    for topic in [*kept, other]:
        expect(tile(page, topic)).to_be_visible()

    page.get_by_label("Find topics").fill(f"{group}.")
    for topic in kept:
        expect(tile(page, topic)).to_be_visible()
    # A tile not shown is not there at all: a page may know 100,000 topics.
    expect(tile(page, other)).to_have_count(0)
    expect(page.locator(".tile")).to_have_count(2)
    # A topic created while the filter is on follows it too.
    late = unique("h")
    assert post(server.port, late, {"value": 1})[0] == 202
    assert post(server.port, f"{group}.gamma", {"value": 1})[0] == 202
    expect(tile(page, f"{group}.gamma")).to_be_visible()
    expect(page.locator(".tile")).to_have_count(3)
    expect(tile(page, late)).to_have_count(0)
    # Any part of a name finds it, whatever its case.
    page.get_by_label("Find topics").fill(f"{group}.GAM"[2:])
    expect(page.locator(".tile")).to_have_count(1)
    expect(tile(page, f"{group}.gamma")).to_be_visible()

    page.get_by_label("Find topics").fill("")
    expect(tile(page, other)).to_be_visible()
    expect(tile(page, late)).to_be_visible()


def no_sideways_scroll(page: Page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0


@pytest.mark.parametrize("width", [1280, 390])
def test_no_horizontal_overflow(server: PushsvcProcess, page: Page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    topic = f"{unique()}.{'long-topic-name' * 6}"
    assert post(server.port, topic, {"value": -123456.789, "tags": {"k": "v" * 200}})[0] == 202
    open_dashboard(page, server)
    # Its tile on screen (the module's other topics may fill it): a tile below the fold waits
    # to be scrolled to for its history, which its latest value comes from.
    page.get_by_label("Find topics").fill(topic)
    expect(tile(page, topic).locator(".latest .value")).to_have_text("-123,457")
    no_sideways_scroll(page)
    page.goto(f"{server.base}/#/topics/{topic}")
    expect(current(page, "5m", "p99")).to_have_text("-123,457")
    expect(current(page, "5m", "p99")).to_be_in_viewport()  # no column cut off
    expect(figure(page, "5m")).to_have_attribute("data-points", "1")
    no_sideways_scroll(page)


@pytest.mark.parametrize("width", [1280, 390])
def test_a_long_tag_value_is_one_line_ending_in_an_ellipsis(
    server: PushsvcProcess, page: Page, tmp_path: Path, width: int
) -> None:
    """A 230-character value (a URL, a user agent) is one line as wide as the tile at most,
    cut with an ellipsis; its whole text is the pill's title. The run's
    dashboard-long-tag-<width>.png is the overview at that moment."""
    page.set_viewport_size({"width": width, "height": 900})
    topic = unique()
    value = "https://shop.example/" + "x" * 209
    tags = {"url": value, "dish": "noodles"}
    assert post(server.port, topic, {"value": 1, "tags": tags})[0] == 202
    open_dashboard(page, server)
    page.get_by_label("Find topics").fill(topic)  # on screen, whatever else the module posted
    pills = tile(page, topic).locator(".tags li")
    expect(pills).to_have_count(2)
    long, short = pills.nth(0), pills.nth(1)
    expect(long).to_have_attribute("title", f"url: {value}")
    expect(short).to_have_attribute("title", "dish: noodles")
    # One line: as tall as the short pill, and as wide as the tile's content at most.
    long_box, short_box = long.bounding_box(), short.bounding_box()
    assert long_box is not None and short_box is not None
    assert long_box["height"] == short_box["height"]
    inner = tile(page, topic).evaluate(
        "t => t.clientWidth - parseFloat(getComputedStyle(t).paddingLeft)"
        " - parseFloat(getComputedStyle(t).paddingRight)"
    )
    assert long_box["width"] <= inner + 0.5
    assert long.evaluate("li => getComputedStyle(li).textOverflow") == "ellipsis"
    assert long.evaluate("li => li.scrollWidth > li.clientWidth")  # cut
    no_sideways_scroll(page)
    tile(page, topic).screenshot(path=tmp_path / f"dashboard-long-tag-{width}.png")


def test_a_refused_stream_is_retried_by_the_page(server: PushsvcProcess, page: Page) -> None:
    allow_network_errors(page)
    # An error status (say, from a proxy in front of pushsvc) makes EventSource give up for
    # good; the page must retry by itself.
    page.route(
        lambda url: "/stream?" in url,
        lambda route: route.fulfill(status=503, content_type="text/plain", body="busy"),
        times=1,
    )
    page.goto(server.base + "/")
    expect(status(page)).to_contain_text("reconnecting in 1 s")
    expect(status(page)).to_have_attribute("data-state", "live")
    topic = unique()
    assert post(server.port, topic, {"value": 2})[0] == 202
    expect(tile(page, topic).locator(".latest .value")).to_have_text("2")


def test_restart_losing_the_history_shows_reconnecting_then_gap(page: Page) -> None:
    allow_network_errors(page)
    port = str(free_port())
    args = ("--port", port, "--tick", "0", "--retry", "200ms")
    first = PushsvcProcess("serve", *args).start()
    try:
        open_dashboard(page, first)
        before = unique()
        assert post(first.port, before, {"value": 1})[0] == 202
        expect(tile(page, before).locator(".latest .value")).to_have_text("1")
        expect(page.get_by_role("note")).to_be_hidden()
    finally:
        first.stop()
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    expect(status(page)).to_contain_text("reconnecting")

    second = PushsvcProcess("serve", *args).start()
    try:
        # The new process has a new, empty history: the page says it missed updates...
        expect(status(page)).to_have_attribute("data-state", "gap")
        expect(page.get_by_role("note")).to_contain_text("Resynced")
        # ...and the old topic is no longer part of the server's state.
        expect(tile(page, before)).to_have_class(re.compile(r"\bstale\b"))
        after = unique()
        assert post(second.port, after, {"value": 5})[0] == 202
        expect(tile(page, after).locator(".latest .value")).to_have_text("5")
    finally:
        second.stop()


def test_the_gap_is_told_at_the_charts_time_not_the_browsers(page: Page) -> None:
    """The demo's events carry simulated times, hours from the browser's clock: the note of a
    gap says when it was on the charts' clock, the newest topic clock the page knows."""
    allow_network_errors(page)
    port = str(free_port())
    args = ("--port", port, "--tick", "0", "--retry", "200ms")
    topic = unique()
    first = PushsvcProcess("serve", *args).start()
    try:
        open_dashboard(page, first)
        # 2025-11-21T04:40:05Z, the last of them: not the browser's time of day, but for a
        # run at that second of a day.
        for at in range(6):
            assert post(first.port, topic, {"value": at, "ts": 1_763_700_000 + at})[0] == 202
        expect(tile(page, topic).locator(".latest .value")).to_have_text("5")
    finally:
        first.stop()
    second = PushsvcProcess("serve", *args).start()
    try:
        expect(status(page)).to_have_attribute("data-state", "gap")
        expect(status(page)).to_contain_text("live, after a gap at 04:40:05: updates were missed")
        expect(page.get_by_role("note")).to_contain_text("Resynced at 04:40:05:")
    finally:
        second.stop()


def test_a_topic_the_restarted_server_lost_breaks_its_lines_at_the_gap(
    page: Page, tmp_path: Path
) -> None:
    """The topic on screen is not in the new process's state, so the gap snapshot does not
    name it: its charts still break between the last point before the restart and the first
    after it (they were once joined by a line, the count falling diagonally), and the data
    table says where updates were missed. docs/dashboard-gap.png is the window's chart and
    table at that moment."""
    allow_network_errors(page)
    port = str(free_port())
    args = ("--port", port, "--tick", "0", "--retry", "200ms")
    topic = unique()
    # Events a few seconds apart, the restart's gap a minute wide: the picture shows both.
    now = time.time()
    before = [{"value": 2 + (n % 4), "ts": now - 150 + 8 * n} for n in range(8)]
    after = [{"value": 3 + (n % 3), "ts": now - 30 + 6 * n} for n in range(5)]
    first = PushsvcProcess("serve", *args).start()
    try:
        open_dashboard(page, first, f"/#/topics/{topic}")
        for event in before:
            assert post(first.port, topic, event)[0] == 202
        expect(figure(page, "10s")).to_have_attribute("data-points", str(len(before)))
    finally:
        first.stop()
    second = PushsvcProcess("serve", *args).start()
    try:
        expect(status(page)).to_have_attribute("data-state", "gap")
        for event in after:
            assert post(second.port, topic, event)[0] == 202
        fig = figure(page, "10s")
        expect(fig).to_have_attribute("data-points", str(len(before) + len(after)))
        for chart in (".chart-main", ".chart-count"):
            # uPlot's columns: [x, ...series]; a null row between the two runs breaks every line.
            columns = fig.locator(chart).evaluate("e => e.uplot.data.map(c => Array.from(c))")
            rows = list(zip(*columns, strict=True))
            assert len(rows) == len(before) + 1 + len(after), rows
            gap = len(before)
            assert all(v is None for v in rows[gap][1:]), f"{chart}: no break at the gap: {rows}"
            assert all(v is not None for row in (rows[gap - 1], rows[gap + 1]) for v in row[1:2])
        assert len(drawn(page, "10s")) == len(before) + len(after)
        gap_rows = fig.locator("table.data tbody tr.gap")
        expect(gap_rows).to_have_count(1)
        expect(gap_rows).to_contain_text("updates missed")
        # Newest first: the gap row sits between the new points and the ones before them.
        expect(fig.locator("table.data tbody tr").nth(len(after))).to_have_class(
            re.compile(r"\bgap\b")
        )
        fig.screenshot(path=screenshot_path("dashboard-gap.png", tmp_path))
    finally:
        second.stop()


@pytest.mark.redis
def test_restart_keeping_the_history_shows_reconnecting_then_live(
    page: Page, tmp_path: Path
) -> None:
    allow_network_errors(page)
    port = str(free_port())
    args = ("--port", port, "--tick", "0", "--retry", "200ms", "--data-dir", str(tmp_path))
    first = PushsvcProcess("serve", *args).start()
    topic = unique()
    try:
        assert post(first.port, topic, {"value": 1})[0] == 202
        # On Redis a 202 means logged; the update is in the history once the aggregator ran.
        wait_until(lambda: request(first.port, "GET", f"/topics/{topic}/stats")[0] == 200)
        open_dashboard(page, first, f"/#/topics/{topic}")
        expect(figure(page, "10s")).to_have_attribute("data-points", "1")
    finally:
        first.stop()
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    second = PushsvcProcess("serve", *args).start()
    try:
        expect(status(page)).to_have_attribute("data-state", "live")
        assert post(second.port, topic, {"value": 2})[0] == 202
        expect(figure(page, "10s")).to_have_attribute("data-points", "2")
        assert drawn(page, "10s") == expected_points(history(second, topic), "10s")
        expect(page.get_by_role("note")).to_be_hidden()
    finally:
        second.stop()


def test_screenshots_of_the_overview_and_a_topic_for_the_readme(page: Page, tmp_path: Path) -> None:
    """docs/dashboard.png and dashboard-topic.png, the docs' pictures: the overview and a
    topic view at 1280 px, with topics that have an hour's history. At the moment of each
    picture the page must show what the picture is for — every tile with its latest value, rate
    and a line drawn across its hour; every window's chart with its lines and count drawn
    across its five minutes and its numbers filled."""
    overview_png = screenshot_path("dashboard.png", tmp_path)
    topic_png = screenshot_path("dashboard-topic.png", tmp_path)
    topics = ["checkout.latency_ms", "orders.value", "sensors.temp_c"]
    # No idle ticks: each chart has one point per event, so "all drawn" can be awaited.
    proc = PushsvcProcess("serve", "--tick", "0").start()
    try:
        now = datetime.now(UTC).timestamp()
        # An event every 2.2 s for the last hour: the tiles' hour, and the topic's live 5m
        # (2.2 s: no event falls on the live range's edge, 300 s before the last).
        events = {}
        for k, topic in enumerate(topics):
            level, spread = [(120, 25), (48, 12), (21.5, 0.8)][k]
            events[topic] = [
                {
                    "value": round(
                        level + spread * math.sin(i / (60 + 10 * k)) + (i % 7) * spread / 10, 3
                    ),
                    "ts": now - 3600 + 2.2 * i,
                }
                for i in range(1636)
            ]
            for start in range(0, 1636, 600):
                assert post(proc.port, topic, events[topic][start : start + 600])[0] == 202
        # A 202 means logged: the tiles' hour is drawn from what is published when they load.
        for topic in topics:
            wait_published(proc.port, topic, events[topic][-1])
        page.set_viewport_size({"width": 1280, "height": 520})
        open_dashboard(page, proc)
        expect(page.locator(".tile")).to_have_count(3)
        for topic in topics:
            shown_tile = tile(page, topic)
            expect(shown_tile).to_be_in_viewport()
            expect(shown_tile.locator(".value")).to_have_text(re.compile(r"\d"))
            expect(shown_tile.locator(".rate")).to_have_text(re.compile(r"\d"))
            spark = shown_tile.locator(".spark")
            # The last hour: the closed minutes of the series, then the newest so far.
            expect(spark).to_have_attribute("data-buckets", re.compile(r"^[1-9]\d*$"))
            assert line_coverage(spark.locator("canvas"), "--accent") > DRAWN, topic
        page.screenshot(path=str(overview_png))

        page.set_viewport_size({"width": 1280, "height": 1000})
        tile(page, topics[0]).get_by_role("link").click()
        expect(page.locator("#topic-value")).to_have_text(re.compile(r"\d"))
        clock = events[topics[0]][-1]["ts"]
        live = sum(1 for e in events[topics[0]] if e["ts"] >= clock - 300)
        for window in WINDOWS:
            fig = figure(page, window)
            expect(fig).to_have_attribute("data-points", str(live))
            expect(current(page, window, "p99")).to_have_text(re.compile(r"\d"))
            main = fig.locator(".chart-main canvas")
            # p99 is drawn last, so no other line hides it; the mean is the widest line.
            for line in ("--danger", "--accent"):
                assert line_coverage(main, line) > DRAWN, (window, line)
            assert line_coverage(fig.locator(".chart-count canvas"), "--muted") > DRAWN, window
        expect(figure(page, WINDOWS[0])).to_be_in_viewport()
        page.screenshot(path=str(topic_png))
    finally:
        proc.stop()


# ------------------------------------------------------------------ with authentication on


@pytest.fixture(scope="module")
def secured() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--retry", "200ms", env={"PUSHSVC_JWT_KEY": SECRET}
    ).start()
    yield proc
    proc.stop()


def test_with_auth_the_cookie_shows_only_the_permitted_topics(
    secured: PushsvcProcess, browser: Browser
) -> None:
    allowed, forbidden = f"dash.ok.{unique()}", f"dash.secret.{unique()}"
    admin = {"Authorization": f"Bearer {hs256(publish=['*'])}"}
    # What an application does once its user signed in: a token in an HttpOnly cookie.
    context = browser.new_context(locale="en-US", timezone_id="UTC")
    context.add_cookies(
        [
            {
                "name": "pushsvc_token",
                "value": hs256(subscribe=["dash.ok.*"]),
                "url": secured.base,
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    page = new_page(context)
    try:
        # Before the page opens: its history is read with the cookie too.
        assert post(secured.port, allowed, {"value": 2}, headers=admin)[0] == 202
        assert post(secured.port, forbidden, {"value": 1}, headers=admin)[0] == 202
        open_dashboard(page, secured)
        expect(tile(page, allowed).get_by_role("img")).to_have_attribute(
            "aria-label", "last 1 values, from 2 to 2"
        )
        assert post(secured.port, forbidden, {"value": 1}, headers=admin)[0] == 202
        assert post(secured.port, allowed, {"value": 3}, headers=admin)[0] == 202
        expect(tile(page, allowed).locator(".latest .value")).to_have_text("3")
        expect(tile(page, forbidden)).to_have_count(0)
        page.goto(f"{secured.base}/#/topics/{allowed}")
        expect(figure(page, "10s")).to_have_attribute("data-points", "2")
        expect(current(page, "10s", "count")).to_have_text("2")
        # The script cannot read an HttpOnly cookie: a script injected into the page could not
        # steal the token either.
        assert page.evaluate("document.cookie") == ""
    finally:
        context.close()
    check_page(page)


def test_with_auth_and_no_cookie_the_page_says_it_is_not_signed_in(
    secured: PushsvcProcess, page: Page
) -> None:
    allow_network_errors(page)  # the 401s
    page.goto(secured.base + "/")
    expect(status(page)).to_have_attribute("data-state", "unauthorized")
    expect(status(page)).to_contain_text("not signed in")
