"""Forecasts on the dashboard, in a real headless Chromium against a real `pushsvc serve`: the
topic view's range chart reaches as far ahead as `GET /topics/{t}/forecast` does, and draws
the forecast there (its 80 % and 95 % bands and its dashed mean) and nowhere in the past.
Takes docs/dashboard-forecast.png (rewritten only with TEST_PUSHSVC_WRITE_SCREENSHOTS=1).
Skipped only when Debian's `chromium` is not installed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_published
from playwright.sync_api import Locator, Page, expect

from support.browser import (
    BAND_SHARE,
    CHROMIUM,
    NO_CHROMIUM,
    figure,
    open_dashboard,
    screenshot_path,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["tank.*"]
windows = ["10s", "1m"]
stats = ["count", "mean"]
series = ["1m:24h"]
forecast = { tier = "1m", model = "linear", range = "30m", horizon = "30m" }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    yield proc
    proc.stop()


def _filling(now: float) -> list[dict[str, Any]]:
    """An event every 20 s over the last two hours, ending two minutes ago: a tank filling at
    1 a minute, give or take 20."""
    start = now - 2 * 3600
    return [
        {"value": 100 + i / 3 + 40 * ((i * 37) % 11) / 11, "ts": round(start + i * 20, 3)}
        for i in range(int((2 * 3600 - 120) / 20))
    ]


def _share(chart: Locator, t: float, variable: str) -> float:
    share: float = chart.evaluate(BAND_SHARE, [t, variable, False])
    return share


def test_the_range_chart_draws_the_forecast_ahead_of_the_line(
    server: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    topic = "tank.north"
    events = _filling(time.time())
    assert post(server.port, topic, events)[0] == 202
    wait_published(server.port, topic, events[-1])
    status, _, body = request(server.port, "GET", f"/topics/{topic}/forecast")
    assert status == 200, body
    forecast = json.loads(body)
    assert len(forecast["points"]) == 30
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(page.locator("#topic-title")).to_have_text(topic)
    page.locator("#range-select").select_option(label="1 h")
    ranged = figure(page, "range")
    expect(ranged).to_have_attribute("data-forecast", "30")
    main = ranged.locator(".chart-main")
    last = forecast["points"][-1]["t"] / 1000
    # The x axis reaches the forecast's last bucket.
    x_max = main.evaluate("(el) => el.uplot.scales.x.max")
    assert x_max == pytest.approx(last)
    ahead = [p["t"] / 1000 for p in forecast["points"][5:25:4]]
    assert all(_share(main, t, "--forecast-band") > 0 for t in ahead)
    assert any(_share(main, t, "--forecast-band-80") > 0 for t in ahead)
    assert any(_share(main, t, "--forecast-line") > 0 for t in ahead)
    clock = events[-1]["ts"]
    for t in (clock - 3000, clock - 1800, clock - 600):
        assert _share(main, t, "--forecast-band") == 0, t
        assert _share(main, t, "--forecast-band-80") == 0, t
    page.screenshot(path=str(screenshot_path("dashboard-forecast.png", tmp_path)))
