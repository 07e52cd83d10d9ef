"""The dashboard's alerts bar, in a real headless Chromium against a real `pushsvc serve
--rules` with an alert: an instance that fires appears in the bar with a link to its topic (or
group), and goes once it resolves; a server without alert rules shows no bar; no console
errors. Skipped only when Debian's `chromium` is not installed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from support.browser import CHROMIUM, NO_CHROMIUM, open_dashboard
from support.live import PushsvcProcess, post

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["boiler.*"]
windows = ["10s"]
stats = ["count", "max"]
group_by = ["room"]

[[alert]]
name = "boiler_hot"
topics = ["boiler.*"]
when = "max[10s] > 90"
annotations = { summary = "a boiler runs over 90" }
"""
T0 = 1_763_700_000.0


@pytest.fixture(scope="module")
def alerting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    yield proc
    proc.stop()


def test_a_firing_instance_shows_in_the_bar_until_it_resolves(
    alerting: PushsvcProcess, page: Page
) -> None:
    topic = f"boiler.{uuid.uuid4().hex[:8]}"
    assert post(alerting.port, topic, {"value": 20.0, "ts": T0, "tags": {"room": "b1"}})[0] == 202
    open_dashboard(page, alerting)
    bar = page.locator("#alerts-bar")
    expect(bar).to_be_hidden()
    assert (
        post(alerting.port, topic, {"value": 95.0, "ts": T0 + 1, "tags": {"room": "b1"}})[0] == 202
    )
    items = bar.locator(f'li[data-topic="{topic}"]')
    expect(items).to_have_count(2)  # the topic and its group
    expect(bar).to_be_visible()
    expect(page.locator("#alerts-count")).to_have_text("2 firing")
    links = items.locator("a")
    expect(links).to_have_text([topic, f"{topic} · room: b1"])
    assert links.nth(1).get_attribute("href") == f"#/topics/{topic}?group=room:b1"
    links.nth(1).click()
    expect(page.locator("#group-name")).to_contain_text("b1")
    # The 95 leaves the 10 s window: both resolve and leave the bar.
    assert (
        post(alerting.port, topic, {"value": 20.0, "ts": T0 + 20, "tags": {"room": "b1"}})[0] == 202
    )
    expect(items).to_have_count(0)
    expect(bar).to_be_hidden()


def test_a_server_without_alert_rules_shows_no_bar(page: Page) -> None:
    proc = PushsvcProcess("serve", "--tick", "0").start()
    try:
        assert post(proc.port, "plain", {"value": 1.0})[0] == 202
        open_dashboard(page, proc)
        expect(page.locator(".tile")).to_have_count(1)
        expect(page.locator("#alerts-bar")).to_be_hidden()
    finally:
        proc.stop()
