"""The application's messages through pushsvc's own clients, against real `pushsvc serve` processes
on the embedded broker and on Redis: `Client` and `AsyncClient` publish them (one message, or in
a batch) and read them (`messages()`), and `pushsvc publish --type --data` and `pushsvc subscribe
--messages` do the same from the command line.

What a user relies on: each message arrives with the data that was posted (Hypothesis draws it:
any JSON, unicode with the line separators a line splitter breaks on, nesting to the limit,
64-bit integers, finite floats, sizes up to the limit) and its type; a saved id resumes exactly,
in another program too; a resume the history cannot cover is a `Gap`, never silence."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import orjson
import pytest
from click.testing import CliRunner
from harness.live import PushsvcProcess, request, run_tool, serving_on, start_tool, wait_until
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pushsvc.cli import main
from pushsvc.client import (
    ApiError,
    AsyncClient,
    AsyncMessageStream,
    Client,
    Gap,
    Message,
    MessageStream,
)

T = TypeVar("T")
LIMIT = 64 * 1024  # the default largest message (a sixteenth of --max-body): data as compact JSON
DEEPEST = 64  # how deep data may nest
WAIT_S = 30.0  # for a message that must come (a loaded machine, Redis)


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def server(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    # A short history, so that a resume older than it is a gap; no ticks, so that a topic's
    # history holds only what a test posts.
    with serving_on(request.param, "--history", "40", "--tick", "0", "--heartbeat", "1s") as proc:
        yield proc


class AsyncReader:
    """An AsyncClient on a real asyncio loop of its own, each call awaited on it in turn."""

    def __init__(self, url: str) -> None:
        self._runner = asyncio.Runner()
        self.client = self._runner.run(self._make(url))

    @staticmethod
    async def _make(url: str) -> AsyncClient:
        return AsyncClient(url)

    def run(self, awaitable: Awaitable[T]) -> T:
        async def awaited() -> T:
            return await asyncio.wait_for(awaitable, WAIT_S)

        return self._runner.run(awaited())

    def next(self, stream: AsyncMessageStream) -> Message | Gap:
        return self.run(anext(stream))

    def close(self, *streams: AsyncMessageStream) -> None:
        for stream in streams:
            self.run(stream.aclose())
        self.run(self.client.aclose())
        self._runner.close()


class Lines:
    """`pushsvc subscribe --messages`, its JSON lines read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = start_tool("subscribe", "--messages", *args)
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # the end

    def next(self) -> dict[str, Any]:
        line = self._lines.get(timeout=WAIT_S)
        if not line:
            raise EOFError(f"pushsvc subscribe ended with status {self.proc.wait()}")
        # One line by any splitter's count: str.splitlines breaks on U+2028 and U+0085 too.
        assert len(line.splitlines()) == 1, f"not one line: {line[:200]!r}"
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def close(self) -> int | None:
        self.proc.terminate()
        status = self.proc.wait(WAIT_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return status


def updates(server: PushsvcProcess, topic: str) -> int:
    """How many updates the topic's history holds (a 202 means logged: the update follows)."""
    status, _, body = request(server.port, "GET", f"/topics/{topic}/history?limit=1000")
    return len(json.loads(body)["updates"]) if status == 200 else 0


def published(server: PushsvcProcess, topic: str, count: int) -> None:
    wait_until(lambda: updates(server, topic) >= count, WAIT_S, what=f"{count} updates of {topic}")


# What is drawn ------------------------------------------------------------------------------

# Any character UTF-8 encodes, and often the ones a line splitter breaks a `data:` line on.
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\u2028\u2029\u0085\r\n\x00"))
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
NESTED = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)


@st.composite
def deep(draw: st.DrawFn) -> object:
    """Arrays and objects nested 1 to 64 deep around a scalar."""
    data = draw(SCALARS)
    for in_list in draw(st.lists(st.booleans(), min_size=1, max_size=DEEPEST)):
        data = [data] if in_list else {draw(TEXT): data}
    return data


@st.composite
def big_text(draw: st.DrawFn) -> str:
    """A string of a drawn few characters repeated, as big as compact JSON allows: up to the
    limit exactly."""
    unit = draw(TEXT.filter(bool))
    room = draw(st.integers(0, LIMIT - 2) | st.just(LIMIT - 2))  # quotes aside
    return unit * (room // (len(orjson.dumps(unit)) - 2))


DATA = NESTED | deep() | big_text()
AT_THE_LIMIT = "x" * (LIMIT - 2)  # 64 KiB exactly, as compact JSON
SEPARATORS_AT_THE_LIMIT = "\u2028\u2029\u0085" * ((LIMIT - 2) // 8) + "x" * ((LIMIT - 2) % 8)
DEEPEST_DATA: object = "bottom"
for level in range(DEEPEST):  # arrays and objects by turns, as deep as data may nest
    DEEPEST_DATA = [DEEPEST_DATA] if level % 2 else {"k": DEEPEST_DATA}
TYPES = st.none() | st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z").filter(lambda t: t != "gap")


# Exactly as published --------------------------------------------------------------------


def test_each_client_and_the_command_line_receive_each_message_as_published(
    server: PushsvcProcess, topic: str
) -> None:
    client = Client(server.base)
    reader = AsyncReader(server.base)
    # A first message, kept before anything reads: each reader starts with it (`replay`),
    # then reads on live, each draw as it is posted.
    assert client.publish(topic, data={"start": topic}, type="start") == 1
    published(server, topic, 1)
    stream = client.messages(topic, replay=1)
    async_stream = reader.client.messages(topic, replay=1)
    lines = Lines(f"--url={server.base}", topic, "--replay", "1")
    try:
        first = next(stream)
        assert first == Message(first.id, "start", {"start": topic})
        assert reader.next(async_stream) == first
        assert lines.next() == {"id": first.id, "type": "start", "data": {"start": topic}}

        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(data=DATA, kind=TYPES, via=st.sampled_from(["data=", "a batch", "AsyncClient"]))
        @example(data=AT_THE_LIMIT, kind="x" * 64, via="data=")
        @example(data=SEPARATORS_AT_THE_LIMIT, kind=None, via="a batch")
        @example(data=DEEPEST_DATA, kind="a.b:c-d_e", via="AsyncClient")
        @example(data=[-(2**63), 2**64 - 1, 2**63, -1.5e-308, 1.7976931348623157e308], kind=None,
                 via="data=")  # fmt: skip
        def each_arrives_as_published(data: object, kind: str | None, via: str) -> None:
            assert len(orjson.dumps(data)) <= LIMIT
            if via == "data=":
                assert client.publish(topic, data=data, type=kind) == 1
            elif via == "a batch":
                event = {"data": data} if kind is None else {"type": kind, "data": data}
                assert client.publish(topic, [event]) == 1
            else:
                assert reader.run(reader.client.publish(topic, data=data, type=kind)) == 1
            # Every reader's, before any is judged: a failure leaves none behind the others.
            got, got_async, line = next(stream), reader.next(async_stream), lines.next()
            expected = kind or "message"
            assert isinstance(got, Message)
            assert (got.type, got.data) == (expected, data)
            assert got_async == got
            assert line == {"id": got.id, "type": expected, "data": data}

        each_arrives_as_published()
    finally:
        stream.close()
        reader.close(async_stream)
        client.close()
        lines.close()


# Resume, and gaps ---------------------------------------------------------------------------


def _numbered(client: Client, topic: str, numbers: range) -> None:
    assert client.publish(topic, [{"type": "n", "data": n} for n in numbers]) == len(numbers)


@pytest.mark.parametrize("kind", ["Client", "AsyncClient"])
def test_a_saved_id_resumes_exactly_in_another_program(
    server: PushsvcProcess, topic: str, kind: str
) -> None:
    with Client(server.base) as publisher:
        _numbered(publisher, topic, range(5))
        published(server, topic, 5)

        # One program reads three of the five, keeps its place, and stops.
        saved: str | None
        if kind == "Client":
            with Client(server.base) as client, client.messages(topic, replay=5) as stream:
                assert [next(stream).data for _ in range(3)] == [0, 1, 2]
                saved = stream.last_event_id
        else:
            reader = AsyncReader(server.base)
            async_stream = reader.client.messages(topic, replay=5)
            assert [reader.next(async_stream).data for _ in range(3)] == [0, 1, 2]
            saved = async_stream.last_event_id
            reader.close(async_stream)
        assert saved is not None

        # More is published while none runs; the next program resumes with the saved id:
        # exactly the rest, then live.
        _numbered(publisher, topic, range(5, 8))
        if kind == "Client":
            with Client(server.base) as client, client.messages(topic, last_event_id=saved) as s:
                rest = [next(s) for _ in range(5)]
                _numbered(publisher, topic, range(8, 9))
                rest.append(next(s))
        else:
            reader = AsyncReader(server.base)
            async_stream = reader.client.messages(topic, last_event_id=saved)
            rest = [reader.next(async_stream) for _ in range(5)]
            _numbered(publisher, topic, range(8, 9))
            rest.append(reader.next(async_stream))
            reader.close(async_stream)
    assert [(m.type, m.data) for m in rest] == [("n", n) for n in range(3, 9)]
    assert len({m.id for m in rest}) == 6


def test_the_id_a_stream_starts_from_resumes_what_was_published_after_it(
    server: PushsvcProcess, topic: str
) -> None:
    """A program that saves its place before any message came (the stream's head, an `id:`
    alone) resumes with everything published after it started."""
    with Client(server.base) as client:
        assert client.publish(topic, {"value": 1.0}) == 1
        published(server, topic, 1)
        stream = client.messages(topic)
        taken: queue.SimpleQueue[Message | Gap] = queue.SimpleQueue()
        reading = threading.Thread(target=lambda: taken.put(next(stream)), daemon=True)
        reading.start()
        wait_until(lambda: stream.last_event_id is not None, WAIT_S, what="the stream's head")
        saved = stream.last_event_id
        _numbered(client, topic, range(3))
        assert taken.get(timeout=WAIT_S).data == 0  # the reader woke: it may be stopped
        reading.join(WAIT_S)
        stream.close()
        with client.messages(topic, last_event_id=saved) as resumed:
            assert [next(resumed).data for _ in range(3)] == [0, 1, 2]


def _stale_id(server: PushsvcProcess, client: Client, topic: str) -> str:
    """The id of a topic's first message once 60 more have pushed it out of the history."""
    _numbered(client, topic, range(1))
    published(server, topic, 1)
    with client.messages(topic, replay=1) as stream:
        stale = next(stream).id
    for start in range(1, 61, 20):
        _numbered(client, topic, range(start, start + 20))
    published(server, topic, 40)  # as many as the history keeps
    return stale


@pytest.mark.parametrize("resume", ["older than the history", "of another epoch"])
def test_a_resume_the_history_cannot_cover_is_a_gap_then_live(
    server: PushsvcProcess, topic: str, resume: str
) -> None:
    with Client(server.base) as client:
        stale = _stale_id(server, client, topic)
        if resume == "of another epoch":
            stale = "0badc0de:1-0"
        reader = AsyncReader(server.base)
        async_stream = reader.client.messages(topic, last_event_id=stale)
        stream: MessageStream = client.messages(topic, last_event_id=stale)
        try:
            gap = next(stream)
            assert isinstance(gap, Gap) and gap.topics == (topic,)
            assert stream.last_event_id == gap.id  # resuming from here loses nothing more
            async_gap = reader.next(async_stream)
            assert isinstance(async_gap, Gap) and async_gap.topics == (topic,)
            _numbered(client, topic, range(100, 101))
            after = next(stream)
            assert (after.type, after.data) == ("n", 100)  # type: ignore[union-attr]
            assert reader.next(async_stream) == after
        finally:
            stream.close()
            reader.close(async_stream)
        with client.messages(topic, last_event_id=gap.id) as resumed:
            assert next(resumed) == after


def test_subscribe_messages_prints_a_gap_as_a_line_of_type_gap(
    server: PushsvcProcess, topic: str
) -> None:
    with Client(server.base) as client:
        stale = _stale_id(server, client, topic)
        lines = Lines(f"--url={server.base}", topic, "--last-event-id", stale, "--count", "1")
        try:
            gap = lines.next()
            assert gap == {"id": gap["id"], "type": "gap", "data": {"topics": [topic]}}
            assert gap["id"] and gap["id"] != stale
            client.publish(topic, data={"after": "the gap"}, type="shipped")
            message = lines.next()
            assert (message["type"], message["data"]) == ("shipped", {"after": "the gap"})
            assert lines.proc.wait(WAIT_S) == 0  # --count 1: the gap is no message
        finally:
            lines.close()


# The command line's publish -----------------------------------------------------------------


def test_publish_type_and_data_posts_one_message(server: PushsvcProcess, topic: str) -> None:
    url = f"--url={server.base}"
    done = run_tool("publish", url, topic, "--type", "shipped", "--data", '{"order": 4711}')
    assert (done.returncode, done.stdout, done.stderr) == (0, "accepted 1\n", "")
    done = run_tool("publish", url, topic, "--data", '"caf\\u00e9 \u2028"', "--tag", "site=a")
    assert (done.returncode, done.stdout) == (0, "accepted 1\n"), done.stderr
    published(server, topic, 2)
    with Client(server.base) as client, client.messages(topic, replay=2) as stream:
        shipped, default = next(stream), next(stream)
    assert (shipped.type, shipped.data) == ("shipped", {"order": 4711})
    assert (default.type, default.data) == ("message", "caf\u00e9 \u2028")


@pytest.mark.parametrize(
    ("args", "status", "error"),
    [
        (
            ["--data", '{"order": 47'],
            2,
            "Error: --data takes JSON (unexpected end of data at column 13): '{\"order\": 47'; "
            "quote a string as JSON: --data '\"hello\"'",
        ),
        (
            ["--data", "shipped"],
            2,
            "Error: --data takes JSON (unexpected character, expected a JSON value at column 1): "
            "'shipped'; quote a "
            "string as JSON: --data '\"hello\"'",
        ),
        (
            ["--data", "NaN"],
            2,
            "Error: --data takes JSON (unexpected character, expected a JSON value at column 1): "
            "'NaN'; quote a "
            "string as JSON: --data '\"hello\"'",
        ),
        (
            ["--data", '{"id": 123456789012345678901234567890}'],
            1,
            "Error: event 0: data holds an integer beyond 64 bits: send it as a string",
        ),
        (
            ["12.5", "--type", "shipped"],
            2,
            "Error: --type and --data publish one message: give no VALUES too",
        ),
    ],
    ids=["cut short", "a bare word", "NaN", "an integer beyond 64 bits", "with values"],
)
def test_publish_refuses_data_it_cannot_send_as_given_in_one_line_and_sends_nothing(
    server: PushsvcProcess, topic: str, args: list[str], status: int, error: str
) -> None:
    done = run_tool("publish", f"--url={server.base}", topic, *args)
    assert (done.returncode, done.stdout, done.stderr) == (status, "", error + "\n")
    assert request(server.port, "GET", f"/topics/{topic}/stats")[0] == 404  # nothing sent


def test_publish_reads_standard_inputs_message_data_exactly(
    server: PushsvcProcess, topic: str
) -> None:
    """orjson reads an integer beyond 64 bits as the nearest float: sent so, it would be
    delivered rounded. The command line refuses it, as the server does; a value is a number."""
    url = f"--url={server.base}"
    wide = '{"type": "n", "data": {"n": 123456789012345678901234}}\n'
    done = run_tool("publish", url, topic, stdin='{"data": 1}\n' + wide)
    assert (done.returncode, done.stderr) == (
        1,
        "Error: event 1: data holds an integer beyond 64 bits: send it as a string\n",
    )
    assert request(server.port, "GET", f"/topics/{topic}/stats")[0] == 404  # nothing sent
    edge = (
        '{"type": "n", "data": [18446744073709551615, -9223372036854775808], '
        '"value": 10000000000000000000000}\n'
    )
    done = run_tool("publish", url, topic, stdin=edge)
    assert (done.returncode, done.stdout) == (0, "accepted 1\n"), done.stderr
    published(server, topic, 1)
    with Client(server.base) as client, client.messages(topic, replay=1) as stream:
        assert next(stream).data == [2**64 - 1, -(2**63)]


def test_publish_through_redis_carries_the_message(server: PushsvcProcess, topic: str) -> None:
    argv = server.argv
    if "--redis-url" not in argv:
        pytest.skip("a Redis deployment's bridge (the embedded server has none)")
    redis_url = argv[argv.index("--redis-url") + 1]
    prefix = argv[argv.index("--prefix") + 1]
    with Client(server.base) as client:
        _numbered(client, topic, range(1))
        published(server, topic, 1)
        with client.messages(topic, replay=1) as stream:
            assert next(stream).data == 0
            done = run_tool(
                "publish", "--redis-url", redis_url, "--prefix", prefix, topic,
                "--type", "shipped", "--data", '{"order": 4711, "note": "\u2028"}',
            )  # fmt: skip
            assert (done.returncode, done.stdout) == (0, "published 1 to Redis\n"), done.stderr
            message = next(stream)
    assert (message.type, message.data) == ("shipped", {"order": 4711, "note": "\u2028"})


# What is refused before anything is asked ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--messages", "--stats", "mean"], "--stats is for updates: not with --messages"),
        (["--messages", "--series", "1m"], "--series is for updates: not with --messages"),
        (["--replay", "5"], "--replay is for --messages"),
    ],
)
def test_subscribe_refuses_options_of_the_other_kind_of_stream(args: list[str], error: str) -> None:
    result = CliRunner().invoke(main, ["subscribe", "--url", "http://127.0.0.1:9/", "t", *args])
    assert (result.exit_code, result.output) == (2, f"Error: {error}\n")


def test_a_refused_stream_is_the_servers_refusal_raised_at_once(
    server: PushsvcProcess,
) -> None:
    with (
        Client(server.base) as client,
        client.messages("shop*", replay=5) as stream,  # not a pattern: shop.* is one
        pytest.raises(ApiError) as refused,
    ):
        next(stream)
    assert (refused.value.status, refused.value.code) == (400, "invalid_topic")


def test_the_command_lines_publish_help_names_the_message_options() -> None:
    shown = CliRunner().invoke(main, ["publish", "--help"], terminal_width=200).output
    assert "--type TEXT" in shown and "--data JSON" in shown
