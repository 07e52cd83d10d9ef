"""pushsvc.js with `delta: true`, in a real headless Chromium against a real `pushsvc serve`:
it hands over, update for update and id for id, what a subscription without it does, while
its stream carries patches; and a patch whose base it lacks makes it connect again from the
last id it handed over, never invent an update. Skipped only when Debian's `chromium` is not
installed."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request
from playwright.sync_api import Page, Route, expect
from test_dashboard import WINDOWS, expected_points, history

from support.browser import (
    CHROMIUM,
    NO_CHROMIUM,
    allow_network_errors,
    drawn,
    figure,
    open_dashboard,
)

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

# Two subscriptions of the same topics in one page of pushsvc's origin, one with delta, and a
# bare EventSource counting the patches on the wire.
SUBSCRIBE_BOTH = """async ({ topics, windows }) => {
  const { subscribe } = await import("/static/pushsvc.js");
  const seen = window.seen = { plain: [], delta: [], patches: 0 };
  const options = windows ? { topics, windows } : { topics };
  subscribe({ ...options, onUpdate: (u) => seen.plain.push(u) });
  subscribe({ ...options, delta: true, onUpdate: (u) => seen.delta.push(u) });
  const query = topics.map((t) => `topic=${encodeURIComponent(t)}`).join("&");
  const bare = new EventSource(`/stream?${query}&delta=positional`);
  bare.addEventListener("stats-delta", () => { seen.patches += 1; });
  await new Promise((resolve) => setTimeout(resolve, 300));
}"""


def last_id(server: PushsvcProcess, topic: str) -> str:
    status, _, body = request(server.port, "GET", f"/topics/{topic}/history?limit=1")
    assert status == 200
    update_id: str = json.loads(body)["updates"][-1]["id"]
    return update_id


@pytest.mark.parametrize("windows", [None, ["1m"]])
def test_a_delta_subscription_hands_over_what_a_plain_one_does(
    server: PushsvcProcess, page: Page, windows: list[str] | None
) -> None:
    family = f"bd{uuid.uuid4().hex[:8]}"
    topics = [f"{family}.a", f"{family}.b"]
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page.goto(f"{server.base}/healthz")
    page.evaluate(SUBSCRIBE_BOTH, {"topics": topics, "windows": windows})
    for n in range(12):
        events = [{"value": n * 1.5 + k / 3, "tags": {"k": "xy"[k % 2]}} for k in range(1 + n % 3)]
        assert post(server.port, topics[n % 2 if n < 6 else 0], events)[0] == 202
    final = last_id(server, topics[0])
    page.wait_for_function(
        "id => seen.plain.some(u => u.id === id) && seen.delta.some(u => u.id === id)", arg=final
    )
    seen: dict[str, Any] = page.evaluate("seen")
    assert [u["id"] for u in seen["delta"]] == [u["id"] for u in seen["plain"]]
    assert seen["delta"] == seen["plain"]
    assert len(seen["plain"]) >= 24
    assert seen["patches"] > 0


def test_a_patch_without_its_base_makes_it_connect_again_from_the_last_id(
    server: PushsvcProcess, page: Page
) -> None:
    topic = f"bm{uuid.uuid4().hex[:8]}"
    whole = {"id": "aaaaaaaa:5-0", "topic": topic, "ts": 1.0, "windows": {"1m": {"mean": 2.0}}}
    streams: list[str] = []

    def answer(route: Route) -> None:
        streams.append(route.request.url)
        if len(streams) == 1:
            body = (
                "retry: 60000\n\n"
                'event: snapshot\ndata: {"gap":false,"topics":{}}\n\n'
                f"id: aaaaaaaa:5-0\nevent: stats\ndata: {json.dumps(whole)}\n\n"
                # A patch of another topic, whose last update this connection never had.
                'id: aaaaaaaa:6-0\nevent: stats-delta\ndata: ["other",0,"aaaaaaaa:6-0"]\n\n'
            )
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
        else:
            route.abort()

    page.route("**/stream?**", answer)
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    allow_network_errors(page)  # the second stream is refused: it is only looked at
    page.goto(f"{server.base}/healthz")
    # The second stream, refused: the reconnect from the last id (the first may fail too, as
    # the client closes it).
    with page.expect_event("requestfailed", predicate=lambda r: "lastEventId=" in r.url):
        page.evaluate(
            """async (topic) => {
              const { subscribe } = await import("/static/pushsvc.js");
              window.seen = [];
              subscribe({ topics: [topic, "other"], delta: true, onUpdate: (u) => seen.push(u) });
            }""",
            topic,
        )
    assert len(streams) == 2
    assert "lastEventId=aaaaaaaa%3A5-0" in streams[1]  # not the patch's id
    assert page.evaluate("seen") == [whole]  # nothing made up


def test_the_dashboard_subscribes_with_delta_and_draws_the_updates_statistics(
    server: PushsvcProcess, page: Page
) -> None:
    """Its stream carries patches after each topic's first update: the charts still draw,
    point for point, the statistics of the full updates (the server's history)."""
    topic = f"dd{uuid.uuid4().hex[:8]}"
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/stream?" in r.url else None)
    open_dashboard(page, server, f"/#/topics/{topic}")
    assert streams and all("delta=positional" in url for url in streams)
    values = [3, 9, 1, 4, 7.5, 2]
    for n, value in enumerate(values, start=1):  # one at a time: each after the first a patch
        assert post(server.port, topic, {"value": value, "tags": {"k": "xy"[n % 2]}})[0] == 202
        for window in WINDOWS:
            expect(figure(page, window)).to_have_attribute("data-points", str(n))
    updates = history(server, topic)
    for window in WINDOWS:
        assert drawn(page, window) == expected_points(updates, window)
