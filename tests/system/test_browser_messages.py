"""Messages in a real headless Chromium against a real `pushsvc serve`: the application's own
events, as a browser receives them.

A plain `EventSource` on `/topics/{t}/messages` with `addEventListener(type, …)`, as Flask-SSE
users write it, receives each message's data equal to what was posted (drawn by Hypothesis:
any JSON, Unicode line ends and emoji, nesting to the limit, sizes to the limit) with its type;
it resumes across a restart of `pushsvc serve --data-dir` with exactly the messages it missed.
The module's `messages()` does the same through its own API: handlers per type, a type named
like the connection's own events, resume from a kept id, a gap, a replay. Every test fails on
an uncaught error or a console error in the page, except the network errors a test causes.
Skipped only when Debian's `chromium` is not installed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.live import PushsvcProcess, post, request
from harness.net import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, Page, expect

from support.browser import CHROMIUM, NO_CHROMIUM, allow_network_errors, page_of

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

MAX_MESSAGE = 64 * 1024  # the server's default largest message's data, as compact JSON
MAX_DEPTH = 64  # how deep data may nest

# A page of pushsvc's origin opens a plain EventSource on `path` and listens for `types`, as an
# application would; what it receives is kept in `window.got`. A message typed `error` or
# `open` is dispatched to the listeners of the connection's own events of those names too:
# those are no MessageEvent.
LISTEN = """async ([path, types]) => {
  window.got = [];
  const source = window.source = new EventSource(path);
  for (const type of types) {
    source.addEventListener(type, (e) => {
      if (!(e instanceof MessageEvent)) return;
      got.push({ type: e.type, data: JSON.parse(e.data), id: e.lastEventId });
    });
  }
  await new Promise((resolve) => source.addEventListener("open", resolve, { once: true }));
}"""


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def open_origin(page: Page, server: PushsvcProcess) -> None:
    """A page of pushsvc's origin (its /healthz) to run a stream in; no favicon asked for."""
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page.goto(f"{server.base}/healthz")


def as_json(value: Any) -> Any:
    """`value` as a JSON value, to compare what was posted with what a browser parsed: a
    number is a double whether written 1 or 1.0 (JavaScript has no other), and is never
    `true` (which Python's `True == 1` would let pass); an object's members have no order."""
    if value is None or isinstance(value, (bool, str)):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, list):
        return ("array", [as_json(v) for v in value])
    assert isinstance(value, dict), value
    return ("object", {k: as_json(v) for k, v in value.items()})


def message_ids(server: PushsvcProcess, topic: str) -> list[str]:
    """The ids of the topic's updates that carry a message, oldest first."""
    status, _, body = request(server.port, "GET", f"/topics/{topic}/history?limit=10000")
    assert status == 200
    return [u["id"] for u in json.loads(body)["updates"] if "type" in u["event"]]


# ------------------------------------------------------------------ what Hypothesis draws

# Characters a line splitter or a JSON encoder may trip on, and some that take 4 bytes.
AWKWARD = '\u2028\u2029\u0085\r\n\x00"\\\x7f\ufeff😀🚀👩‍💻🇺🇦é中'
CHARACTERS = st.one_of(st.characters(codec="utf-8"), st.sampled_from(AWKWARD))  # no surrogates
TEXT = st.text(CHARACTERS, max_size=24)
# In a browser every number is a double: integers beyond ±2**53 would come back rounded.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.sampled_from([2**53, -(2**53), 0.1, -0.0, 5e-324, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.text(st.sampled_from(AWKWARD), min_size=1, max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=16,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def nested(value: Any, levels: int, key: str) -> Any:
    """`value` inside arrays and objects, in turn, to `levels` deep (at most the limit)."""
    for level in range(min(levels, MAX_DEPTH) - depth(value)):
        value = [value] if level % 2 else {key: value}
    return value


def filled(rest: Any, unit: str, size: int) -> dict[str, Any]:
    """`{"rest": rest, "big": …}`, `big` being `unit` repeated to at most `size` bytes of the
    whole as compact JSON (escapes and all)."""
    room = size - len(orjson.dumps({"rest": rest, "big": ""}))
    cost = len(orjson.dumps(unit)) - 2
    return {"rest": rest, "big": unit * max(0, room // cost)}


DEEP = st.builds(nested, VALUES, st.one_of(st.integers(1, MAX_DEPTH), st.just(MAX_DEPTH)), TEXT)
# Tens of KiB, and at the limit.
SIZES = st.one_of(st.integers(10_000, MAX_MESSAGE), st.integers(MAX_MESSAGE - 64, MAX_MESSAGE))
LARGE = st.builds(filled, VALUES, st.text(CHARACTERS, min_size=1, max_size=6), SIZES)
DATA = st.one_of(VALUES, DEEP, LARGE).filter(lambda d: len(orjson.dumps(d)) <= MAX_MESSAGE)
TYPES = st.one_of(
    st.sampled_from(["message", "shipped", "error", "open", "a.b:c-d_1"]),
    st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
).filter(lambda t: t != "gap")
BATCHES = st.lists(st.tuples(TYPES, DATA), min_size=1, max_size=4)


def test_an_event_source_receives_each_message_as_published(
    server: PushsvcProcess, browser: Browser
) -> None:
    with page_of(browser) as page:
        open_origin(page, server)

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(batch=BATCHES)
        def received_as_published(batch: list[tuple[str, Any]]) -> None:
            topic = unique()
            types = sorted({kind for kind, _ in batch})
            page.evaluate(LISTEN, [f"/topics/{topic}/messages", types])
            events = [{"type": kind, "data": data} for kind, data in batch]
            assert post(server.port, topic, events) == (202, {"accepted": len(events)})
            page.wait_for_function("n => got.length >= n", arg=len(batch))
            got = page.evaluate("() => { source.close(); return got; }")
            assert [m["type"] for m in got] == [kind for kind, _ in batch]
            for (_, data), message in zip(batch, got, strict=True):
                assert as_json(message["data"]) == as_json(data)
            assert [m["id"] for m in got] == message_ids(server, topic)

        received_as_published()


def test_a_message_typed_like_the_connections_own_events_is_no_connection_error(
    server: PushsvcProcess, page: Page
) -> None:
    # What a Flask-SSE user's `source.onerror` sees: a message typed `error` is dispatched to
    # it as well (a MessageEvent, with data), while the connection stays open.
    open_origin(page, server)
    topic = unique()
    page.evaluate(LISTEN, [f"/topics/{topic}/messages", ["error"]])
    page.evaluate("() => { window.errors = []; source.onerror = (e) => errors.push(e.data); }")
    assert post(server.port, topic, {"type": "error", "data": {"code": 7}})[0] == 202
    page.wait_for_function("() => got.length === 1")
    assert page.evaluate("got[0].data") == {"code": 7}
    assert page.evaluate("errors") == ['{"code":7}']
    assert page.evaluate("source.readyState") == 1  # OPEN


# ------------------------------------------------------------------ resume


@pytest.mark.redis  # --data-dir keeps its history in a private redis-server
def test_an_event_source_resumes_across_a_restart_with_exactly_the_messages_it_missed(
    page: Page, tmp_path: Path
) -> None:
    allow_network_errors(page)  # while the server is down, and its reconnections are held
    port = free_port()
    args = ("--port", str(port), "--tick", "0", "--retry", "200ms", "--data-dir", str(tmp_path))
    topic = unique()
    stream = f"http://127.0.0.1:{port}/topics/{topic}/messages"

    def send(numbers: range) -> None:
        events: list[dict[str, Any]] = []
        for n in numbers:  # plain events among them: no message of theirs
            events += [{"type": "n", "data": n}, {"value": n}]
        assert post(port, topic, events)[0] == 202

    first = PushsvcProcess("serve", *args).start()
    try:
        open_origin(page, first)
        page.evaluate(LISTEN, [f"/topics/{topic}/messages", ["n", "gap"]])
        send(range(3))
        page.wait_for_function("() => got.length === 3")
    finally:
        first.stop()
    page.wait_for_function("() => source.readyState === EventSource.CONNECTING")
    # Its reconnections are held until the new process has published what it then misses.
    page.route(stream, lambda route: route.abort())
    second = PushsvcProcess("serve", *args).start()
    try:
        send(range(3, 6))
        page.unroute(stream)
        page.wait_for_function("() => got.length >= 6")
        send(range(6, 7))  # once this one is in, everything before it is
        page.wait_for_function("() => got.some(m => m.data === 6)")
        got = page.evaluate("got")
        assert [(m["type"], m["data"]) for m in got] == [("n", n) for n in range(7)]
        assert [m["id"] for m in got] == message_ids(second, topic)
    finally:
        second.stop()


# ------------------------------------------------------------------ through the module

# A page of pushsvc's origin that receives messages through the module, with the options
# given and handlers per type for `handled`; what it hands over is kept in `window.seen`.
MESSAGES = """async ([options, handled]) => {
  const { messages } = await import("/static/pushsvc.js");
  const seen = window.seen = { all: [], handled: [], gaps: [], states: [] };
  const on = Object.fromEntries(handled.map((type) => [type, (data, message) => {
    seen.handled.push([type, data, message.type]);
  }]));
  window.feed = messages({
    ...options,
    on,
    onMessage: (message) => seen.all.push(message),
    onGap: (gap) => seen.gaps.push(gap),
    onStatus: (state) => seen.states.push(state),
  });
  await new Promise((resolve) => {
    const opened = () => (seen.states.includes("live") ? resolve() : setTimeout(opened, 10));
    opened();
  });
}"""


def receive_in(page: Page, server: PushsvcProcess, handled: list[str], **options: Any) -> None:
    open_origin(page, server)
    page.evaluate(MESSAGES, [options, handled])


def test_the_module_hands_over_each_type_it_listens_to(server: PushsvcProcess, page: Page) -> None:
    family = unique("shop")
    orders, chat = f"{family}.orders", f"{family}.chat"
    receive_in(page, server, ["shipped", "error"], topics=[f"{family}.*"], types="said")
    assert page.evaluate("feed.types") == ["message", "shipped", "error", "said"]
    assert post(server.port, orders, {"type": "shipped", "data": {"order": 4711}})[0] == 202
    assert post(server.port, chat, {"type": "said", "data": "hi \u2028 there 👋"})[0] == 202
    assert post(server.port, orders, {"type": "refunded", "data": 1})[0] == 202  # not listened to
    assert post(server.port, orders, {"type": "error", "data": None})[0] == 202
    assert post(server.port, chat, {"data": [1, 2]})[0] == 202  # `message`
    page.wait_for_function("() => seen.all.length === 4")
    seen = page.evaluate("seen")
    assert [(m["type"], m["data"]) for m in seen["all"]] == [
        ("shipped", {"order": 4711}),
        ("said", "hi \u2028 there 👋"),
        ("error", None),
        ("message", [1, 2]),
    ]
    assert seen["handled"] == [["shipped", {"order": 4711}, "shipped"], ["error", None, "error"]]
    # A message typed `error` is no connection error: the stream stayed live.
    assert seen["states"] == ["live"]
    assert page.evaluate("feed.lastEventId") == seen["all"][-1]["id"]


def test_the_module_resumes_from_a_kept_id_or_says_what_it_cannot(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    assert post(server.port, topic, [{"type": "n", "data": n} for n in range(5)])[0] == 202
    ids = message_ids(server, topic)
    # A page that kept the id of the second message gets exactly those after it, then live.
    receive_in(page, server, [], topics=topic, types="n", lastEventId=ids[1])
    assert post(server.port, topic, {"type": "n", "data": 5})[0] == 202
    page.wait_for_function("() => seen.all.length === 4")
    assert [m["data"] for m in page.evaluate("seen.all")] == [2, 3, 4, 5]
    assert page.evaluate("seen.gaps") == []
    page.evaluate("feed.close()")
    assert page.evaluate("seen.states") == ["live", "closed"]

    # An id of another epoch (what a restart that lost the history leaves): a gap naming the
    # topic, then every message the epoch now holds (one published since the restart is not
    # lost), each once, then live.
    receive_in(page, server, [], topics=topic, types="n", lastEventId="0badc0de:1-0")
    page.wait_for_function("() => seen.gaps.length === 1")
    assert page.evaluate("seen.gaps") == [{"topics": [topic]}]
    assert post(server.port, topic, {"type": "n", "data": 6})[0] == 202
    page.wait_for_function("() => seen.all.some((m) => m.data === 6)")
    seen = page.evaluate("seen")
    assert [m["data"] for m in seen["all"]] == list(range(7))
    assert [m["id"] for m in seen["all"]] == message_ids(server, topic)
    assert seen["gaps"] == [{"topics": [topic]}]
    assert page.evaluate("feed.lastEventId") == seen["all"][-1]["id"]
    page.evaluate("feed.close()")

    # A replay: the last three, then live.
    receive_in(page, server, ["n"], topics=[topic], replay=3)
    assert post(server.port, topic, {"type": "n", "data": 7})[0] == 202
    page.wait_for_function("() => seen.all.length === 4")
    assert [m["data"] for m in page.evaluate("seen.all")] == [4, 5, 6, 7]


def test_the_module_refuses_what_is_no_message_type(server: PushsvcProcess, page: Page) -> None:
    open_origin(page, server)
    refused = page.evaluate(
        """async () => {
          const { messages } = await import("/static/pushsvc.js");
          const tries = [{ topics: [] }, { topics: "t", types: "gap" },
                         { topics: "t", on: { "two words": () => {} } }];
          return tries.map((options) => {
            try { messages(options).close(); return null; } catch (error) { return error.name; }
          });
        }"""
    )
    assert refused == ["TypeError", "TypeError", "TypeError"]


# ------------------------------------------------------------------ the example page


def test_the_example_page_lists_messages_and_resumes_after_a_reload(
    server: PushsvcProcess, page: Page
) -> None:
    topic = unique()
    page.goto(f"{server.base}/static/examples/messages.html?topic={topic}&types=shipped")
    expect(page.get_by_role("status")).to_have_attribute("data-state", "live")
    expect(page.locator("#types")).to_have_text("message, shipped")
    posted = [
        {"type": "shipped", "data": {"order": 1, "note": "<b>fast</b>"}},
        {"type": "refunded", "data": 2},  # not a type it listens to
        {"data": "hello"},
    ]
    assert post(server.port, topic, posted)[0] == 202
    items = page.locator("#received li")
    expect(items).to_have_text(['message: "hello"', 'shipped: {"order":1,"note":"<b>fast</b>"}'])
    expect(page.locator("#received b")).to_have_count(0)
    # Back after a while away, it resumes after the last message shown: what was published
    # meanwhile, then live, nothing twice.
    page.goto("about:blank")
    assert post(server.port, topic, {"type": "shipped", "data": {"order": 3}})[0] == 202
    page.go_back()
    expect(page.get_by_role("status")).to_have_attribute("data-state", "live")
    assert post(server.port, topic, {"data": "live"})[0] == 202
    expect(items).to_have_text(['message: "live"', 'shipped: {"order":3}'])
    expect(page.get_by_role("note")).to_be_hidden()
