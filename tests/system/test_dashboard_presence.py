"""The dashboard's "N watching" on each tile, in a real headless Chromium against a real
`pushsvc serve`: the page's own stream is one of the watchers, streams that join and leave move
the count, and a topic's count is its own. Its picture is written to
/tmp/dashboard-presence.png. Skipped only when Debian's `chromium` is not installed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, SSEClient, post
from playwright.sync_api import Locator, Page, expect

from support.browser import CHROMIUM, NO_CHROMIUM, open_dashboard

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

SCREENSHOT = Path("/tmp/dashboard-presence.png")
# The badges are read every 5 s: a change shows within that and a request.
REFRESH_MS = 12_000


def _watching(page: Page, topic: str) -> Locator:
    heading = page.get_by_role("heading", name=topic, exact=True)
    return page.locator("article.tile").filter(has=heading).locator(".watching")


def test_each_tile_says_how_many_watch_its_topic(server: PushsvcProcess, page: Page) -> None:
    busy, quiet = f"busy-{uuid.uuid4().hex[:8]}", f"quiet-{uuid.uuid4().hex[:8]}"
    for topic in (busy, quiet):
        assert post(server.port, topic, {"value": 1})[0] == 202
    open_dashboard(page, server)
    # The page's own `*` stream watches every topic.
    expect(_watching(page, busy)).to_have_text("1 watching")
    expect(_watching(page, quiet)).to_have_text("1 watching")
    streams = [SSEClient(server.port, f"/topics/{busy}/stream") for _ in range(2)]
    try:
        expect(_watching(page, busy)).to_have_text("3 watching", timeout=REFRESH_MS)
        expect(_watching(page, quiet)).to_have_text("1 watching")
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        for stream in streams:
            stream.close()
    expect(_watching(page, busy)).to_have_text("1 watching", timeout=REFRESH_MS)
