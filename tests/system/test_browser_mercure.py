"""Mercure in a real headless Chromium: a plain `EventSource` on `/.well-known/mercure`, as a
Mercure application opens it, receives an update published with the publisher's own id, its
type and its lines, and never a private update it may not receive. Skipped only when Debian's
`chromium` is not installed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from harness.live import PushsvcProcess
from playwright.sync_api import Page

from support.browser import CHROMIUM, NO_CHROMIUM

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

SECRET = "a-browser-test-secret-of-32-bytes!!"

# The page subscribes as an application does and keeps what it receives in `window.got`.
LISTEN = """async (query) => {
  window.got = [];
  const url = new URL("/.well-known/mercure", window.origin);
  for (const [name, value] of query) url.searchParams.append(name, value);
  const source = new EventSource(url);
  const keep = (e) => got.push({ type: e.type, id: e.lastEventId, data: e.data });
  source.onmessage = keep;
  source.addEventListener("shipped", keep);
  await new Promise((resolve) => source.addEventListener("open", resolve, { once: true }));
}"""


@pytest.fixture(scope="module")
def hub() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve", "--mercure", "anonymous", "--tick", "0", env={"PUSHSVC_JWT_KEY": SECRET}
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def publish(hub: PushsvcProcess, topic: str, data: str, **fields: str) -> str:
    claims = {"mercure": {"publish": ["*"]}, "exp": int(time.time()) + 600}
    answer = httpx.post(
        f"{hub.base}/.well-known/mercure",
        content=urlencode([("topic", topic), ("data", data), *fields.items()]),
        headers={
            "Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def test_an_event_source_receives_updates_as_published_and_no_private_one(
    hub: PushsvcProcess, page: Page
) -> None:
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page.goto(f"{hub.base}/healthz")
    order = f"https://example.com/orders/{uuid.uuid4().hex[:8]}"
    page.evaluate(LISTEN, [["match_urlpattern", "https://example.com/orders/:id"]])
    publish(hub, order, "hidden", private="on", id="secret-1")
    publish(hub, order, '{"order": 4711}\nsecond line', id="order-4711", type="shipped")
    publish(hub, order, "plain", id="order-4712")
    page.wait_for_function("window.got.length >= 2")
    assert page.evaluate("window.got") == [
        {"type": "shipped", "id": "order-4711", "data": '{"order": 4711}\nsecond line'},
        {"type": "message", "id": "order-4712", "data": "plain"},
    ]
