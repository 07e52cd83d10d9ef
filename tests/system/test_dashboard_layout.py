"""What the topic view's charts name and how they read, in a real headless Chromium against a
real `pushsvc serve --rules`: a window's chart, legend, caption and data table name only the
statistics its rule keeps (a range from the series too, though its points have every one);
the min-max band's edges stand out inside an alert's shading as outside it. Skipped only when
Debian's `chromium` is not installed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from harness.live import PushsvcProcess, post
from playwright.sync_api import Locator, Page, expect

from support.browser import CHROMIUM, NO_CHROMIUM, figure, open_dashboard

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

RULES = """
[[rule]]
topics = ["tally.*"]
windows = ["10s"]
stats = ["count", "sum", "mean", "rate"]

[[rule]]
topics = ["boiler.*"]
windows = ["1m"]
stats = ["count", "mean", "min", "max", "p50", "p90", "p99"]

[[alert]]
name = "boiler_hot"
topics = ["boiler.*"]
when = "max[1m] > 90"
"""
T0 = 1_763_700_000.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    yield proc
    proc.stop()


def _labels(chart: Locator) -> list[str]:
    """The series a uPlot chart draws, as its legend names them (the x series aside)."""
    labels: list[str] = chart.evaluate("el => el.uplot.series.slice(1).map(s => s.label)")
    return labels


def test_a_windows_chart_names_only_the_statistics_its_rule_keeps(
    server: PushsvcProcess, page: Page
) -> None:
    topic = f"tally.{uuid.uuid4().hex[:8]}"
    for i in range(5):
        assert post(server.port, topic, {"value": 2.0 + i, "ts": T0 + i})[0] == 202
    open_dashboard(page, server, f"/#/topics/{topic}")
    window = figure(page, "10s")
    expect(window).to_have_attribute("data-points", "5")
    expect(window.locator(".legend-note")).to_have_text("mean; count below")
    assert _labels(window.locator(".chart-main")) == ["mean"]
    assert _labels(window.locator(".chart-count")) == ["count"]
    expect(window.locator(".chart-main")).to_have_attribute(
        "aria-label", "10s window over time: mean; count below"
    )
    window.get_by_text("Data", exact=True).click()
    expect(window.locator("table.data thead th")).to_have_text(["time", "mean", "count"])
    expect(window.locator("table.data tbody tr").first.locator("td")).to_have_text(["4", "5"])
    # A range from the series: its points have every statistic, its chart only the rule's.
    page.locator("#range-select").select_option("3600")
    ranged = figure(page, "range")
    expect(ranged).to_be_visible()
    expect(ranged.locator(".legend-note")).to_have_text("mean; count below")
    assert _labels(ranged.locator(".chart-main")) == ["mean", "mean so far"]
    assert _labels(ranged.locator(".chart-count")) == ["count", "count so far"]
    ranged.get_by_text("Data", exact=True).click()
    expect(ranged.locator("table.data thead th")).to_have_text(["time", "mean", "count"])


def test_a_range_of_a_rule_that_keeps_every_statistic_draws_them_all(
    server: PushsvcProcess, page: Page
) -> None:
    topic = f"boiler.{uuid.uuid4().hex[:8]}"
    for i in range(5):
        assert post(server.port, topic, {"value": 20.0 + i, "ts": T0 + i})[0] == 202
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(figure(page, "1m")).to_have_attribute("data-points", "5")
    page.locator("#range-select").select_option("3600")
    ranged = figure(page, "range")
    expect(ranged).to_be_visible()
    expect(ranged.locator(".legend-note")).to_have_text(
        "mean, p50, p90, p99; min\N{EN DASH}max shaded; count below"
    )
    assert _labels(ranged.locator(".chart-main")) == [
        "min",
        "max",
        "mean",
        "p50",
        "p90",
        "p99",
        "mean so far",
    ]


# How far (summed RGB, over the card's white) the most distinct pixel within two rows of
# value `v`'s line, in the column at time `t`, is from the pixel `gap` rows below it (the
# shading or the background alone there, below the band): a line that reads has a large one.
EDGE_CONTRAST = """(chart, [t, v, gap]) => {
  const u = chart.uplot;
  const x = Math.round(u.valToPos(t, "x", true));
  const y = Math.round(u.valToPos(v, "y", true));
  const over = (px) => [0, 1, 2].map((c) => (px[3] * px[c] + (255 - px[3]) * 255) / 255);
  const at = (dy) => over(u.ctx.getImageData(x, y + dy, 1, 1).data);
  const plain = at(gap);
  let most = 0;
  for (let dy = -2; dy <= 2; dy++) {
    const px = at(dy);
    most = Math.max(most, px.reduce((sum, c, i) => sum + Math.abs(c - plain[i]), 0));
  }
  return most;
}"""


def _edge_contrast(chart: Locator, at: float, value: float, gap: int = 12) -> float:
    contrast: float = chart.evaluate(EDGE_CONTRAST, [T0 + at, value, gap])
    return contrast


def test_the_min_max_band_shows_under_an_alerts_shading(server: PushsvcProcess, page: Page) -> None:
    """Values of 20 and 60 for two minutes, then one of 95 that fires the alert for the
    minute it stays in the window: the band's min edge (20) reads against what is below it
    inside the shaded minute nearly as well as before it (it was 0.6 as well: a faint line
    of the band's own colour over the shading)."""
    topic = f"boiler.{uuid.uuid4().hex[:8]}"
    events = [{"value": 20.0 if i % 4 else 60.0, "ts": T0 + i} for i in range(0, 120, 2)]
    events.append({"value": 95.0, "ts": T0 + 121})
    events += [{"value": 20.0 if i % 4 else 60.0, "ts": T0 + i} for i in range(122, 240, 2)]
    assert post(server.port, topic, events[:61])[0] == 202
    assert post(server.port, topic, events[61:])[0] == 202
    open_dashboard(page, server, f"/#/topics/{topic}")
    expect(page.locator("#alert-periods li")).to_have_count(1)
    main = figure(page, "1m").locator(".chart-main")
    expect(figure(page, "1m")).to_have_attribute("data-points", str(len(events)))
    # Before the 95 the 1m window's min and max are 20 and 60; in the minute after it, its
    # max is 95 and its min 20 (the band): probe the min edge, well inside both.
    outside = _edge_contrast(main, 100, 20.0)
    inside = _edge_contrast(main, 150, 20.0)
    assert outside > 100, outside
    assert inside > 0.8 * outside, (inside, outside)
