"""A grouping topic on the dashboard, in a real headless Chromium against a real `pushsvc
serve --rules`: the topic view's table of live groups (their numbers as GET /topics/{t}/stats
gives them, sorted by any column, rows appearing for new groups, following ticks and going
with forgotten groups), and a group's own charts and numbers, with a way back. The picture
docs/dashboard-groups.png (docs/dashboard.md) is taken here, written there only with
TEST_PUSHSVC_WRITE_SCREENSHOTS=1. Skipped only when Debian's `chromium` is not installed.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request
from playwright.sync_api import Locator, Page, expect

from support.browser import (
    CHROMIUM,
    NO_CHROMIUM,
    current,
    drawn,
    figure,
    open_dashboard,
    screenshot_path,
    shown,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["ticking.*"]
windows = ["1s", "1m"]
stats = ["count", "mean"]
group_by = ["station"]

[[rule]]
topics = ["kitchen.*"]
windows = ["10s", "1m"]
stats = ["count", "mean", "max", "p90"]
group_by = ["station"]
"""
WINDOWS = ("10s", "1m")
STATS = ("count", "mean", "max", "p90")
CHART_STATS = ("mean", "p50", "p90", "p99", "min", "max", "count")  # a chart's data table
BASE = 1763700000  # 2025-11-21 04:40:00 UTC: the topic clock of the tests' events


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(RULES)
    return path


@pytest.fixture(scope="module")
def grouping(rules_file: Path) -> Iterator[PushsvcProcess]:
    """No ticks: every update is an event's, so what the page shows can be awaited exactly."""
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules_file)).start()
    yield proc
    proc.stop()


def kitchen_topic() -> str:
    return f"kitchen.{uuid.uuid4().hex[:10]}"


def events(*pairs: tuple[float, str | None], start: float = BASE) -> list[dict[str, Any]]:
    """One event a second from `start`: (value, station), no tag for None."""
    return [
        {"value": value, "ts": start + i, "tags": {} if station is None else {"station": station}}
        for i, (value, station) in enumerate(pairs)
    ]


def get(server: PushsvcProcess, path: str) -> Any:
    status, _, body = request(server.port, "GET", path)
    assert status == 200, body
    return json.loads(body)


def live_groups(server: PushsvcProcess, topic: str) -> dict[str | None, dict[str, Any]]:
    """GET /topics/{t}/stats: each live group's windows, by station."""
    stats = get(server, f"/topics/{topic}/stats")
    return {g["key"]["station"]: g["windows"] for g in stats["groups"]}


def groups_table(page: Page) -> Locator:
    return page.get_by_role("table", name="Groups")


def row(page: Page, station: str) -> Locator:
    header = page.get_by_role("rowheader", name=station, exact=True)
    return groups_table(page).get_by_role("row").filter(has=header)


def shown_row(windows: dict[str, Any], window: str) -> list[str]:
    """A row's statistics as the table shows them (the sparkline's cell has no text)."""
    return [shown(windows[window][stat]) for stat in STATS] + [""]


def group_points(updates: list[dict[str, Any]], window: str) -> list[dict[str, str]]:
    """What a group's chart draws: each update's group windows, the statistics the rule
    keeps (its table has no column for another)."""
    return [
        {
            "id": u["id"],
            **{
                k: shown(u["group"]["windows"][window][k])
                for k in CHART_STATS
                if k in u["group"]["windows"][window]
            },
        }
        for u in updates
    ]


def test_the_groups_table_shows_each_live_group_with_its_numbers(
    grouping: PushsvcProcess, page: Page
) -> None:
    topic = kitchen_topic()
    posted = events((10, "grill"), (30, "fry"), (20, "grill"), (5, "wok"), (7, None), (41, "fry"))
    assert post(grouping.port, topic, posted) == (202, {"accepted": 6})
    open_dashboard(page, grouping, f"/#/topics/{topic}")

    table = groups_table(page)
    expect(page.get_by_text("4 live groups")).to_be_visible()
    # By station first; the group whose events lack the tag last.
    expect(table.get_by_role("rowheader")).to_have_text(["fry", "grill", "wok", "(none)"])
    expect(table.get_by_role("button")).to_have_text(["station ▲", *STATS])
    groups = live_groups(grouping, topic)
    assert groups["grill"]["10s"]["mean"] == 15  # the server's numbers are the reference
    for window in WINDOWS:
        page.get_by_label("Table window").select_option(window)
        for station, windows in groups.items():
            cells = row(page, station or "(none)").get_by_role("cell")
            expect(cells).to_have_text(shown_row(windows, window))
    # Each row's sparkline: the chosen statistic over the group's recent updates.
    expect(row(page, "fry").get_by_role("img")).to_have_accessible_name(
        "mean over the last 2 updates, from 30 to 35.5"
    )
    page.get_by_label("Sparkline").select_option("max")
    expect(row(page, "fry").get_by_role("img")).to_have_accessible_name(
        "max over the last 2 updates, from 30 to 41"
    )
    expect(table.get_by_role("columnheader").last).to_have_text("max, recent updates")


def test_a_topic_that_does_not_group_has_no_groups_table(
    grouping: PushsvcProcess, page: Page
) -> None:
    topic = f"plain-{uuid.uuid4().hex[:10]}"
    assert post(grouping.port, topic, {"value": 3, "tags": {"station": "grill"}})[0] == 202
    open_dashboard(page, grouping, f"/#/topics/{topic}")
    expect(current(page, "10s", "count")).to_have_text("1")
    expect(groups_table(page)).to_be_hidden()


def test_on_a_phone_the_table_scrolls_within_itself(grouping: PushsvcProcess, page: Page) -> None:
    topic = kitchen_topic()
    station = "station-with-a-rather-long-name-" * 3
    assert post(grouping.port, topic, events((123456.789, station), (2, "fry")))[0] == 202
    page.set_viewport_size({"width": 390, "height": 800})
    open_dashboard(page, grouping, f"/#/topics/{topic}")
    expect(row(page, station).get_by_role("cell").first).to_have_text("1")
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    expect(row(page, station).get_by_role("rowheader")).to_be_in_viewport()


def test_a_header_sorts_the_rows_by_its_column_and_again_the_other_way(
    grouping: PushsvcProcess, page: Page
) -> None:
    topic = kitchen_topic()
    posted = events((50, "grill"), (8, "fry"), (20, "wok"), (70, "grill"), (9, "salad"))
    assert post(grouping.port, topic, posted)[0] == 202
    open_dashboard(page, grouping, f"/#/topics/{topic}")
    stations = groups_table(page).get_by_role("rowheader")
    expect(stations).to_have_text(["fry", "grill", "salad", "wok"])

    mean = groups_table(page).get_by_role("columnheader").filter(has_text="mean").first
    page.get_by_role("button", name="mean", exact=True).click()
    expect(stations).to_have_text(["fry", "salad", "wok", "grill"])  # 8, 9, 20, 60
    expect(mean).to_have_attribute("aria-sort", "ascending")
    page.get_by_role("button", name="mean", exact=True).click()
    expect(stations).to_have_text(["grill", "wok", "salad", "fry"])
    expect(mean).to_have_attribute("aria-sort", "descending")
    page.get_by_role("button", name="count", exact=True).click()
    expect(stations).to_have_text(["fry", "salad", "wok", "grill"])  # 1, 1, 1, 2: ties by key
    page.get_by_role("button", name="station", exact=True).click()
    page.get_by_role("button", name="station", exact=True).click()
    expect(stations).to_have_text(["wok", "salad", "grill", "fry"])
    # The order holds as the numbers move: fry's mean passes grill's.
    page.get_by_role("button", name="mean", exact=True).click()
    assert post(grouping.port, topic, events((500, "fry"), start=BASE + 5))[0] == 202
    expect(stations).to_have_text(["salad", "wok", "grill", "fry"])  # 9, 20, 60, 254


def test_a_new_group_appears_live_and_forgotten_ones_go(
    grouping: PushsvcProcess, page: Page
) -> None:
    topic = kitchen_topic()
    assert post(grouping.port, topic, events((1, "grill"), (2, "fry")))[0] == 202
    open_dashboard(page, grouping, f"/#/topics/{topic}")
    stations = groups_table(page).get_by_role("rowheader")
    expect(stations).to_have_text(["fry", "grill"])

    assert post(grouping.port, topic, events((4, "pastry"), start=BASE + 2))[0] == 202
    expect(stations).to_have_text(["fry", "grill", "pastry"])
    expect(row(page, "pastry").get_by_role("cell")).to_have_text(["1", "4", "4", "4", ""])
    expect(page.get_by_text("3 live groups")).to_be_visible()
    # An event over an hour (the topic TTL) later: the groups idle since are forgotten.
    assert post(grouping.port, topic, events((6, "grill"), start=BASE + 3700))[0] == 202
    expect(stations).to_have_text(["grill"])
    expect(page.get_by_text("1 live group", exact=True)).to_be_visible()
    assert list(live_groups(grouping, topic)) == ["grill"]
    expect(row(page, "grill").get_by_role("cell")).to_have_text(["1", "6", "6", "6", ""])


def test_a_group_opens_its_own_charts_and_leads_back_to_the_whole_topic(
    grouping: PushsvcProcess, page: Page
) -> None:
    topic = kitchen_topic()
    posted = events((10, "grill"), (30, "fry"), (20, "grill"), (25, "grill"), (99, "fry"))
    assert post(grouping.port, topic, posted)[0] == 202
    open_dashboard(page, grouping, f"/#/topics/{topic}")
    row(page, "grill").get_by_role("cell").first.click()  # anywhere on the row

    expect(page).to_have_url(re.compile(rf"#/topics/{topic}\?group=station:grill$"))
    expect(page.get_by_text("group station: grill")).to_be_visible()
    expect(groups_table(page)).to_be_hidden()
    expect(page.locator("#topic-value")).to_have_text("25")  # grill's latest, not fry's 99
    only = get(grouping, f"/topics/{topic}/stats?group=station:grill")["groups"][0]["windows"]
    for window in WINDOWS:
        expect(figure(page, window)).to_have_attribute("data-points", "3")
        for stat in STATS:
            expect(current(page, window, stat)).to_have_text(shown(only[window][stat]))
    updates = get(grouping, f"/topics/{topic}/history?group=station:grill")["updates"]
    assert drawn(page, "10s") == group_points(updates, "10s")

    # Live: another station's event changes nothing here; grill's adds a point.
    assert post(grouping.port, topic, events((1, "fry"), (40, "grill"), start=BASE + 5))[0] == 202
    expect(figure(page, "1m")).to_have_attribute("data-points", "4")
    expect(current(page, "1m", "mean")).to_have_text("23.75")  # (10 + 20 + 25 + 40) / 4
    expect(page.locator("#topic-value")).to_have_text("40")

    page.get_by_role("link", name="← Whole topic").click()
    expect(page).to_have_url(re.compile(rf"#/topics/{topic}$"))
    expect(groups_table(page)).to_be_visible()
    expect(page.get_by_text("group station: grill")).to_be_hidden()
    expect(current(page, "1m", "count")).to_have_text("7")
    expect(figure(page, "1m")).to_have_attribute("data-points", "7")


def test_the_group_of_events_without_the_tag_opens_too(
    grouping: PushsvcProcess, page: Page
) -> None:
    """`?group=` cannot name a missing tag: the page picks that group's part out of the
    topic's updates itself, and draws the same as for any group."""
    topic = kitchen_topic()
    posted = events((10, None), (30, "fry"), (20, None), (5, "fry"), (60, None))
    assert post(grouping.port, topic, posted)[0] == 202
    open_dashboard(page, grouping, f"/#/topics/{topic}")
    page.get_by_role("link", name="(none)", exact=True).click()

    expect(page.get_by_text("group station: (none)")).to_be_visible()
    expect(page.locator("#topic-value")).to_have_text("60")
    windows = live_groups(grouping, topic)[None]
    for stat in STATS:
        expect(current(page, "10s", stat)).to_have_text(shown(windows["10s"][stat]))
    expect(figure(page, "10s")).to_have_attribute("data-points", "3")
    updates = get(grouping, f"/topics/{topic}/history")["updates"]
    mine = [u for u in updates if u["group"]["key"] == {"station": None}]
    assert drawn(page, "10s") == group_points(mine, "10s")


def test_a_tick_moves_the_numbers_of_the_groups_it_changed(rules_file: Path, page: Page) -> None:
    proc = PushsvcProcess("serve", "--tick", "100ms", "--rules", str(rules_file)).start()
    try:
        topic = "ticking.orders"
        now = datetime.now(UTC).timestamp()
        assert post(proc.port, topic, events((4, "grill"), (6, "fry"), start=now - 1))[0] == 202
        open_dashboard(page, proc, f"/#/topics/{topic}")
        page.get_by_label("Table window").select_option("1m")
        expect(row(page, "grill").get_by_role("cell")).to_have_text(["1", "4", ""])
        page.get_by_label("Table window").select_option("1s")
        # With no further event, the clock moves on and the 1s windows empty.
        for station in ("grill", "fry"):
            expect(row(page, station).get_by_role("cell")).to_have_text(["0", "—", ""])
        page.get_by_label("Table window").select_option("1m")
        expect(row(page, "fry").get_by_role("cell")).to_have_text(["1", "6", ""])
    finally:
        proc.stop()


def test_screenshot_of_a_grouping_topic_for_the_readme(
    rules_file: Path, page: Page, tmp_path: Path
) -> None:
    """docs/dashboard-groups.png (rewritten only with TEST_PUSHSVC_WRITE_SCREENSHOTS=1): a
    grouping topic's view at 1280 px, every group's row with its numbers and a drawn line."""
    path = screenshot_path("dashboard-groups.png", tmp_path)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules_file)).start()
    try:
        topic = "kitchen.ticket_ms"
        stations = {"grill": 420, "fry": 260, "wok": 310, "salad": 140, "pastry": 520}
        now = datetime.now(UTC).timestamp()
        posted = [
            {
                "value": round(level * (1 + 0.25 * math.sin(i / (3 + k)) + 0.04 * (i % 5)), 1),
                "ts": now - 295 + i * 2.45 + k * 0.02,  # five minutes: the live range
                "tags": {"station": station},
            }
            for i in range(120)
            for k, (station, level) in enumerate(stations.items())
        ]
        assert post(proc.port, topic, posted)[0] == 202
        page.set_viewport_size({"width": 1280, "height": 760})
        open_dashboard(page, proc, f"/#/topics/{topic}")
        page.get_by_label("Table window").select_option("1m")
        for station in stations:
            expect(row(page, station).get_by_role("img")).to_have_accessible_name(
                re.compile(r"^mean over the last 60 updates, from [\d.,]+ to [\d.,]+$")
            )
        expect(figure(page, "10s")).to_have_attribute("data-points", str(len(posted)))
        page.get_by_role("button", name="mean", exact=True).click()
        page.get_by_role("button", name="mean", exact=True).click()
        expect(groups_table(page).get_by_role("rowheader").first).to_have_text("pastry")
        page.screenshot(path=str(path))
    finally:
        proc.stop()
