"""The dashboard's overview on a server with thousands of topics (a channel per user), in a real
headless Chromium: a bounded page of tiles with "N of M topics shown" and "Show more", the
filter finding a topic deep in the list by any part of its name and opening its view, newest
update first, and no request about a topic whose tile is not on screen. Skipped only when
Debian's `chromium` is not installed.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from harness.live import PushsvcProcess, post
from playwright.sync_api import Page, expect

from support.browser import CHROMIUM, NO_CHROMIUM, current, open_dashboard

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

TOPICS = 5000
PAGE = 100  # tiles shown at first (js/topic-list.js)
NAMES = [f"user-{i}" for i in range(TOPICS)]


def post_each(port: int, names: list[str]) -> None:
    """One event to each topic, over a few keep-alive connections."""

    def post_part(part: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for i, name in enumerate(part):
                body = json.dumps({"value": i % 97})
                headers = {"Content-Type": "application/json"}
                conn.request("POST", f"/topics/{name}/events", body, headers)
                response = conn.getresponse()
                assert response.status == 202, response.read()
                response.read()
        finally:
            conn.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post_part, [names[i::4] for i in range(4)]))


@pytest.fixture(scope="module")
def many() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess("serve", "--tick", "0", "--heartbeat", "1s").start()
    try:
        post_each(proc.port, NAMES)
        yield proc
    finally:
        proc.stop()


def topics_asked_about(urls: list[str]) -> set[str]:
    """The topics named by per-topic requests (`/topics/{t}/history`, `/series`, `/presence`
    ...): the stream of `*` names none."""
    asked = set()
    for url in urls:
        parts = urlsplit(url).path.split("/")
        if len(parts) >= 4 and parts[1] == "topics" and parts[2] != "*":
            asked.add(unquote(parts[2]))
    return asked


def tiles_near_screen(page: Page) -> list[str]:
    """The tiles within 200 px of the viewport (where the page counts them as on screen)."""
    names: list[str] = page.evaluate(
        """() => [...document.querySelectorAll("article.tile")].filter((el) => {
            const box = el.getBoundingClientRect();
            return box.bottom > -200 && box.top < innerHeight + 200;
        }).map((el) => el.dataset.topic)"""
    )
    return names


def test_thousands_of_topics_show_a_page_of_tiles_and_ask_only_about_those_on_screen(
    many: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    started = time.monotonic()
    open_dashboard(page, many)
    tiles = page.locator("article.tile")
    expect(tiles).to_have_count(PAGE)
    print(f"{PAGE} tiles of {TOPICS} topics in {time.monotonic() - started:.2f} s")
    expect(page.locator("#shown")).to_have_text(f"{PAGE} of 5,000 topics shown")
    # In name order: user-0, user-1, user-10, user-100 ...
    assert tiles.first.get_attribute("data-topic") == "user-0"
    near = tiles_near_screen(page)
    assert 0 < len(near) < PAGE
    for name in near:  # each drew its one value, from its history
        spark = page.locator(f'article.tile[data-topic="{name}"] .spark')
        expect(spark).to_have_attribute("data-points", "1")
    page.screenshot(path=tmp_path / "many-topics.png")

    # Nothing asked about any topic but those on screen: each its history and its hour.
    asked_about = topics_asked_about(asked)
    assert asked_about <= set(near), sorted(asked_about - set(near))[:10]
    histories = {unquote(urlsplit(u).path.split("/")[2]) for u in asked if "/history" in u}
    assert histories == set(near)

    # Show more: another page of tiles, still none of their requests until scrolled to.
    page.get_by_role("button", name=f"Show {PAGE} more").click()
    expect(tiles).to_have_count(2 * PAGE)
    last = tiles.last
    furthest = last.get_attribute("data-topic")
    assert furthest is not None and furthest not in topics_asked_about(asked)
    last.scroll_into_view_if_needed()
    expect(last.locator(".spark")).to_have_attribute("data-points", "1")
    assert furthest in topics_asked_about(asked)
    assert topics_asked_about(asked) <= {t.get_attribute("data-topic") for t in tiles.all()}


def test_the_filter_finds_a_topic_deep_in_the_list_and_opens_its_view(
    many: PushsvcProcess, page: Page
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    open_dashboard(page, many)
    expect(page.locator("article.tile")).to_have_count(PAGE)
    first = set(tiles_near_screen(page))
    # Part of its name, anywhere in it.
    page.get_by_label("Find topics").fill("4321")
    expect(page.locator("article.tile")).to_have_count(1)
    expect(page.locator("#shown")).to_have_text("1 of 1 matching topic shown, 5,000 in all")
    found = page.locator('article.tile[data-topic="user-4321"]')
    expect(found.locator(".spark")).to_have_attribute("data-points", "1")
    found.get_by_role("link", name="user-4321").click()
    expect(page.get_by_role("heading", name="user-4321", exact=True)).to_be_focused()
    expect(current(page, "10s", "count")).to_have_text("1")
    # A prefix matches as many as it does, a page of them shown.
    page.get_by_role("link", name="← All topics").click()
    page.get_by_label("Find topics").fill("user-1")
    expect(page.locator("#shown")).to_have_text(
        f"{PAGE} of 1,111 matching topics shown, 5,000 in all"
    )
    expect(page.get_by_role("button", name=f"Show {PAGE} more")).to_be_visible()
    assert "user-4321" in topics_asked_about(asked)
    assert topics_asked_about(asked) <= first | {"user-4321"} | set(tiles_near_screen(page))


def test_newest_update_first_brings_a_topic_that_just_had_one_to_the_top(
    many: PushsvcProcess, page: Page
) -> None:
    open_dashboard(page, many)
    page.get_by_label("Order").select_option("recent")
    assert post(many.port, "user-2345", {"value": 1})[0] == 202
    expect(page.locator("article.tile").first).to_have_attribute("data-topic", "user-2345")
    expect(page.locator("article.tile")).to_have_count(PAGE)
    assert post(many.port, "user-3456", {"value": 2})[0] == 202
    expect(page.locator("article.tile").first).to_have_attribute("data-topic", "user-3456")
    expect(page.locator("article.tile").nth(1)).to_have_attribute("data-topic", "user-2345")
