"""Anomalies on the dashboard, in a real headless Chromium against a real `pushsvc serve`: the
topic view's 24 h range shades each bucket the rule's detector flagged (those `GET
/topics/{t}/series` says are anomalous) and no other, and the overview lists `GET
/anomalies`' ranking. The first takes docs/dashboard-anomalies.png (rewritten only with
TEST_PUSHSVC_WRITE_SCREENSHOTS=1). Skipped only when Debian's `chromium` is not installed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_published, wait_until
from playwright.sync_api import Page, expect

from support.browser import (
    CHROMIUM,
    NO_CHROMIUM,
    anomaly_band_share,
    figure,
    open_dashboard,
    screenshot_path,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["boiler.*"]
windows = ["10s", "1m"]
stats = ["count", "mean"]
series = ["1m:24h"]
anomaly = { every = "1m", learn = "60m" }
"""
HOURS = 3
SPIKE = 150  # minutes into the three hours: in the last hour, which the 1 h range draws


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    yield proc
    proc.stop()


def _hours(now: float) -> list[dict[str, Any]]:
    """An event every 20 s over the last three hours, ending two minutes ago, wavering, with a
    minute of spikes at SPIKE (the detector rests after a flag: one flag)."""
    start = now - HOURS * 3600
    out = []
    for i in range(int((HOURS * 3600 - 120) / 20)):
        minute = i // 3
        value = 50 + 5 * ((i * 37) % 11) / 11 + (200 if minute == SPIKE else 0)
        out.append({"value": value, "ts": round(start + i * 20, 3)})
    return out


def test_the_range_chart_shades_the_anomalous_buckets(
    scored: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    topic = "boiler.north"
    events = _hours(time.time())
    for start in range(0, len(events), 2000):
        assert post(scored.port, topic, events[start : start + 2000])[0] == 202
    wait_published(scored.port, topic, events[-1])
    since = events[-1]["ts"] - 3600
    query = f"resolution=1m&since={since}"
    status, _, body = request(scored.port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200
    points = json.loads(body)["points"]
    flagged = [p["t"] for p in points if p["anomalous"]]
    assert len(flagged) == 1, flagged
    open_dashboard(page, scored, f"/#/topics/{topic}")
    expect(page.locator("#topic-title")).to_have_text(topic)
    page.locator("#range-select").select_option(label="1 h")
    ranged = figure(page, "range")
    expect(ranged).to_have_attribute("data-anomalies", "1")
    main, count = ranged.locator(".chart-main"), ranged.locator(".chart-count")
    # The charts' own fills (the spike's min-max band, the count's area) are drawn over it.
    assert anomaly_band_share(main, flagged[0] + 30) > 0.1
    assert anomaly_band_share(count, flagged[0] + 30) > 0.2
    for chart in (main, count):
        calm = [p["t"] for p in points if not p["anomalous"]]
        quiet = [t for t in calm if all(abs(t - f) > 180 for f in flagged)]
        assert len(quiet) > 40
        for t in quiet:
            assert anomaly_band_share(chart, t + 30) == 0, t
    # The ranking above the view lists this topic (the overview's test checks its rows).
    expect(page.locator("#anomalies li a").filter(has_text=topic)).to_have_count(1)
    page.screenshot(path=str(screenshot_path("dashboard-anomalies.png", tmp_path)))


def test_the_overview_lists_the_ranking(scored: PushsvcProcess, page: Page) -> None:
    topic = "boiler.south"
    events = _hours(time.time())
    for start in range(0, len(events), 2000):
        assert post(scored.port, topic, events[start : start + 2000])[0] == 202
    # A 202 means logged: the ranking compared below is the whole backfill's.
    wait_published(scored.port, topic, events[-1])

    def ranked() -> list[dict[str, Any]]:
        status, _, body = request(scored.port, "GET", "/anomalies")
        assert status == 200
        entries: list[dict[str, Any]] = json.loads(body)["anomalies"]
        return entries

    wait_until(lambda: any(e["topic"] == topic for e in ranked()), timeout=20, what="ranked")
    open_dashboard(page, scored, "/")
    rows = page.locator("#anomalies li")
    expect(page.locator("#anomalies")).to_be_visible()
    expected = [e for e in ranked() if e["anomalous"]]
    expect(rows).to_have_count(len(expected))
    for row, entry in zip(rows.all(), expected, strict=True):
        expect(row.locator("a")).to_have_text(entry["topic"])
        expect(row).to_have_attribute("data-rate", str(entry["rate"]))


def test_the_rankings_day_ends_at_the_topic_clock_not_the_browsers(
    tmp_path: Path, page: Page
) -> None:
    """A producer whose clock is two days behind the browser's (or a backfill of two days
    ago): the ranking's last day is the day before the newest topic clock the page knows, so
    its anomalous topic is listed. A day back from the browser's clock lists nothing."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules))
    proc.start()
    try:
        topic = "boiler.behind"
        events = _hours(time.time() - 2 * 86400)
        for start in range(0, len(events), 2000):
            assert post(proc.port, topic, events[start : start + 2000])[0] == 202
        wait_published(proc.port, topic, events[-1])

        def ranked() -> list[str]:
            status, _, body = request(proc.port, "GET", "/anomalies")
            assert status == 200
            return [e["topic"] for e in json.loads(body)["anomalies"] if e["anomalous"]]

        wait_until(lambda: ranked() == [topic], timeout=20, what="ranked")
        open_dashboard(page, proc, "/")
        expect(page.locator("#anomalies li a")).to_have_text([topic])
    finally:
        proc.stop()
