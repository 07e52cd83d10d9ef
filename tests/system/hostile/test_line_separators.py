"""A producer's strings cannot forge stream fields, for any line splitter (docs/security.md, "No
injection into the stream").

U+2028, U+2029 and U+0085 are line ends to Python's `str.splitlines` (and to httpx-sse before
0.4.2, which split on them), not to the SSE standard nor to browsers; JSON encoders such as
orjson write them raw. A producer puts them in every string it controls — tag names and
values, so group keys and top values too, each followed by forged `id:`, `event:` and
`retry:` fields — and every reader gets back exactly the updates the history holds: the
wire's own bytes, `Client`, `AsyncClient`, `pushsvc subscribe` and Chromium's EventSource.
Topic names and idempotency keys cannot carry them at all.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Generator, Iterator
from contextlib import aclosing, closing
from itertools import islice
from typing import Any, NamedTuple, cast

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, run_tool, wait_until
from playwright.sync_api import Page

from pushsvc.client import AsyncClient, Client
from pushsvc.client.stream import RawMessage
from support.browser import CHROMIUM, NO_CHROMIUM

SEPARATORS = ("\u2028", "\u2029", "\x85")
RAW = tuple(s.encode() for s in SEPARATORS)
TOPIC = "hostile.tags"
GROUP_TAG = "g\u2028id: forged"  # a tag the topic groups by: every update carries its key


def forged(separator: str) -> str:
    """What would be an `alert` event with a day's `retry:`, to a splitter honouring
    `separator`."""
    s = separator
    return f"{s}id: forged{s}event: alert{s}retry: 86400000{s}{s}data: {{}}"


TAGS = {
    GROUP_TAG: forged("\u2028"),
    "who": forged("\u2029"),  # a distinct count's tag
    "what": forged("\x85"),  # a top list's tag: its values are in every window
    "\x85id: forged\u2029event: alert\u2028": "\u2028\u2029\x85",
}
RULES = """
[[rule]]
topics = ["hostile.*"]
windows = ["1m"]
group_by = ["g\\u2028id: forged"]
distinct = ["who"]
top = [{ tag = "what", k = 3 }]
"""


class Published(NamedTuple):
    server: PushsvcProcess
    before: str
    """The id of the benign update before the hostile ones: a stream resumed from it replays
    them."""
    updates: list[dict[str, Any]]
    """The hostile updates as the history holds them."""


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    rules = tmp_path_factory.mktemp("separators") / "rules.toml"
    rules.write_text(RULES)
    server = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    try:
        assert post(server.port, TOPIC, {"value": 0})[0] == 202
        assert post(server.port, TOPIC, [{"value": v, "tags": TAGS} for v in (1, 2)])[0] == 202

        def history() -> list[dict[str, Any]]:
            body = request(server.port, "GET", f"/topics/{TOPIC}/history")[2]
            updates: list[dict[str, Any]] = json.loads(body)["updates"]
            return updates

        wait_until(lambda: len(history()) == 3, what="three updates")
        first, *hostile = history()
        assert all(u["event"]["tags"] == TAGS for u in hostile)
        assert hostile[-1]["windows"]["1m"]["top_what"][0]["value"] == TAGS["what"]
        yield Published(server, first["id"], hostile)
    finally:
        server.stop()


def _replay_path(published: Published) -> str:
    return f"/topics/{TOPIC}/stream?lastEventId={urllib.parse.quote(published.before)}"


def _received(messages: list[tuple[str, str | None, str]]) -> list[tuple[str, str | None, Any]]:
    return [(event, id, json.loads(data)) for event, id, data in messages]


def _expected(published: Published) -> list[tuple[str, str | None, Any]]:
    return [("stats", u["id"], u) for u in published.updates]


def test_the_wire_carries_them_escaped_and_a_splitter_on_them_finds_no_forged_field(
    published: Published,
) -> None:
    """The stream's bytes hold none of them, so even `str.splitlines` reads every line as the
    server wrote it: a replay of the updates, and a fresh stream's snapshot (its groups' keys,
    its top values) alike."""
    port = published.server.port
    with SSEClient(port, _replay_path(published)) as stream:
        replayed = [stream.next() for _ in published.updates]
        replay_raw = bytes(stream.raw)
    with SSEClient(port, f"/topics/{TOPIC}/stream") as stream:
        snapshot = stream.next()
        snapshot_raw = bytes(stream.raw)
    for raw in (replay_raw, snapshot_raw):
        assert not any(separator in raw for separator in RAW), raw
        lines = raw.decode().splitlines()
        assert all(line.startswith(("id: ", "event: ", "data: ", "retry: ", ":")) or not line
                   for line in lines), lines  # fmt: skip
        assert not [line for line in lines if "forged" in line and not line.startswith("data: ")]
        assert not [line for line in lines if line.startswith(("event: alert", "retry: 864"))]
    assert _received([(m.event, m.id, m.data) for m in replayed]) == _expected(published)
    assert snapshot.event == "snapshot"
    groups = json.loads(snapshot.data)["topics"][TOPIC]["groups"]
    assert {GROUP_TAG: TAGS[GROUP_TAG]} in [g["key"] for g in groups]


def test_client_reads_them_back_intact(published: Published) -> None:
    with Client(published.server.base) as client:
        replay = client.raw_stream(TOPIC, last_event_id=published.before, max_retries=0)
        with closing(cast(Generator[RawMessage], replay)):
            got = [(m.event, m.id, m.data) for m in islice(replay, len(published.updates))]
        fresh = client.raw_stream(TOPIC, max_retries=0)
        with closing(cast(Generator[RawMessage], fresh)):
            snapshot = next(fresh)
    assert _received(got) == _expected(published)
    assert snapshot.event == "snapshot"
    groups = snapshot.json()["topics"][TOPIC]["groups"]
    assert {GROUP_TAG: TAGS[GROUP_TAG]} in [g["key"] for g in groups]


def test_async_client_reads_them_back_intact(published: Published) -> None:
    async def read() -> list[tuple[str, str | None, str]]:
        got: list[tuple[str, str | None, str]] = []
        async with AsyncClient(published.server.base) as client:
            stream = client.raw_stream(TOPIC, last_event_id=published.before, max_retries=0)
            async with aclosing(stream):
                async for message in stream:
                    got.append((message.event, message.id, message.data))
                    if len(got) == len(published.updates):
                        break
        return got

    assert _received(asyncio.run(read())) == _expected(published)


def test_pushsvc_subscribe_prints_them_intact(published: Published) -> None:
    done = run_tool(
        "subscribe", "--url", published.server.base, TOPIC,
        "--last-event-id", published.before, "--count", str(len(published.updates)),
        "--max-retries", "0",
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    # One JSON line each, for any splitter: the tool escapes them as the stream does.
    assert not any(separator in done.stdout for separator in SEPARATORS)
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(p["event"], p["id"], p["data"]) for p in printed] == _expected(published)


# What a page's EventSource hands over: every named event an injection could produce too.
EVENT_SOURCE = """([path, wanted]) => new Promise((resolve, reject) => {
  const seen = [];
  const source = new EventSource(path);
  for (const name of ["snapshot", "stats", "point", "alert", "message"]) {
    source.addEventListener(name, (e) => {
      seen.push([name, e.lastEventId, e.data]);
      if (seen.length === wanted) { source.close(); resolve(seen); }
    });
  }
  source.onerror = () => { source.close(); reject(new Error("the stream failed")); };
})"""


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_a_browser_event_source_reads_them_intact(published: Published, page: Page) -> None:
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page.goto(f"{published.server.base}/healthz")
    seen = page.evaluate(EVENT_SOURCE, [_replay_path(published), len(published.updates)])
    assert _received([tuple(m) for m in seen]) == _expected(published)


@pytest.mark.parametrize("separator", SEPARATORS)
def test_topic_names_and_idempotency_keys_cannot_carry_them(
    published: Published, separator: str
) -> None:
    port = published.server.port
    topic = urllib.parse.quote(f"hostile.a{separator}b")
    status, _, body = request(port, "POST", f"/topics/{topic}/events", {"value": 1})
    assert (status, json.loads(body)["error"]["code"]) == (400, "invalid_topic")
    # Sent as its UTF-8 bytes (http.client writes header strings as Latin-1).
    key = f"k{separator}id: forged".encode().decode("latin-1")
    status, _, body = request(
        port, "POST", f"/topics/{TOPIC}/events", {"value": 1}, headers={"Idempotency-Key": key}
    )
    assert (status, json.loads(body)["error"]["code"]) == (400, "invalid_idempotency_key")
