"""pushsvc's browser module (/static/pushsvc.js) and its example page, in a real headless
Chromium against a real `pushsvc serve`.

The example page (/static/examples/live.html) shows a topic's latest value, a window's mean,
the updates it received and its connection state, catching up on open and across a restart
of the server with every update exactly once. The module's promises are driven through its
own API in a page of pushsvc's origin: history pages merged with the live updates that arrive
while they load, each update once and in id order; a pattern subscription; a gap signalled
when the server cannot resume (a restart without --data-dir) and the updates it still keeps
handed over after it; points; auth by cookie. Every test fails on an uncaught error or a
console error in the page, except the network errors a test causes. Skipped only when
Debian's `chromium` is not installed.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request
from harness.net import free_port
from playwright.sync_api import Browser, Page, Route, expect

from support.auth_tokens import SECRET, hs256
from support.browser import (
    CHROMIUM,
    NO_CHROMIUM,
    allow_network_errors,
    check_page,
    new_page,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

# A page of pushsvc's origin that subscribes through the module with the options given and
# records everything it hands over in `window.seen`.
SUBSCRIBE = """async (options) => {
  const { subscribe } = await import("/static/pushsvc.js");
  const seen = window.seen = { updates: [], points: [], snapshots: [], gaps: [], states: [] };
  window.subscription = subscribe({
    ...options,
    onUpdate: (update) => seen.updates.push(update),
    onPoint: (point) => seen.points.push(point),
    onSnapshot: (snapshot) => seen.snapshots.push(snapshot),
    onGap: (gap) => seen.gaps.push(gap),
    onStatus: (state) => seen.states.push(state),
  });
}"""


def unique(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def history_ids(server: PushsvcProcess, topic: str) -> list[str]:
    status, _, body = request(server.port, "GET", f"/topics/{topic}/history?limit=10000")
    assert status == 200
    return [u["id"] for u in json.loads(body)["updates"]]


def id_order(update_id: str) -> tuple[int, int]:
    position = update_id.split(":")[1]
    ms, seq = position.split("-")
    return int(ms), int(seq)


def open_origin(page: Page, server: PushsvcProcess) -> None:
    """A page of pushsvc's origin (its /healthz) to run the module in; no favicon asked for."""
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page.goto(f"{server.base}/healthz")


def subscribe_in(page: Page, server: PushsvcProcess, **options: Any) -> None:
    open_origin(page, server)
    page.evaluate(SUBSCRIBE, options)


def seen_ids(page: Page, topic: str | None = None) -> list[str]:
    ids: list[str] = page.evaluate(
        "topic => seen.updates.filter(u => topic === null || u.topic === topic).map(u => u.id)",
        topic,
    )
    return ids


def wait_for_updates(page: Page, count: int) -> None:
    page.wait_for_function("count => seen.updates.length >= count", arg=count)


def settled_ids(page: Page, server: PushsvcProcess, topic: str) -> list[str]:
    """The ids handed over for `topic` once one more update, posted now, has arrived: all
    that came before it (duplicates too) have arrived by then."""
    assert post(server.port, topic, {"value": 0})[0] == 202
    last = history_ids(server, topic)[-1]
    page.wait_for_function("id => seen.updates.some(u => u.id === id)", arg=last)
    return seen_ids(page, topic)


def assert_each_once_in_order(ids: list[str]) -> None:
    assert len(set(ids)) == len(ids), f"duplicates in {ids}"
    assert ids == sorted(ids, key=id_order), f"out of order: {ids}"


# ------------------------------------------------------------------ served by pushsvc


def test_the_module_and_the_example_are_served_as_what_they_are(server: PushsvcProcess) -> None:
    for path, media_type in [
        ("/static/pushsvc.js", "text/javascript"),
        ("/static/examples/live.js", "text/javascript"),
        ("/static/examples/live.html", "text/html"),
        ("/static/examples/live.css", "text/css"),
    ]:
        status, headers, _ = request(server.port, "GET", path)
        assert status == 200, path
        assert headers["content-type"].split(";")[0] == media_type, path
    # The dashboard imports the same file from its own assets, under its policy.
    module = request(server.port, "GET", "/static/pushsvc.js")[2]
    status, headers, body = request(server.port, "GET", "/dashboard/pushsvc.js")
    assert (status, body) == (200, module)
    assert "script-src 'self'" in headers["content-security-policy"]


def test_the_id_and_group_helpers(server: PushsvcProcess, page: Page) -> None:
    open_origin(page, server)
    found = page.evaluate(
        """async () => {
          const { parseId, isAfter, groupId } = await import("/static/pushsvc.js");
          const id = (text) => parseId(text);
          return {
            later: isAfter(id("a1:10-0"), id("a1:9-7")),
            earlier: isAfter(id("a1:9-7"), id("a1:10-0")),
            same: isAfter(id("a1:9-7"), id("a1:9-7")),
            otherEpoch: isAfter(id("b2:0-0"), id("a1:9-7")),
            notAnId: parseId("9-7"),
            group: groupId({ station: "grill", dish: null }),
          };
        }"""
    )
    assert found == {
        "later": True,
        "earlier": False,
        "same": False,
        # A history reset: whatever comes after it is newer.
        "otherEpoch": True,
        "notAnId": None,
        "group": '[["dish",null],["station","grill"]]',
    }


def test_the_distinct_and_top_helpers(server: PushsvcProcess, page: Page) -> None:
    open_origin(page, server)
    found = page.evaluate(
        """async () => {
          const { distinctOf, topOf } = await import("/static/pushsvc.js");
          const windows = {
            "1h": { count: 3, distinct_user: 2, top_dish: [{ value: "ramen", count: 2 }] },
          };
          return {
            distinct: distinctOf(windows, "1h", "user"),
            notCounted: distinctOf(windows, "1h", "dish"),
            noWindow: distinctOf(windows, "1m", "user"),
            top: topOf(windows, "1h", "dish"),
            noTop: topOf(windows, "1h", "user"),
          };
        }"""
    )
    assert found == {
        "distinct": 2,
        "notCounted": None,
        "noWindow": None,
        "top": [{"value": "ramen", "count": 2}],
        "noTop": [],
    }


def test_the_anomaly_rate_helper(server: PushsvcProcess, page: Page) -> None:
    open_origin(page, server)
    found = page.evaluate(
        """async () => {
          const { anomalyRateOf } = await import("/static/pushsvc.js");
          const windows = { "1h": { count: 3, anomaly_rate: 0.25 }, "1m": { anomaly_rate: null } };
          return [anomalyRateOf(windows, "1h"), anomalyRateOf(windows, "1m"),
                  anomalyRateOf(windows, "5m")];
        }"""
    )
    assert found == [0.25, None, None]


def test_the_sessions_helper(server: PushsvcProcess, page: Page) -> None:
    open_origin(page, server)
    step = {"step": "view", "sessions": 4, "conversion": 1, "step_conversion": None, "median_s": 0}
    found = page.evaluate(
        """async (step) => {
          const { sessionsOf } = await import("/static/pushsvc.js");
          const windows = {
            "1m": {
              count: 5, bounce_rate: 0.4, events_per_session: 2.2, active: 7, funnel: [step],
            },
            "10s": { count: 0, bounce_rate: null, events_per_session: null, active: 7 },
            "5m": { count: 3, mean: 1 },
          };
          return {
            funnel: sessionsOf(windows, "1m"),
            empty: sessionsOf(windows, "10s"),
            notSessions: sessionsOf(windows, "5m"),
            noWindow: sessionsOf(windows, "1h"),
          };
        }""",
        step,
    )
    assert found == {
        "funnel": {"bounce_rate": 0.4, "events_per_session": 2.2, "active": 7, "funnel": [step]},
        "empty": {"bounce_rate": None, "events_per_session": None, "active": 7, "funnel": []},
        "notSessions": None,
        "noWindow": None,
    }


# ------------------------------------------------------------------ the example page


def open_example(page: Page, server: PushsvcProcess, topic: str) -> None:
    page.goto(f"{server.base}/static/examples/live.html?topic={topic}")
    expect(page.get_by_role("status")).to_have_attribute("data-state", "live")


def received(page: Page) -> list[str]:
    """The ids the example page lists, oldest first."""
    ids: list[str] = page.locator("#received li").evaluate_all(
        "items => items.map(item => item.dataset.id)"
    )
    return list(reversed(ids))


def test_the_example_page_catches_up_then_shows_live_values(
    server: PushsvcProcess, page: Page, tmp_path: Path
) -> None:
    topic = unique()
    assert post(server.port, topic, [{"value": 10}, {"value": 20}])[0] == 202
    open_example(page, server, topic)
    expect(page.locator("#count")).to_have_text("2")  # from the history
    assert post(server.port, topic, {"value": 60})[0] == 202
    expect(page.locator("#count")).to_have_text("3")
    expect(page.locator("#value")).to_have_text("60")
    expect(page.locator("#mean")).to_have_text("30")  # of 10, 20 and 60, over 1m
    assert received(page) == history_ids(server, topic)
    expect(page.get_by_role("note")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "example.png"))


@pytest.mark.redis
def test_the_example_page_has_every_update_once_across_a_server_restart(
    page: Page, tmp_path: Path
) -> None:
    allow_network_errors(page)  # while the server is down
    port = free_port()
    args = ("--port", str(port), "--tick", "0", "--retry", "200ms", "--data-dir", str(tmp_path))
    topic = unique()
    first = PushsvcProcess("serve", *args).start()
    try:
        assert post(port, topic, [{"value": 1}, {"value": 2}])[0] == 202
        open_example(page, first, topic)
        assert post(port, topic, {"value": 3})[0] == 202
        expect(page.locator("#count")).to_have_text("3")
    finally:
        first.stop()
    expect(page.get_by_role("status")).to_have_attribute("data-state", "reconnecting")
    with pytest.raises(ConnectionRefusedError):  # down: nothing can be posted meanwhile
        post(port, topic, {"value": 99})

    second = PushsvcProcess("serve", *args).start()
    try:
        expect(page.get_by_role("status")).to_have_attribute("data-state", "live")
        for value in (4, 5, 6):
            assert post(port, topic, {"value": value})[0] == 202
        expect(page.locator("#count")).to_have_text("6")
        expect(page.locator("#value")).to_have_text("6")
        ids = received(page)
        assert ids == history_ids(second, topic)
        assert_each_once_in_order(ids)
        expect(page.get_by_role("note")).to_be_hidden()  # resumed: no gap
    finally:
        second.stop()


# ------------------------------------------------------------------ the module's promises


def test_history_pages_meet_the_updates_posted_while_they_load(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    assert post(server.port, topic, [{"value": v} for v in range(5)])[0] == 202
    held: list[Route] = []

    def hold_the_first_page(route: Route) -> None:  # answered only when the test says
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/history?*", hold_the_first_page)
    # Two updates a page: the history is read in several, the last reaching the live ones.
    subscribe_in(page, server, topics=[topic], history={"since": "0", "limit": 2})
    page.wait_for_function("() => seen.states.includes('live') && seen.snapshots.length === 1")
    assert post(server.port, topic, [{"value": v} for v in range(5, 8)])[0] == 202
    newest = history_ids(server, topic)[-1]
    # The live updates reached the page, which holds them until the history meets them.
    page.wait_for_function("id => subscription.lastEventId === id", arg=newest)
    assert held, "the page asked for no history"
    assert seen_ids(page) == []
    held[0].continue_()

    wait_for_updates(page, 8)
    ids = settled_ids(page, server, topic)
    assert ids == history_ids(server, topic)
    assert len(ids) == 9
    assert_each_once_in_order(ids)


def test_a_pattern_subscribes_to_every_matching_topic_with_its_history(
    server: PushsvcProcess, page: Page
) -> None:
    family, other = unique("p"), unique("q")
    a, b, c = f"{family}.a", f"{family}.b", f"{family}.c"
    assert post(server.port, a, [{"value": 1}, {"value": 2}])[0] == 202
    assert post(server.port, b, {"value": 3})[0] == 202
    assert post(server.port, other, {"value": 4})[0] == 202
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    subscribe_in(page, server, topics=[f"{family}.*"], history={"limit": 100})
    wait_for_updates(page, 3)
    assert post(server.port, a, {"value": 5})[0] == 202
    assert post(server.port, c, {"value": 6})[0] == 202  # a topic new since the subscription
    assert post(server.port, other, {"value": 7})[0] == 202
    wait_for_updates(page, 5)

    for topic in (a, b, c):
        ids = settled_ids(page, server, topic)
        assert ids == history_ids(server, topic), topic
        assert_each_once_in_order(ids)
    assert seen_ids(page, other) == []
    assert len([url for url in requested if "/stream?" in url]) == 1  # one EventSource


def test_a_restart_that_loses_the_history_is_a_gap_after_which_the_kept_updates_come(
    page: Page,
) -> None:
    allow_network_errors(page)  # while the server is down, and its stream is blocked
    port = free_port()
    args = ("--port", str(port), "--tick", "0", "--retry", "200ms")
    topic = unique()
    first = PushsvcProcess("serve", *args).start()
    try:
        assert post(port, topic, [{"value": 1}, {"value": 2}])[0] == 202
        subscribe_in(page, first, topics=[topic], history={"limit": 100})
        wait_for_updates(page, 2)
        before = seen_ids(page)
    finally:
        first.stop()
    page.wait_for_function("() => seen.states.at(-1) === 'reconnecting'")
    # Kept from the page until the new process has updates the page cannot resume to.
    page.route("**/stream?*", lambda route: route.abort())
    second = PushsvcProcess("serve", *args).start()
    try:
        assert post(port, topic, [{"value": 3}, {"value": 4}])[0] == 202
        page.unroute("**/stream?*")
        wait_for_updates(page, 4)
        gaps = page.evaluate("seen.gaps")
        assert len(gaps) == 1
        assert gaps[0]["snapshot"]["gap"] is True and gaps[0]["topic"] is None
        ids = settled_ids(page, second, topic)
        # What the new process keeps comes after the gap, each once.
        assert ids == before + history_ids(second, topic)
        assert len(set(ids)) == len(ids) == 5
    finally:
        second.stop()


def test_a_history_that_cannot_continue_from_since_is_a_gap(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    assert post(server.port, topic, [{"value": 1}, {"value": 2}])[0] == 202
    # An id of another epoch: a history since lost.
    subscribe_in(page, server, topics=[topic], history={"since": "abc123:1-0"})
    wait_for_updates(page, 2)
    assert page.evaluate("seen.gaps") == [{"snapshot": None, "topic": topic}]
    assert seen_ids(page) == history_ids(server, topic)


def test_points_of_the_tiers_asked_for_follow_the_update_that_closed_them(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    subscribe_in(page, server, topics=[topic], series=["1s"], history={"limit": 10})
    page.wait_for_function("() => seen.snapshots.length === 1")
    now = int(time.time())
    # The third event moves the topic clock past the first two seconds and the lateness.
    events = [{"value": 1, "ts": now - 20}, {"value": 2, "ts": now - 19}, {"value": 3, "ts": now}]
    assert post(server.port, topic, events)[0] == 202
    page.wait_for_function("() => seen.points.length >= 2")
    points = page.evaluate("seen.points")
    assert [(p["topic"], p["resolution"], p["point"]["t"]) for p in points] == [
        (topic, "1s", now - 20),
        (topic, "1s", now - 19),
    ]
    closing = seen_ids(page)[-1]
    assert all(id_order(p["id"]) > id_order(closing) for p in points)


# ------------------------------------------------------------------ with authentication on


@pytest.fixture(scope="module")
def secured() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--retry", "200ms", env={"PUSHSVC_JWT_KEY": SECRET}
    ).start()
    yield proc
    proc.stop()


def test_with_auth_it_is_unauthorized_until_the_cookie_is_set_then_catches_up(
    secured: PushsvcProcess, browser: Browser
) -> None:
    topic = f"mod.{unique()}"
    admin = {"Authorization": f"Bearer {hs256(publish=['*'])}"}
    assert post(secured.port, topic, [{"value": 1}, {"value": 2}], headers=admin)[0] == 202
    context = browser.new_context()
    page = new_page(context)
    allow_network_errors(page)  # the 401s before the cookie is set
    try:
        subscribe_in(page, secured, topics=[topic], history={"limit": 100})
        page.wait_for_function("() => seen.states.includes('unauthorized')")
        # What an application does once its user signed in: a token in an HttpOnly cookie.
        cookie = hs256(subscribe=["mod.*"])
        context.add_cookies(
            [{"name": "pushsvc_token", "value": cookie, "url": secured.base, "httpOnly": True}]
        )
        page.wait_for_function("() => seen.states.at(-1) === 'live'")
        wait_for_updates(page, 2)  # its history, read with the cookie too
        assert post(secured.port, topic, {"value": 3}, headers=admin)[0] == 202
        wait_for_updates(page, 3)
        status, _, body = request(
            secured.port,
            "GET",
            f"/topics/{topic}/history",
            headers={"Authorization": f"Bearer {cookie}"},
        )
        assert status == 200
        assert seen_ids(page) == [u["id"] for u in json.loads(body)["updates"]]
    finally:
        context.close()
    check_page(page)


# ------------------------------------------------------------------ ids are cursors


class _CursorOrigin(http.server.BaseHTTPRequestHandler):
    """A page's origin whose stream writes one update with a cursor of several partitions as
    its id, then ends (the browser reconnects); each stream request's Last-Event-ID is kept.
    This embedded server has one partition, so it never writes such an id itself."""

    cursor = ""
    asked: list[str | None] = []  # noqa: RUF012 (one test uses the class at a time)

    def do_GET(self) -> None:
        if self.path == "/":
            self._answer("text/html", b"<!doctype html><title>cursor</title>")
            return
        if self.path != "/stream":
            self.send_response(404)  # the favicon
            self.end_headers()
            return
        type(self).asked.append(self.headers.get("Last-Event-ID"))
        if len(type(self).asked) > 1:
            self.send_response(204)  # EventSource stops for good on a 204
            self.end_headers()
            return
        data = json.dumps({"id": self.cursor.split(",")[1], "topic": "t", "windows": {}})
        body = f"retry: 50\n\nid: {self.cursor}\nevent: stats\ndata: {data}\n\n"
        self._answer("text/event-stream", body.encode())

    def _answer(self, content_type: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_event_source_resumes_with_a_cursor_of_several_partitions(
    server: PushsvcProcess, page: Page
) -> None:
    # A stream over several partitions writes its cursor as its id: ids joined by commas. The
    # browser keeps it whole and sends it back as Last-Event-ID when it reconnects. (Seen on
    # an origin of the test's own: Chromium's Last-Event-ID is not visible to Playwright's
    # routes.) Sent to pushsvc, that cursor names partition 1, which this server does not
    # have: a gap snapshot, never an error.
    cursor = "ab12cd34:1700000000000-0,1ab12cd34:1700000000001-3,3ff0badc0de:5-0"
    _CursorOrigin.cursor, _CursorOrigin.asked = cursor, []
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _CursorOrigin)
    serving = threading.Thread(target=origin.serve_forever, daemon=True)
    serving.start()
    try:
        allow_network_errors(page)  # the stream ends: the browser reconnects
        page.goto(f"http://127.0.0.1:{origin.server_address[1]}/")
        page.evaluate(
            """() => {
              window.got = [];
              const source = new EventSource("/stream");
              source.addEventListener("stats", (e) => got.push(e.lastEventId));
            }"""
        )
        page.wait_for_function("got.length >= 1")
        deadline = time.monotonic() + 10
        while len(_CursorOrigin.asked) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        origin.shutdown()
        origin.server_close()
    assert page.evaluate("got") == [cursor]
    assert _CursorOrigin.asked == [None, cursor]  # whole, commas and all
    topic = unique()
    assert post(server.port, topic, {"value": 1})[0] == 202
    resumed = SSEClient(server.port, f"/topics/{topic}/stream", {"Last-Event-ID": cursor})
    snapshot_id, snapshot = resumed.next_data("snapshot")
    assert snapshot["gap"] is True and snapshot_id == history_ids(server, topic)[-1]
    resumed.close()


# ------------------------------------------------------------------ another origin's page


class _AppOrigin(http.server.BaseHTTPRequestHandler):
    """An application's own origin (another port): its page imports the module from pushsvc
    exactly as docs/browser.md shows, and records what it hands over in `window.seen`."""

    page = b""

    def do_GET(self) -> None:
        pages = {"/": self.page, "/blank": b"<!doctype html><title>blank</title>"}
        if self.path not in pages:
            self.send_response(204)  # the favicon
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(pages[self.path])))
        self.end_headers()
        self.wfile.write(pages[self.path])

    def log_message(self, format: str, *args: object) -> None:
        pass


APP_PAGE = """<!doctype html><title>an application</title>
<script type="module">
import { subscribe } from "%(pushsvc)s/static/pushsvc.js";

window.seen = { values: [], states: [] };
subscribe({
  topics: ["%(topic)s"],
  history: { limit: 100 },
  onUpdate: (update) => window.seen.values.push(update.event?.value),
  onStatus: (state) => window.seen.states.push(state),
});
</script>"""


def test_a_page_of_another_origin_imports_the_module_and_receives_updates(
    browser: Browser, page: Page
) -> None:
    """The module is public code: any origin may import it. Its streams and history, asked
    for with credentials, answer only the origins of PUSHSVC_CORS_ORIGINS."""
    origins = [
        http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _AppOrigin) for _ in "ab"
    ]
    listed, unlisted = (f"http://127.0.0.1:{o.server_address[1]}" for o in origins)
    pushsvc = PushsvcProcess("serve", "--tick", "0", "--cors-origins", listed).start()
    topic = f"mod.{unique()}"
    _AppOrigin.page = (APP_PAGE % {"pushsvc": pushsvc.base, "topic": topic}).encode()
    for origin in origins:
        threading.Thread(target=origin.serve_forever, daemon=True).start()
    try:
        assert post(pushsvc.port, topic, {"value": 1})[0] == 202
        page.goto(listed + "/")
        page.wait_for_function("() => window.seen?.states.includes('live')")
        page.wait_for_function("() => window.seen.values.length === 1")  # its history
        assert post(pushsvc.port, topic, {"value": 2})[0] == 202
        page.wait_for_function("() => window.seen.values.length === 2")
        assert page.evaluate("() => window.seen.values") == [1, 2]
        # An origin the server does not list still imports the module.
        other = new_page(browser.new_context())
        try:
            other.goto(unlisted + "/blank")
            exported = other.evaluate(
                "async (url) => typeof (await import(url)).subscribe",
                f"{pushsvc.base}/static/pushsvc.js",
            )
            assert exported == "function"
        finally:
            other.context.close()
        check_page(other)
    finally:
        for origin in origins:
            origin.shutdown()
            origin.server_close()
        pushsvc.stop()
