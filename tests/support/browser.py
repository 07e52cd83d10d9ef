"""The dashboard in a real headless Chromium (Debian's `chromium-headless-shell`, else its
`chromium`, driven by Playwright): what the browser tests share — the browser, pages that
fail their test on an uncaught error or a console error, and the ways to read what the page
shows."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.live import PushsvcProcess
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

# The headless shell is Chromium's own renderer without the desktop browser around it, as
# Playwright's own headless Chromium is: the same Blink, V8 and Skia, at a fifth of the CPU a
# page costs in `chromium --headless` (10 dashboard pages open a second each: 2.3 s against
# 11.8 s), where the browser tests spent a seventh of the suite's CPU.
CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")
NO_CHROMIUM = (
    "needs Debian's chromium-headless-shell or chromium (apt-get install -y "
    "chromium-headless-shell) for the browser tests"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
DOCS = Path(__file__).resolve().parents[2] / "docs"


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """Where a test that checks what a docs picture shows writes it: docs/NAME only when
    asked (TEST_PUSHSVC_WRITE_SCREENSHOTS=1, see docs/dashboard.md, "The screenshots"),
    otherwise the run's own copy in tmp_path."""
    if os.environ.get("TEST_PUSHSVC_WRITE_SCREENSHOTS") == "1":
        return DOCS / name
    return tmp_path / name


# What Chromium logs for a refused or dropped connection: expected where a test causes one.
NETWORK_ERROR = re.compile(r"Failed to load resource|net::ERR_|EventSource")


class SharedChromium:
    """One Chromium for a whole test session, lent to one module at a time.

    A launch (Playwright's driver, then Chromium) cost 0.8 s of CPU, and the browser tests
    are some fifty modules. Each module gets its pages in contexts of its own, as before, so
    nothing but the process is shared; one that finds the browser gone (it crashed) gets a
    new one.

    Between two modules, the rest of the suite must not see Playwright's event loop: the sync
    API runs it in a greenlet and marks it as the thread's running loop after every call,
    where `asyncio.run` in a later test would refuse to start. So a loan marks it running,
    and its end unmarks it, as the sync API's own exit does.
    """

    def __init__(self) -> None:
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def lent(self) -> Iterator[Browser]:
        if self._loop is not None:
            asyncio.events._set_running_loop(self._loop)
        try:
            yield self._connected()
        finally:
            asyncio.events._set_running_loop(None)

    def _connected(self) -> Browser:
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        if self._playwright is None:
            self._playwright = sync_playwright().start()
            self._loop = asyncio.events._get_running_loop()
        self._browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        return self._browser

    def close(self) -> None:
        if self._playwright is None:
            return
        asyncio.events._set_running_loop(self._loop)
        try:
            if self._browser is not None and self._browser.is_connected():
                self._browser.close()
            self._playwright.stop()
        finally:
            asyncio.events._set_running_loop(None)
        self._playwright = self._browser = self._loop = None


class PageErrors:
    """Uncaught exceptions and console errors of a page; `allow_network` for tests that
    refuse or drop connections on purpose (Chromium logs those as console errors)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.allow_network = False
        page.on("pageerror", self._uncaught)
        page.on("console", self._console)

    def _uncaught(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def check(self) -> None:
        errors = [e for e in self.errors if not (self.allow_network and NETWORK_ERROR.search(e))]
        assert errors == [], f"errors in the page: {errors}"


ERRORS: dict[int, PageErrors] = {}


def new_page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    ERRORS[id(page)] = PageErrors(page)
    return page


def check_page(page: Page) -> None:
    """Fail on what went wrong in the page (call once, when done with it)."""
    ERRORS.pop(id(page)).check()


@contextmanager
def page_of(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own, checked for errors when the test is done with it."""
    # A fixed locale and time zone: the page formats numbers and times for its reader.
    context = browser.new_context(locale="en-US", timezone_id="UTC")
    expect.set_options(timeout=TIMEOUT_MS)
    page = new_page(context)
    try:
        yield page
    finally:
        context.close()
    check_page(page)


def allow_network_errors(page: Page) -> None:
    ERRORS[id(page)].allow_network = True


def open_dashboard(page: Page, server: PushsvcProcess, path: str = "/") -> None:
    page.goto(server.base + path)
    expect(status(page)).to_have_attribute("data-state", "live")


def status(page: Page) -> Locator:
    return page.get_by_role("status")


def current(page: Page, window: str, name: str) -> Locator:
    """A cell of the topic view's current numbers."""
    return page.locator(f'#current td[data-window="{window}"][data-stat="{name}"]')


def figure(page: Page, window: str) -> Locator:
    return page.locator(f'figure[data-window="{window}"]')


def drawn(page: Page, window: str) -> list[dict[str, str]]:
    """The points the window's chart draws, oldest first, from its data table (built from
    the very columns handed to the chart): id and each statistic as shown. A range's buckets
    not closed yet are rows too (`data-so-far` of them, ids `so-far@…`)."""
    fig = figure(page, window)
    details = fig.locator("details")
    if details.get_attribute("open") is None:
        fig.get_by_text("Data", exact=True).click()
    # A row marking a gap (updates missed) is no point: it has no id. The table is filled on the
    # details' toggle event, which fires after the click returns, and refilled with the
    # figure's counts on every update, so both are read in one turn of the page: counts read
    # first and rows awaited after could straddle an update and wait for a table never drawn.
    rows = page.wait_for_function(
        """f => {
            const rows = [...f.querySelectorAll('table.data tbody tr[data-id]')];
            const count = Number(f.dataset.points || 0) + Number(f.dataset.soFar || 0);
            return rows.length === count && rows.map(r => Object.assign({id: r.dataset.id},
                Object.fromEntries([...r.querySelectorAll('td')].map(
                    c => [c.dataset.stat, c.textContent]))));
        }""",
        arg=fig.element_handle(),
        timeout=10_000,
    )
    points: list[dict[str, str]] = rows.json_value()
    return list(reversed(points))


def shown(x: float | None) -> str:
    """A statistic as the page shows it (four significant digits, a dash for null)."""
    if x is None:
        return "—"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


# The share of a chart canvas's pixel columns where a line of one colour is drawn: a line
# through every point covers most of the plot's width; an empty or undrawn chart covers none.
# The colour is resolved through a one-pixel canvas, so any CSS colour works. getImageData gives
# un-premultiplied colours: an antialiased edge keeps the line's RGB at a lower alpha.
LINE_COVERAGE = """(canvas, variable) => {
  const css = getComputedStyle(document.documentElement).getPropertyValue(variable).trim();
  const probe = document.createElement("canvas").getContext("2d");
  probe.fillStyle = css;
  probe.fillRect(0, 0, 1, 1);
  const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
  const { width, height } = canvas;
  const px = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let columns = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const i = 4 * (y * width + x);
      const near = Math.abs(px[i] - r) + Math.abs(px[i + 1] - g) + Math.abs(px[i + 2] - b);
      if (px[i + 3] > 64 && near < 48) { columns++; break; }
    }
  }
  return columns / width;
}"""
DRAWN = 0.5  # a line across at least half the canvas (the rest: axes, margins)


def line_coverage(canvas: Locator, color_variable: str) -> float:
    coverage: float = canvas.evaluate(LINE_COVERAGE, color_variable)
    return coverage


# The share of the plot's pixels painted in a band's colour (the alert band's, or the anomaly
# band's; over nothing: the canvas is transparent there), in the canvas column at topic-clock
# time `t`, or in the column beside it that has the most (a vertical grid line may run through
# one). The lines and the other grid lines cross a column: a band shows as most of it, and no
# band as none.
BAND_SHARE = """(chart, [t, variable, uncovered]) => {
  const css = getComputedStyle(document.documentElement).getPropertyValue(variable).trim();
  const probe = document.createElement("canvas").getContext("2d");
  probe.fillStyle = css;
  probe.fillRect(0, 0, 1, 1);
  const band = probe.getImageData(0, 0, 1, 1).data;
  const u = chart.uplot;
  const x = Math.round(u.valToPos(t, "x", true));
  const top = Math.round(u.bbox.top);
  const height = Math.round(u.bbox.height);
  let most = 0;
  for (let dx = -2; dx <= 2; dx++) {
    const px = u.ctx.getImageData(x + dx, top, 1, height).data;
    let painted = 0;
    let blank = 0;
    for (let i = 0; i < px.length; i += 4) {
      const near = [0, 1, 2, 3].reduce((sum, c) => sum + Math.abs(px[i + c] - band[c]), 0);
      if (near < 24) painted++;
      else if (px[i + 3] === 0) blank++;
    }
    const of = uncovered ? painted + blank : height;
    most = Math.max(most, of ? painted / of : 0);
  }
  return most;
}"""


def alert_band_share(chart: Locator, t: float, *, of_uncovered: bool = False) -> float:
    """How much of a chart's plot, at topic-clock time `t`, is shaded as an alert period;
    `of_uncovered`: of what the series and the grid leave uncovered there (a min-max band
    as tall as the plot covers the shade, and says nothing of it)."""
    share: float = chart.evaluate(BAND_SHARE, [t, "--alert-band", of_uncovered])
    return share


def anomaly_band_share(chart: Locator, t: float) -> float:
    """How much of a chart's plot, at time `t`, is shaded as an anomalous bucket."""
    share: float = chart.evaluate(BAND_SHARE, [t, "--anomaly-band", False])
    return share
