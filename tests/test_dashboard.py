"""The dashboard at GET /, driven in a real headless Chromium against a real `pushsvc serve`.

Everything a person would see: cards appearing with the right statistics, tags shown as
text, the sparkline, the filter, the connection indicator across a server restart and a
refused stream, a narrow window. Skipped only when Debian's `chromium` is not installed.
"""

from __future__ import annotations

import math
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from pushsvc.testing.live import PushsvcProcess, post, request

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "needs Debian's chromium (apt-get install -y chromium) for the browser tests",
        allow_module_level=True,
    )

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOWS = ("10s", "1m", "5m")  # the server's default windows
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # A fixed locale and time zone: the page formats numbers and times for its reader.
    context = browser.new_context(locale="en-US", timezone_id="UTC")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def open_dashboard(page: Page, server: PushsvcProcess) -> None:
    page.goto(server.base + "/")
    expect(status(page)).to_have_attribute("data-state", "connected")


def status(page: Page) -> Locator:
    return page.get_by_role("status")


def card(page: Page, topic: str) -> Locator:
    """The topic's card, shown or not: a filtered-out card must exist to prove it is hidden."""
    heading = page.get_by_role("heading", name=topic, exact=True, include_hidden=True)
    return page.locator("article").filter(has=heading)


def stat(card: Locator, window: str, name: str) -> Locator:
    return card.locator(f'tr[data-window="{window}"] td[data-stat="{name}"]')


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_page_and_assets_come_from_pushsvc_itself(server: PushsvcProcess, page: Page) -> None:
    status_code, headers, body = request(server.port, "GET", "/")
    assert status_code == 200
    assert headers["content-type"].startswith("text/html")
    assert b"<title>" in body
    # Tags are producer input: even a rendering mistake must not run injected script.
    assert "script-src 'self'" in headers["content-security-policy"]

    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("response", lambda r: r.ok or failed.append(f"{r.status} {r.url}"))
    open_dashboard(page, server)

    assert failed == []
    assert any(url.endswith(".js") for url in requested)
    assert any(url.endswith(".css") for url in requested)
    assert [u for u in requested if not u.startswith(server.base + "/")] == []


def test_card_shows_the_statistics_of_posted_events(server: PushsvcProcess, page: Page) -> None:
    open_dashboard(page, server)
    topic = unique()
    # Epoch 1763700000 is 2025-11-21 04:40:00 UTC.
    events = [{"value": v, "ts": 1763700000 + i} for i, v in enumerate([10, 20, 60])]
    assert post(server.port, topic, events) == (202, {"accepted": 3})

    c = card(page, topic)
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
            expect(stat(c, window, name)).to_have_text(text)
    expect(c.locator(".latest .value")).to_have_text("60")
    expect(c.locator("time")).to_have_text("04:40:02")
    expect(c.locator("time")).to_have_attribute("datetime", "2025-11-21T04:40:02.000Z")
    # The table is a real table a screen reader can navigate.
    table = c.get_by_role("table", name=f"Statistics of {topic} per window")
    expect(table.get_by_role("columnheader")).to_have_text(
        ["window", "count", "mean", "min", "max", "stddev", "p50", "p90", "p99"]
    )
    expect(table.get_by_role("rowheader")).to_have_text(list(WINDOWS))


def test_a_statistic_undefined_for_one_value_shows_a_dash(
    server: PushsvcProcess, page: Page
) -> None:
    open_dashboard(page, server)
    topic = unique()
    now = datetime.now(UTC).timestamp()
    # 90 s apart: the second event leaves the first outside 10s and 1m, inside 5m.
    events = [{"value": 1.5, "ts": now - 90}, {"value": 2.5, "ts": now}]
    assert post(server.port, topic, events)[0] == 202

    c = card(page, topic)
    expect(stat(c, "5m", "count")).to_have_text("2")
    expect(stat(c, "5m", "mean")).to_have_text("2")
    # One value: no sample variance (null on the wire), shown as a dash.
    expect(stat(c, "1m", "count")).to_have_text("1")
    expect(stat(c, "1m", "stddev")).to_have_text("—")
    expect(stat(c, "1m", "mean")).to_have_text("2.5")


def test_topics_with_data_appear_on_open_with_their_latest_value(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    event = {"value": 1234567.891, "tags": {"region": "eu-west"}}
    assert post(server.port, topic, [{"value": 1}, event])[0] == 202

    open_dashboard(page, server)
    c = card(page, topic)
    expect(stat(c, "10s", "count")).to_have_text("2")
    # Large numbers keep every digit left of the point, grouped for the reader.
    expect(stat(c, "10s", "max")).to_have_text("1,234,568")
    expect(c.locator(".latest .value")).to_have_text("1,234,568")
    expect(c.get_by_role("listitem")).to_have_text(["region: eu-west"])


def test_tag_values_are_shown_as_text_never_as_markup(server: PushsvcProcess, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_dashboard(page, server)
    topic = unique()
    hostile = '<img src=x onerror="alert(1)"><b>bold</b>'
    tags = {"<i>key</i>": hostile}
    assert post(server.port, topic, {"value": 7, "tags": tags})[0] == 202

    c = card(page, topic)
    expect(c.get_by_role("listitem")).to_have_text([f"<i>key</i>: {hostile}"])
    expect(c.locator("img, b, i")).to_have_count(0)
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_sparkline_draws_the_recent_values(server: PushsvcProcess, page: Page) -> None:
    open_dashboard(page, server)
    topic = unique()
    c = card(page, topic)
    values = [3, 9, 1, 4]
    for n, value in enumerate(values, start=1):
        assert post(server.port, topic, {"value": value})[0] == 202
        # One at a time: the stream paces each topic, and would skip to the latest value.
        expect(stat(c, "10s", "count")).to_have_text(str(n))

    spark = c.get_by_role("img")
    expect(spark).to_have_attribute("aria-label", "last 4 values, from 1 to 9")
    path = spark.locator("path").get_attribute("d") or ""
    ys = [float(part.split()[1]) for part in path.replace("M", "L").split("L") if part.strip()]
    assert len(ys) == len(values)
    # SVG y grows downwards: the highest value is drawn highest, the lowest lowest.
    assert ys.index(min(ys)) == values.index(max(values))
    assert ys.index(max(ys)) == values.index(min(values))


def test_filter_shows_only_topics_with_the_prefix(server: PushsvcProcess, page: Page) -> None:
    open_dashboard(page, server)
    group = unique("f")
    kept = [f"{group}.alpha", f"{group}.beta"]
    other = unique("g")
    for topic in [*kept, other]:
        assert post(server.port, topic, {"value": 1})[0] == 202
    for topic in [*kept, other]:
        expect(card(page, topic)).to_be_visible()

    page.get_by_label("Topic prefix").fill(f"{group}.")
    for topic in kept:
        expect(card(page, topic)).to_be_visible()
    expect(card(page, other)).to_be_attached()
    expect(card(page, other)).to_be_hidden()
    expect(page.locator(".card:visible")).to_have_count(2)
    # A topic created while the filter is on follows it too.
    late = unique("h")
    assert post(server.port, late, {"value": 1})[0] == 202
    assert post(server.port, f"{group}.gamma", {"value": 1})[0] == 202
    expect(card(page, f"{group}.gamma")).to_be_visible()
    expect(card(page, late)).to_be_attached()
    expect(card(page, late)).to_be_hidden()

    page.get_by_label("Topic prefix").fill("")
    expect(card(page, other)).to_be_visible()
    expect(card(page, late)).to_be_visible()


def test_a_narrow_window_does_not_scroll_sideways(server: PushsvcProcess, page: Page) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    open_dashboard(page, server)
    topic = f"{unique()}.{'long-topic-name' * 6}"
    assert post(server.port, topic, {"value": -123456.789, "tags": {"k": "v" * 200}})[0] == 202
    expect(stat(card(page, topic), "10s", "count")).to_have_text("1")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0


def test_a_refused_stream_is_retried_by_the_page(server: PushsvcProcess, page: Page) -> None:
    # An error status (say, from a proxy in front of pushsvc) makes EventSource give up for
    # good; the page must retry by itself.
    page.route(
        lambda url: "/stream?" in url,
        lambda route: route.fulfill(status=503, content_type="text/plain", body="busy"),
        times=1,
    )
    page.goto(server.base + "/")
    expect(status(page)).to_contain_text("reconnecting in 1 s")
    expect(status(page)).to_have_attribute("data-state", "connected")
    topic = unique()
    assert post(server.port, topic, {"value": 2})[0] == 202
    expect(stat(card(page, topic), "10s", "count")).to_have_text("1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_restart_shows_reconnecting_then_connected_and_resynced(page: Page) -> None:
    port = str(free_port())
    args = ("--port", port, "--tick", "0", "--retry", "200ms")
    first = PushsvcProcess("serve", *args).start()
    try:
        open_dashboard(page, first)
        before = unique()
        assert post(first.port, before, {"value": 1})[0] == 202
        expect(stat(card(page, before), "10s", "count")).to_have_text("1")
        expect(page.get_by_role("note")).to_be_hidden()
    finally:
        first.stop()
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    expect(status(page)).to_contain_text("reconnecting")

    second = PushsvcProcess("serve", *args).start()
    try:
        expect(status(page)).to_have_attribute("data-state", "connected")
        expect(status(page)).to_have_text("connected")
        # The new process has a new, empty history: the page was told it missed updates...
        expect(page.get_by_role("note")).to_contain_text("Resynced")
        # ...and the old topic is no longer part of the server's state.
        expect(card(page, before)).to_have_class(re.compile(r"\bstale\b"))
        after = unique()
        assert post(second.port, after, {"value": 5})[0] == 202
        expect(stat(card(page, after), "10s", "count")).to_have_text("1")
    finally:
        second.stop()
