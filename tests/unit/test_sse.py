"""The SSE wire encoding, judged by byte tables and by a strict WHATWG parser."""

from __future__ import annotations

import json
from itertools import pairwise

import orjson
import pytest
from harness.sse_parser import EventStreamParser, SSEMessage, parse
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.core.sse import (
    HEADERS,
    HEARTBEAT,
    coalesce,
    comment,
    encode_message,
    encode_update,
    jittered_retry_ms,
    retry_line,
)

# ---------------------------------------------------------------- encoder byte tables


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "foo"}, b"data: foo\n\n"),
        ({"data": b"foo"}, b"data: foo\n\n"),
        ({"data": "foo", "event": "bar"}, b"event: bar\ndata: foo\n\n"),
        ({"data": "foo", "event": "bar", "id": "xyz"}, b"id: xyz\nevent: bar\ndata: foo\n\n"),
        (
            {"data": "foo", "event": "bar", "id": "xyz", "retry_ms": 1},
            b"id: xyz\nevent: bar\ndata: foo\nretry: 1\n\n",
        ),
        ({"data": "foo", "retry_ms": 0}, b"data: foo\nretry: 0\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": "a\n"}, b"data: a\ndata: \n\n"),
        ({"data": "\n"}, b"data: \ndata: \n\n"),
        ({"data": " lead"}, b"data:  lead\n\n"),
        ({"data": "caf\u00e9"}, b"data: caf\xc3\xa9\n\n"),
        ({"data": b'{"a":1}', "id": ""}, b'id: \ndata: {"a":1}\n\n'),
        ({"data": "x", "id": " 7"}, b"id:  7\ndata: x\n\n"),
        ({"data": "x", "event": ""}, b"event: \ndata: x\n\n"),
        ({"data": "x", "id": "a:b"}, b"id: a:b\ndata: x\n\n"),
        # Unicode line ends: their JSON escapes, so no splitter that honours them breaks data.
        ({"data": '"a\u2028b"'}, b'data: "a\\u2028b"\n\n'),
        ({"data": '"a\u2029b\x85"'}, b'data: "a\\u2029b\\u0085"\n\n'),
        ({"data": '"\u2019\u00e9"'}, b'data: "\xe2\x80\x99\xc3\xa9"\n\n'),
    ],
)
def test_encode_message(kwargs: dict[str, object], expected: bytes) -> None:
    assert encode_message(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "\n", "a\0b", "x\n\nevent: injected"])
@pytest.mark.parametrize("field", ["id", "event"])
def test_encode_message_rejects_line_breaks_and_nul_in_id_and_event(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode_message("x", **{field: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, True, 1.5, "10"])
def test_retry_must_be_a_non_negative_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        encode_message("x", retry_ms=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry"):
        retry_line(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("id", "data", "expected"),
    [
        ("7", b'{"a":1}', b'id: 7\nevent: stats\ndata: {"a":1}\n\n'),
        (
            "0-00000000000000000001",
            b"{}",
            b"id: 0-00000000000000000001\nevent: stats\ndata: {}\n\n",
        ),
        ("", b"{}", b"id: \nevent: stats\ndata: {}\n\n"),
        (
            "7",
            '{"t":"\u2028\u2029\x85\u2027"}'.encode(),
            b'id: 7\nevent: stats\ndata: {"t":"\\u2028\\u2029\\u0085\xe2\x80\xa7"}\n\n',
        ),
    ],
)
def test_encode_update(id: str, data: bytes, expected: bytes) -> None:
    assert encode_update(id, data) == expected


@pytest.mark.parametrize("bad_id", ["1\n", "1\r", "1\0", "1\r\nevent: x"])
def test_encode_update_rejects_bad_ids(bad_id: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode_update(bad_id, b"{}")


@pytest.mark.parametrize("bad_data", [b'{"a":1}\n', b"{}\r{}", b"{}\n\nevent: x"])
def test_encode_update_rejects_multi_line_data(bad_data: bytes) -> None:
    with pytest.raises(ValueError, match="one line"):
        encode_update("1", bad_data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b":\n\n"),
        ("hi", b": hi\n\n"),
        ("a\nb", b": a\n: b\n\n"),
        ("a\r\n\nb", b": a\n:\n: b\n\n"),
    ],
)
def test_comment(text: str, expected: bytes) -> None:
    assert comment(text) == expected


def test_heartbeat_and_retry_line_bytes() -> None:
    assert HEARTBEAT == b":\n\n"
    assert comment() == HEARTBEAT
    assert retry_line(3000) == b"retry: 3000\n\n"


def test_headers_disable_caching_and_proxy_buffering() -> None:
    assert dict(HEADERS) == {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    }


# ---------------------------------------------------------------- encoder, as a browser reads it


def test_heartbeat_comment_and_retry_fire_no_event() -> None:
    parser = EventStreamParser()
    assert parser.feed(retry_line(2500) + HEARTBEAT + comment("ping\npong")) == []
    assert parser.retry == 2500
    assert parser.comments == ["", " ping", " pong"]
    assert parser.idle


def test_stream_of_updates_parses_to_one_message_each() -> None:
    stream = retry_line(1000) + encode_update("1", b'{"n":1}') + HEARTBEAT
    stream += encode_update("2", b'{"n":2}') + encode_message("{}", event="snapshot", id="2")
    assert parse(stream) == [
        SSEMessage('{"n":1}', "stats", "1", 1000),
        SSEMessage('{"n":2}', "stats", "2", 1000),
        SSEMessage("{}", "snapshot", "2", 1000),
    ]


def test_tag_with_sse_syntax_stays_inside_one_data_line() -> None:
    evil = "x\n\nevent: injected\r\ndata: owned\rid: 999\n\n"
    update = {"topic": "t", "event": {"value": 1.0, "tags": {"k": evil}}}
    # Any JSON encoder escapes control characters; this is the property relied on.
    data = json.dumps(update, separators=(",", ":")).encode()
    messages = parse(encode_update("5", data))
    assert len(messages) == 1
    assert messages[0].event == "stats"
    assert messages[0].id == "5"
    assert json.loads(messages[0].data) == update


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_tag_with_a_unicode_line_end_survives_a_splitter_that_honours_them(
    separator: str,
) -> None:
    """orjson writes these raw; a parser splitting lines with `str.splitlines` (as httpx-sse
    did before 0.4.2) must still read one message with the update's JSON."""
    forged = f"{separator}id: forged{separator}event: alert{separator}{separator}data: {{}}"
    update = {"topic": "t", "event": {"value": 1.0, "tags": {forged: forged}}}
    lines = encode_update("5", orjson.dumps(update)).decode().splitlines()
    assert len(lines) == 4 and lines[:2] == ["id: 5", "event: stats"] and lines[3] == ""
    assert orjson.loads(lines[2].removeprefix("data: ")) == update


_no_breaks = st.text().filter(lambda s: not any(c in s for c in "\r\n\0"))


@given(
    data=st.text(),
    event=st.none() | _no_breaks,
    id=st.none() | _no_breaks,
    retry=st.none() | st.integers(min_value=0, max_value=2**63),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_any_valid_message_round_trips_through_a_whatwg_parser(
    data: str, event: str | None, id: str | None, retry: int | None, cuts: list[int]
) -> None:
    wire = encode_message(data, event=event, id=id, retry_ms=retry)
    # Arriving in arbitrary pieces (inside a UTF-8 sequence, between CR and LF) changes nothing.
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    parser = EventStreamParser()
    messages = [m for a, b in pairwise(bounds) for m in parser.feed(wire[a:b])]
    # The stream cannot carry CR in data: every line break comes back as LF; data being JSON,
    # U+2028, U+2029 and U+0085 come back as their JSON escapes.
    expected_data = data.replace("\r\n", "\n").replace("\r", "\n")
    for separator in "\u2028\u2029\x85":
        expected_data = expected_data.replace(separator, f"\\u{ord(separator):04x}")
    assert messages == [SSEMessage(expected_data, event or "message", id or "", retry)]
    assert parser.idle


@given(id=_no_breaks, data=_no_breaks.map(str.encode))
def test_encode_update_is_encode_message_with_event_stats(id: str, data: bytes) -> None:
    assert encode_update(id, data) == encode_message(data, event="stats", id=id)


# ---------------------------------------------------------------- the reference parser itself
# Expected values follow the WHATWG "Interpreting an event stream" steps; several rows are the
# standard's own examples.

M = SSEMessage

PARSER_TABLE: list[tuple[str, bytes, list[SSEMessage]]] = [
    ("spec: empty data lines", b"data\n\ndata\ndata\n\ndata:", [M(""), M("\n")]),
    ("spec: space after colon is optional", b"data:test\n\ndata: test\n\n", [M("test"), M("test")]),
    (
        "spec: id persists, bare id resets, unterminated block dropped",
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n",
        [M("first event", id="1"), M("second event", id="")],
    ),
    ("only one space is stripped", b"data:  two\n\n", [M(" two")]),
    ("data lines join with LF", b"data: a\ndata: b\n\n", [M("a\nb")]),
    ("CRLF line ends", b"data: a\r\ndata: b\r\n\r\n", [M("a\nb")]),
    ("CR line ends", b"data: a\rdata: b\r\r", [M("a\nb")]),
    ("mixed line ends", b"data: a\r\ndata: b\rdata: c\n\n", [M("a\nb\nc")]),
    ("colon in value kept", b"data: a: b\n\n", [M("a: b")]),
    ("event type", b"event: add\ndata: 1\n\n", [M("1", event="add")]),
    ("empty event type is message", b"event:\ndata: 1\n\n", [M("1")]),
    ("event type reset by a dataless block", b"event: x\n\ndata: 1\n\n", [M("1")]),
    ("event type does not carry over", b"event: x\ndata: 1\n\ndata: 2\n\n", [M("1", "x"), M("2")]),
    ("id persists", b"id: 5\ndata: a\n\ndata: b\n\n", [M("a", id="5"), M("b", id="5")]),
    ("id set by a dataless block", b"id: 9\n\ndata: a\n\n", [M("a", id="9")]),
    (
        "id with NUL ignored",
        b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n",
        [M("a", id="1"), M("b", id="1")],
    ),
    ("retry sets reconnection time", b"retry: 1500\n\ndata: a\n\n", [M("a", retry=1500)]),
    ("retry with non-digits ignored", b"retry: 15x\ndata: a\n\n", [M("a")]),
    ("retry with non-ASCII digit ignored", b"retry: \xd9\xa3\ndata: a\n\n", [M("a")]),
    ("empty retry ignored", b"retry:\ndata: a\n\n", [M("a")]),
    ("unknown field ignored", b"foo: bar\ndata: a\n\n", [M("a")]),
    ("field names are case-sensitive", b"Data: a\n\n", []),
    ("comment ignored", b": hi\ndata: a\n:\n\n", [M("a")]),
    ("leading BOM dropped", b"\xef\xbb\xbfdata: x\n\n", [M("x")]),
    ("second BOM is part of the field name", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
    ("invalid UTF-8 is replaced", b"data: \xff\n\n", [M("\ufffd")]),
    ("block without blank line is not dispatched", b"data: a\n", []),
    ("NUL in data kept", b"data: a\x00b\n\n", [M("a\x00b")]),
]


@pytest.mark.parametrize(
    ("stream", "expected"), [row[1:] for row in PARSER_TABLE], ids=[row[0] for row in PARSER_TABLE]
)
def test_parser(stream: bytes, expected: list[SSEMessage]) -> None:
    assert parse(stream) == expected


@pytest.mark.parametrize(
    ("stream", "expected"), [row[1:] for row in PARSER_TABLE], ids=[row[0] for row in PARSER_TABLE]
)
def test_parser_byte_by_byte(stream: bytes, expected: list[SSEMessage]) -> None:
    parser = EventStreamParser()
    assert [m for i in range(len(stream)) for m in parser.feed(stream[i : i + 1])] == expected


def test_parser_joins_crlf_split_across_chunks() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    # Were the LF taken for a second line end, "a" would be dispatched here on its own.
    assert parser.feed(b"\ndata: b\r\n\r\n") == [M("a\nb")]


def test_parser_comments_and_idle() -> None:
    parser = EventStreamParser()
    assert parser.feed(b": one\n:two\ndata: x") == []
    assert parser.comments == [" one", "two"]
    assert not parser.idle
    assert parser.feed(b"\n\n") == [M("x")]
    assert parser.idle


def test_coalesce_joins_small_blocks_and_leaves_big_ones_alone() -> None:
    small, big = b"s" * 10, b"B" * 100
    writes = list(coalesce([small, small, big, small, small, small], limit=25))
    assert writes == [small * 2, big, small * 2, small]
    assert writes[1] is big  # a big block is written as it is, never copied
    assert b"".join(writes) == b"".join([small, small, big, small, small, small])
    assert list(coalesce([])) == []


# ---------------------------------------------------------------- jittered retry:


@given(
    st.integers(min_value=0, max_value=10**7), st.floats(min_value=0, max_value=1, exclude_max=True)
)
def test_a_jittered_retry_is_within_the_setting_and_twice_it(ms: int, draw: float) -> None:
    jittered = jittered_retry_ms(ms, lambda: draw)
    assert ms <= jittered < 2 * ms or jittered == ms == 0


def test_a_jittered_retry_spans_its_whole_range() -> None:
    assert jittered_retry_ms(3000, lambda: 0.0) == 3000
    assert jittered_retry_ms(3000, lambda: 0.5) == 4500
    assert jittered_retry_ms(3000, lambda: 1 - 2**-53) == 5999


def test_jittered_retries_vary_and_spread_over_the_range() -> None:
    drawn = [jittered_retry_ms(3000) for _ in range(2000)]
    assert all(3000 <= ms < 6000 for ms in drawn)
    # Uniform: each sixth of the range gets about a sixth of the draws (~333; far from 0).
    sixths = [sum(1 for ms in drawn if 3000 + 500 * i <= ms < 3500 + 500 * i) for i in range(6)]
    assert min(sixths) > 200, sixths
    assert len(set(drawn)) > 1000


def test_a_jittered_retry_refuses_what_retry_line_refuses() -> None:
    with pytest.raises(ValueError, match="retry"):
        jittered_retry_ms(-1)
