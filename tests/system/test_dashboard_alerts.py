"""The dashboard's alerts, in a real headless Chromium against a real `pushsvc serve --rules`
with an alert: an instance that fires appears in the bar with a link to its topic (or group),
and goes once it resolves; the topic view's charts shade where an instance fired, from its
firing change's `since` to its resolved change's (as `GET topics/_alerts/history` tells them),
open-ended while it fires, and list those periods; a group's view only its group's; a server
without alert rules shows no bar; no console errors. Skipped only when Debian's `chromium` is
not installed."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request
from harness.net import free_port
from playwright.sync_api import Locator, Page, expect

from support.browser import (
    CHROMIUM,
    NO_CHROMIUM,
    alert_band_share,
    allow_network_errors,
    figure,
    open_dashboard,
    status,
)

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


def test_the_bar_shows_the_watched_statistic_as_it_stands_now(
    alerting: PushsvcProcess, page: Page
) -> None:
    """A firing instance's line in the bar gives its rule's statistic (max[10s]) now, for the
    topic and for its group, following the stream; the value it fired with is in its title."""
    topic = f"boiler.{uuid.uuid4().hex[:8]}"
    _post(alerting, topic, 0, 20.0)
    open_dashboard(page, alerting)
    _post(alerting, topic, 1, 95.0)  # fires, at 95
    items = page.locator("#alerts-bar li")
    own = items.filter(has=page.get_by_role("link", name=topic, exact=True))
    group = items.filter(has=page.get_by_role("link", name=f"{topic} · room: b1", exact=True))
    for item in (own, group):
        expect(item).to_contain_text("95")
    _post(alerting, topic, 2, 99.0)  # still firing; its max is 99 now
    for item in (own, group):
        expect(item).to_have_text(re.compile(r" max\[10s\] 99$"))
        expect(item).to_have_attribute("title", "a boiler runs over 90; 95 when it fired")


def _post(server: PushsvcProcess, topic: str, at: float, value: float, room: str = "b1") -> None:
    event = {"value": value, "ts": T0 + at, "tags": {"room": room}}
    assert post(server.port, topic, event)[0] == 202


def _changes(server: PushsvcProcess, topic: str) -> list[dict[str, Any]]:
    """The topic's alert changes, as the server's history of `_alerts` has them."""
    status, _, body = request(server.port, "GET", "/topics/_alerts/history?limit=1000")
    assert status == 200
    return [c for c in json.loads(body)["updates"] if c["topic"] == topic]


def _since(changes: list[dict[str, Any]], state: str, group: Any = None) -> str:
    """The `since` of the instance's change to `state`, written as the page writes a number."""
    (since,) = [c["since"] for c in changes if c["state"] == state and c["group"] == group]
    return str(int(since)) if float(since).is_integer() else repr(since)


def band_share(chart: Locator, at: float) -> float:
    return alert_band_share(chart, T0 + at)


def test_the_charts_shade_where_an_instance_fired(alerting: PushsvcProcess, page: Page) -> None:
    """The live charts span five minutes (a second is a few pixels): the probes stand well
    clear of the band's edges."""
    topic = f"boiler.{uuid.uuid4().hex[:8]}"
    _post(alerting, topic, -120, 20.0)
    _post(alerting, topic, 0, 20.0)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "stream?topic=_alerts" in r.url else None)
    open_dashboard(page, alerting, f"/#/topics/{topic}")
    periods = page.locator("#alert-periods li")
    expect(page.locator("#alert-periods")).to_be_hidden()
    _post(alerting, topic, 1, 95.0)  # fires: the topic's instance and its room's
    _post(alerting, topic, 5, 95.0)
    expect(periods).to_have_count(2)
    fired = _since(_changes(alerting, topic), "firing")
    for period in periods.all():  # open: to the charts' right edge
        expect(period).to_have_attribute("data-alert", "boiler_hot")
        expect(period).to_have_attribute("data-from", fired)
        expect(period).to_have_attribute("data-to", "")
    expect(periods.first).to_have_text("boiler_hot firing since 04:40:01")
    expect(figure(page, "10s")).to_have_attribute("data-points", "4")
    main = figure(page, "10s").locator(".chart-main")
    count = figure(page, "10s").locator(".chart-count")
    assert band_share(main, 3) > 0.5
    assert band_share(main, -60) == 0
    # The 95s leave the 10 s window: both resolve.
    _post(alerting, topic, 20, 20.0)
    _post(alerting, topic, 30, 20.0)
    expect(page.locator('#alert-periods li[data-to=""]')).to_have_count(0)
    changes = _changes(alerting, topic)
    resolved = _since(changes, "resolved")
    assert _since(changes, "resolved", {"room": "b1"}) == resolved
    for period in periods.all():
        expect(period).to_have_attribute("data-from", fired)
        expect(period).to_have_attribute("data-to", resolved)
    expect(periods.first).to_have_text("boiler_hot firing 04:40:01\N{EN DASH}04:40:20")
    expect(periods.nth(1).get_by_role("link")).to_have_attribute(
        "href", f"#/topics/{topic}?group=room:b1"
    )
    expect(figure(page, "10s")).to_have_attribute("data-points", "6")
    for chart in (main, count):
        assert band_share(chart, 10) > 0
        assert band_share(chart, -60) == band_share(chart, 40) == 0
    assert band_share(main, 10) > 0.5
    # A range drawn from the series is shaded too (an hour to a clock that moved on).
    _post(alerting, topic, 900, 20.0)
    expect(figure(page, "10s")).to_have_attribute("data-points", "1")
    page.locator("#range-select").select_option("3600")
    ranged = figure(page, "range").locator(".chart-main")
    expect(figure(page, "range")).to_be_visible()
    expect(figure(page, "range")).not_to_have_attribute("data-points", "0")
    assert band_share(ranged, 10) > 0.5
    assert band_share(ranged, 400) == 0
    assert len(streams) == 1  # the bar and the bands read one EventSource of `_alerts`


def test_a_groups_view_shades_only_its_groups_instance(
    alerting: PushsvcProcess, page: Page
) -> None:
    topic = f"boiler.{uuid.uuid4().hex[:8]}"
    for at, value, room in [(0, 20, "b1"), (0, 20, "b2"), (1, 95, "b1"), (2, 20, "b2")]:
        _post(alerting, topic, at, value, room)  # at 1: the topic's instance and b1's fire
    for at in (4, 6):
        _post(alerting, topic, at, 95.0, room="b2")  # b2's fires later
    open_dashboard(page, alerting, f"/#/topics/{topic}")
    periods = page.locator("#alert-periods li")
    expect(periods).to_have_count(3)
    expect(figure(page, "10s")).to_have_attribute("data-points", "6")
    assert band_share(figure(page, "10s").locator(".chart-main"), 3) > 0.5
    changes = _changes(alerting, topic)
    page.goto(f"{alerting.base}/#/topics/{topic}?group=room:b1")
    expect(page.locator("#group-name")).to_have_text("room: b1")
    expect(periods).to_have_count(1)
    expect(periods).to_have_attribute("data-from", _since(changes, "firing", {"room": "b1"}))
    page.goto(f"{alerting.base}/#/topics/{topic}?group=room:b2")
    expect(page.locator("#group-name")).to_have_text("room: b2")
    expect(periods).to_have_count(1)
    expect(periods).to_have_attribute("data-from", _since(changes, "firing", {"room": "b2"}))
    expect(periods).to_have_attribute("data-to", "")
    expect(figure(page, "10s")).to_have_attribute("data-points", "4")
    main = figure(page, "10s").locator(".chart-main")
    assert band_share(main, 5) > 0.5
    assert band_share(main, 3) == 0  # where the topic's and b1's instances fired


def test_a_server_without_alert_rules_shows_no_bar(page: Page) -> None:
    proc = PushsvcProcess("serve", "--tick", "0").start()
    try:
        assert post(proc.port, "plain", {"value": 1.0})[0] == 202
        open_dashboard(page, proc)
        expect(page.locator(".tile")).to_have_count(1)
        expect(page.locator("#alerts-bar")).to_be_hidden()
    finally:
        proc.stop()


def _alerts_now(server: PushsvcProcess) -> list[tuple[str, str, str]]:
    """GET /alerts's firing instances as the bar's items name them: alert, topic, group."""
    status, _, body = request(server.port, "GET", "/alerts")
    assert status == 200
    firing = [a for a in json.loads(body)["alerts"] if a["state"] == "firing"]
    return sorted(
        (
            a["alert"],
            a["topic"],
            "" if a["group"] is None else json.dumps(sorted(a["group"].items())),
        )
        for a in firing
    )


def _bar(page: Page) -> list[tuple[str, str, str]]:
    """The bar's items: alert, topic and group (as GET /alerts names them), sorted."""
    items = page.locator("#alerts-bar li").evaluate_all(
        "items => items.map(i => [i.dataset.alert, i.dataset.topic, i.dataset.group])"
    )
    return sorted(
        (alert, topic, "" if not group else json.dumps([list(p) for p in json.loads(group)]))
        for alert, topic, group in items
    )


def test_after_a_restart_the_bar_shows_the_servers_alerts_not_the_old_ones(
    page: Page, tmp_path: Path
) -> None:
    """A server restarted without --data-dir has no alert firing: the page, open across the
    restart, drops those it showed, and then shows what the new process fires, as GET /alerts
    answers. The run's dashboard-alerts-after-restart-none.png and -after-restart.png are the
    page at those two moments."""
    allow_network_errors(page)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    args = ("--port", str(free_port()), "--tick", "0", "--retry", "200ms", "--rules", str(rules))
    before, after = (f"boiler.{uuid.uuid4().hex[:8]}" for _ in range(2))
    first = PushsvcProcess("serve", *args).start()
    try:
        _post(first, before, 0, 20.0)
        open_dashboard(page, first)
        _post(first, before, 1, 95.0)
        expect(page.locator("#alerts-count")).to_have_text("2 firing")
        assert _bar(page) == _alerts_now(first)
    finally:
        first.stop()
    second = PushsvcProcess("serve", *args).start()
    try:
        expect(status(page)).to_have_attribute("data-state", "gap")
        assert _alerts_now(second) == []
        expect(page.locator("#alerts-bar")).to_be_hidden()
        expect(page.locator("#alerts-bar li")).to_have_count(0)
        page.screenshot(path=tmp_path / "dashboard-alerts-after-restart-none.png")
        _post(second, after, 0, 20.0)
        _post(second, after, 1, 95.0, room="b7")
        expect(page.locator("#alerts-count")).to_have_text("2 firing")
        assert _bar(page) == _alerts_now(second)
        assert {topic for _, topic, _ in _bar(page)} == {after}
        page.screenshot(path=tmp_path / "dashboard-alerts-after-restart.png")
    finally:
        second.stop()
