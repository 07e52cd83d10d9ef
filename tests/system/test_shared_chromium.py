"""The suite's one Chromium per worker (support.browser.SharedChromium), lent to one module at
a time: between loans the rest of the suite runs asyncio as if no browser were there, and a
browser that went away is launched again at the next loan."""

from __future__ import annotations

import asyncio

import pytest

from support.browser import CHROMIUM, NO_CHROMIUM, SharedChromium

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)]


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_between_loans_asyncio_runs_and_a_browser_gone_is_launched_again() -> None:
    shared = SharedChromium()
    try:
        with shared.lent() as browser:
            page = browser.new_page()
            assert page.evaluate("1 + 1") == 2
            page.close()
        # Playwright's sync API leaves its loop marked as running after every call; a loan's
        # end unmarks it, or asyncio.run in a later test refuses to start.
        assert asyncio.run(_answer()) == 42
        with shared.lent() as browser:
            first = browser
            page = browser.new_page()
            assert page.evaluate("2 + 2") == 4
            browser.close()  # gone, as after a crash
        with shared.lent() as browser:
            assert browser is not first and browser.is_connected()
            page = browser.new_page()
            assert page.evaluate("3 + 3") == 6
            page.close()
        assert asyncio.run(_answer()) == 42
    finally:
        shared.close()
    assert asyncio.run(_answer()) == 42
