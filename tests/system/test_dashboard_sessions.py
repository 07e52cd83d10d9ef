"""The dashboard's session view, in a real headless Chromium against a real `pushsvc serve
--rules` with a `[[session]]` rule: a session topic's view shows the sessions open now, the
bounce rate, events per session and the funnel as bars as wide as each step's share of the
first, following the live updates; another topic shows none of it. Skipped only when Debian's
`chromium` is not installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_until
from playwright.sync_api import Page, Route, expect

from support.browser import CHROMIUM, NO_CHROMIUM, open_dashboard

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["web.*"]
windows = ["1h"]
stats = ["count", "mean"]
exact_percentiles_up_to = "1h"   # a session topic's own statistics are in exact windows

[[session]]
topic = "web.visits"
from = ["web.clicks"]
key = "user"
gap = "10s"
funnel = { tag = "step", steps = ["view", "cart", "<b>paid</b>"], within = "1m" }
"""
BASE = 1763700000


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(path)).start()
    yield proc
    proc.stop()


def _click(user: str, step: str, at: float) -> dict[str, Any]:
    return {"value": 1, "ts": BASE + at, "tags": {"user": user, "step": step}}


def _visits(server: PushsvcProcess) -> dict[str, Any]:
    status, _, body = request(server.port, "GET", "/topics/web.visits/stats")
    assert status == 200, body
    window: dict[str, Any] = json.loads(body)["windows"]["1h"]
    return window


def test_a_session_topic_shows_open_sessions_bounces_and_its_funnel_as_bars(
    shop: PushsvcProcess, page: Page
) -> None:
    open_dashboard(page, shop, "/#/topics/web.visits")
    clicks = [
        _click("ann", "view", 0),
        _click("ann", "cart", 2),
        _click("ann", "<b>paid</b>", 3),
        _click("bob", "view", 4),
        _click("bob", "cart", 5),
        _click("cy", "view", 6),
        _click("dee", "view", 30),  # ends the three visits above (10 s + 5 s lateness), stays open
    ]
    assert post(shop.port, "web.clicks", clicks)[0] == 202
    wait_until(lambda: request(shop.port, "GET", "/topics/web.visits/stats")[0] == 200)
    wait_until(lambda: _visits(shop)["count"] == 3, what="three visits ended")
    box = page.locator('#session-stats .session-window[data-window="1h"]')
    expect(box.locator('[data-stat="active"]')).to_have_text("1")
    expect(box.locator('[data-stat="bounce_rate"]')).to_have_text("33.33 %")
    expect(box.locator('[data-stat="events_per_session"]')).to_have_text("2")
    steps = box.locator(".funnel li")
    expect(steps.locator(".funnel-step")).to_have_text(["view", "cart", "<b>paid</b>"])
    expect(steps.locator(".funnel-sessions")).to_have_text(["3", "2", "1"])
    expect(steps.locator(".funnel-conversion")).to_have_text(["100 %", "66.67 %", "33.33 %"])
    expect(steps.locator(".funnel-median")).to_have_text(["", "1.5 s", "3 s"])
    widths = steps.locator(".funnel-bar").evaluate_all("bars => bars.map(b => b.style.width)")
    assert [round(float(w.rstrip("%"))) for w in widths] == [100, 67, 33]
    # ...drawn so: every bar starts at one x and its length is its share of the first's.
    boxes = steps.locator(".funnel-bar").evaluate_all(
        "bars => bars.map(b => [b.getBoundingClientRect().left, b.getBoundingClientRect().width])"
    )
    assert len({round(left) for left, _ in boxes}) == 1, boxes
    assert [round(100 * width / boxes[0][1]) for _, width in boxes] == [100, 67, 33], boxes
    expect(page.locator("#session-stats b")).to_have_count(0)  # a step's markup is text

    # Dee's visit ends too, a bounce: the panel follows.
    assert post(shop.port, "web.clicks", _click("eve", "view", 60))[0] == 202
    wait_until(lambda: _visits(shop)["count"] == 4, what="dee's visit ended")
    expect(box.locator('[data-stat="bounce_rate"]')).to_have_text("50 %")
    expect(steps.locator(".funnel-sessions")).to_have_text(["4", "2", "1"])


def test_a_topic_that_is_no_session_topic_shows_no_session_panel(
    shop: PushsvcProcess, page: Page
) -> None:
    open_dashboard(page, shop, "/#/topics/web.clicks")
    assert post(shop.port, "web.clicks", _click("zed", "view", 100))[0] == 202
    expect(page.locator("#topic-value")).to_have_text("1")
    expect(page.locator("#session-stats")).to_be_hidden()


def test_a_session_topics_tile_says_why_its_time_lags_its_sources(
    shop: PushsvcProcess, page: Page
) -> None:
    """A session topic's clock is where its sessions ended, a gap after their last event: its
    tile says so beside its time, where the others say nothing."""
    clicks = [_click("fay", "view", 200), _click("gus", "view", 230)]  # fay's visit ends
    assert post(shop.port, "web.clicks", clicks)[0] == 202
    wait_until(lambda: request(shop.port, "GET", "/topics/web.visits/stats")[0] == 200)
    open_dashboard(page, shop)
    visits = page.locator('article.tile[data-topic="web.visits"] .session-lag')
    expect(visits).to_have_text("(sessions count when they end, 10s after their last event)")
    expect(page.locator('article.tile[data-topic="web.clicks"] .session-lag')).to_be_hidden()


def test_a_session_topics_tile_drawn_before_the_rules_arrive_says_why_once_they_do(
    shop: PushsvcProcess, page: Page
) -> None:
    """GET /rules answers after the tiles are drawn, their histories in (held here until then,
    as a slow network would): once it arrives the session topic's tile says why its time lags,
    with no further update of the topic."""
    clicks = [_click("hal", "view", 300), _click("ivy", "view", 330)]  # hal's visit ends
    assert post(shop.port, "web.clicks", clicks)[0] == 202
    wait_until(lambda: request(shop.port, "GET", "/topics/web.visits/stats")[0] == 200)
    held: list[Route] = []

    def hold(route: Route) -> None:  # answered only when the test says
        held.append(route)

    page.route("**/rules", hold)
    open_dashboard(page, shop)  # live: the rules are asked for
    tile = page.locator('article.tile[data-topic="web.visits"]')
    expect(tile.locator(".spark")).not_to_have_attribute("data-points", "0")  # its history
    expect(tile.locator(".session-lag")).to_be_hidden()  # drawn without the rules
    assert held
    for route in held:
        route.continue_()
    expect(tile.locator(".session-lag")).to_have_text(
        "(sessions count when they end, 10s after their last event)"
    )
    expect(page.locator('article.tile[data-topic="web.clicks"] .session-lag')).to_be_hidden()
