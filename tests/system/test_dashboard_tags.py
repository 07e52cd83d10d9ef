"""The dashboard's distinct counts and top values, in a real headless Chromium against a real
`pushsvc serve --rules`: the topic view shows each window's distinct count (the number the
update carries, and a sparkline of it over the updates) and its top values as a ranked bar
list that follows the live updates; producers' values are shown as text, never as markup.
Skipped only when Debian's `chromium` is not installed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request
from playwright.sync_api import Locator, Page, Route, expect

from support.browser import CHROMIUM, NO_CHROMIUM, open_dashboard

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["shop.*"]
windows = ["10s", "1h"]
distinct = ["user"]
top = [{ tag = "product", k = 3 }]

# A topic pushsvc derives under that rule: its events carry no tags.
[[derive]]
topic = "shop.conversion"
every = "1s"
value = "count[10s](shop.paid) / count[10s](shop.checkout)"
"""
BASE = 1763700000


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(path)).start()
    yield proc
    proc.stop()


def _events(pairs: list[tuple[str, str]], start: float) -> list[dict[str, Any]]:
    return [
        {"value": 1, "ts": start + i, "tags": {"user": user, "product": product}}
        for i, (user, product) in enumerate(pairs)
    ]


def _stats(server: PushsvcProcess, topic: str) -> dict[str, Any]:
    status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
    assert status == 200
    windows: dict[str, Any] = json.loads(body)["windows"]
    return windows


def _box(page: Page, window: str) -> Locator:
    return page.locator(f'#tag-stats .tag-window[data-window="{window}"]')


def test_distinct_counts_and_ranked_top_values_follow_the_updates(
    shop: PushsvcProcess, page: Page
) -> None:
    topic = f"shop.{uuid.uuid4().hex[:8]}"
    open_dashboard(page, shop, f"/#/topics/{topic}")
    first = [("ann", "tea"), ("bob", "tea"), ("ann", "cake"), ("cy", "<b>jam</b>")]
    assert post(shop.port, topic, _events(first, BASE))[0] == 202
    for window in ("10s", "1h"):
        box = _box(page, window)
        expect(box.locator(".distinct-value")).to_have_text("3")
        want = [e["value"] for e in _stats(shop, topic)[window]["top_product"]]
        assert want == ["tea", "<b>jam</b>", "cake"]  # count desc, then value asc
        expect(box.locator("ol.top-values li .top-value")).to_have_text(want)
        expect(box.locator("ol.top-values li .top-count")).to_have_text(["2", "1", "1"])
        # The widest bar is the most frequent value's.
        widths = box.locator(".top-bar").evaluate_all("bars => bars.map(b => b.style.width)")
        assert widths == ["100%", "50%", "50%"]
    # The markup in a value is text.
    expect(page.locator("#tag-stats b")).to_have_count(0)

    # Cake overtakes tea; two more users. The 10 s window has lost the first events by then.
    more = [("dan", "cake"), ("eve", "cake"), ("fay", "cake")]
    assert post(shop.port, topic, _events(more, BASE + 20))[0] == 202
    hour = _box(page, "1h")
    expect(hour.locator(".distinct-value")).to_have_text("6")
    expect(hour.locator("ol.top-values li .top-value")).to_have_text(["cake", "tea", "<b>jam</b>"])
    expect(hour.locator("ol.top-values li .top-count")).to_have_text(["4", "2", "1"])
    ten = _box(page, "10s")
    expect(ten.locator(".distinct-value")).to_have_text("3")
    expect(ten.locator("ol.top-values li .top-value")).to_have_text(["cake"])
    # The sparkline has a point per update on screen: 7 so far.
    points = hour.locator("polyline").get_attribute("points") or ""
    assert len(points.split()) == 7
    # One window chosen: only its tag statistics.
    page.locator("#window-select").select_option("1h")
    expect(page.locator("#tag-stats .tag-window")).to_have_count(1)


def test_a_topic_without_tag_statistics_shows_none(shop: PushsvcProcess, page: Page) -> None:
    topic = f"plain-{uuid.uuid4().hex[:8]}"
    open_dashboard(page, shop, f"/#/topics/{topic}")
    assert post(shop.port, topic, {"value": 1, "ts": BASE})[0] == 202
    expect(page.locator("#topic-value")).to_have_text("1")
    expect(page.locator("#tag-stats")).to_be_hidden()


def test_a_derived_topic_under_a_tag_rule_shows_no_tag_panel(
    shop: PushsvcProcess, page: Page
) -> None:
    """`shop.conversion` takes the `shop.*` rule, with its distinct users and top products;
    its values, derived by pushsvc, carry no tags: no panel of a count stuck at 0 and an
    empty list."""
    for source in ("shop.checkout", "shop.paid"):
        pairs = [("ann", "tea"), ("bob", "cake")] * 15
        assert post(shop.port, source, _events(pairs, BASE + 100))[0] == 202
    open_dashboard(page, shop, "/#/topics/shop.conversion")
    expect(page.locator("#topic-value")).not_to_have_text("—")
    windows = _stats(shop, "shop.conversion")
    assert windows["1h"]["distinct_user"] == 0 and windows["1h"]["top_product"] == []
    expect(page.locator("#tag-stats")).to_be_hidden()
    expect(page.locator("#tag-stats .tag-window")).to_have_count(0)


def test_a_derived_topic_drawn_before_the_rules_arrive_loses_its_tag_panel_when_they_do(
    shop: PushsvcProcess, page: Page
) -> None:
    """GET /rules answers after the derived topic is drawn (held here until then, as a slow
    network would): once it arrives the panel goes, with no further update of the topic."""
    for source in ("shop.checkout", "shop.paid"):
        pairs = [("cy", "tea"), ("di", "cake")] * 15
        assert post(shop.port, source, _events(pairs, BASE + 200))[0] == 202
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route("**/rules", hold)
    open_dashboard(page, shop, "/#/topics/shop.conversion")  # live: the rules are asked for
    expect(page.locator("#topic-value")).not_to_have_text("—")
    expect(page.locator("#tag-stats")).to_be_visible()  # drawn without the rules
    assert held  # the page's readers of the rules (the views' and the alert log's)
    for route in held:
        route.continue_()
    expect(page.locator("#tag-stats")).to_be_hidden()
