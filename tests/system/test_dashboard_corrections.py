"""A series correction on the dashboard, in a real headless Chromium against a real `pushsvc
serve`: with a rule's grace of an hour over the server's 5 s, a late event into a minute bucket
the range chart draws already makes the chart replace that bucket's point (its row shows the
corrected count and mean, once) rather than add one. Skipped only when Debian's `chromium` is
not installed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_published
from playwright.sync_api import Page, expect

from support.browser import CHROMIUM, NO_CHROMIUM, drawn, figure, open_dashboard, shown

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["late.*"]
windows = ["10s", "1m"]
stats = ["count", "mean"]
grace = "1h"
"""


@pytest.fixture(scope="module")
def graced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    yield proc
    proc.stop()


def _t(seconds: float) -> str:
    """A bucket start as the page writes it in a row id (JavaScript's number to string)."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(seconds)


def _minutes(port: int, topic: str) -> list[dict[str, Any]]:
    status, _, body = request(port, "GET", f"/topics/{topic}/series?resolution=1m&since=0")
    assert status == 200, body
    points: list[dict[str, Any]] = json.loads(body)["points"]
    return points


def test_a_late_event_replaces_the_drawn_point_of_its_bucket(
    graced: PushsvcProcess, page: Page
) -> None:
    port = graced.port
    topic = f"late.{uuid.uuid4().hex[:8]}"
    now = time.time()
    events = [{"value": 10.0, "ts": round(now - 1800 + i * 30, 3)} for i in range(56)]
    assert post(port, topic, events)[0] == 202
    wait_published(port, topic, events[-1])
    open_dashboard(page, graced, f"/#/topics/{topic}")
    expect(page.locator("#topic-title")).to_have_text(topic)
    page.locator("#range-select").select_option(label="24 h")
    fig = figure(page, "range")
    expect(fig).to_be_visible()
    target = _minutes(port, topic)[5]
    drawn(page, "range")  # the data table open: it is refilled as points come
    row = fig.locator(f'tr[data-id="1m@{_t(target["t"])}"]')
    expect(row).to_have_count(1)
    # Late (20 minutes behind the clock, within the hour's grace) into that published minute,
    # then an event on time that moves the clock past the next second: the correction.
    late = {"value": 70.0, "ts": target["t"] + 1}
    closer = {"value": 10.0, "ts": events[-1]["ts"] + 2}
    assert post(port, topic, [late, closer]) == (202, {"accepted": 2})
    wait_published(port, topic, closer)
    corrected = next(p for p in _minutes(port, topic) if p["t"] == target["t"])
    assert corrected["count"] == target["count"] + 1
    expect(row.locator('td[data-stat="count"]')).to_have_text(shown(corrected["count"]))
    expect(row.locator('td[data-stat="mean"]')).to_have_text(shown(corrected["mean"]))
    ids = [r["id"] for r in drawn(page, "range")]
    assert len(ids) == len(set(ids)), "a bucket drawn twice"
