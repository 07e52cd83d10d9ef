"""The load generator's parsers and counters (pure): byte tables, judged by the standards.

The id counter of `--mode ids` must flag missing, duplicate and out-of-order updates, or the
end-to-end benchmark's "every update delivered" means nothing. The event-stream parser is
harness.sse_parser, tested in test_sse.py."""

from __future__ import annotations

import pytest
from bench.common import percentiles
from bench.loadgen.dechunk import Dechunker
from bench.loadgen.http1 import ProtocolError, parse_head
from bench.loadgen.idcount import IdCounter, judge_ids, judge_values
from bench.loadgen.tally import Tally, Verdict


def test_response_head() -> None:
    head = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked"
    )
    assert (head.status, head.version, head.chunked) == (200, "1.1", True)
    assert head.headers["content-type"] == "text/event-stream"
    with pytest.raises(ProtocolError):
        parse_head(b"HTTP/2 200\r\n")


def test_tally_counts() -> None:
    tally = Tally(5)
    results = [tally.record(v) for v in (0, 2, 1, 2, 7, 1.5, True, 3, 4.0)]
    assert results[-1] is True  # the last missing value completes it
    assert (tally.received, tally.distinct, tally.missing) == (9, 5, 0)
    assert (tally.duplicates, tally.out_of_order, tally.unexpected) == (1, 1, 3)


def test_tally_missing() -> None:
    tally = Tally(4)
    for value in (0, 3):
        tally.record(value)
    assert tally.missing == 2


def test_percentiles_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentiles(samples, (0.5, 0.9, 0.99, 1.0)) == [50.0, 90.0, 99.0, 100.0]
    assert percentiles([], (0.5,)) == [None]


# -- the detector --------------------------------------------------------------------------


def update(ms: int, seq: int, value: float | None = None, topic: str = "t") -> bytes:
    """One update frame as pushsvc writes it (docs/design.md, "Update")."""
    update_id = f"0a1b2c3d:{ms}-{seq}"
    event = "null" if value is None else f'{{"value":{value!r},"ts":1.5,"tags":null}}'
    reason = "tick" if value is None else "event"
    data = (
        f'{{"id":"{update_id}","topic":"{topic}","ts":1.5,"reason":"{reason}","event":{event},'
        f'"windows":{{"10s":{{"count":1}}}}}}'
    )
    return f"id: {update_id}\nevent: stats\ndata: {data}\n\n".encode()


OPENING = b'retry: 3000\n\nevent: snapshot\ndata: {"gap":false,"topics":{}}\n\n'


def feed_split(stream: bytes, step: int, *, values: bool = False) -> IdCounter:
    counter = IdCounter(values=values)
    for i in range(0, len(stream), step):
        counter.feed(stream[i : i + step])
    return counter


def verdict(received: int, distinct: int, dup: int, ooo: int, miss: int, unexp: int) -> Verdict:
    return Verdict(received, distinct, dup, ooo, miss, unexp)


@pytest.mark.parametrize(
    ("ids", "expected", "wanted"),
    [
        ([(5, 0), (5, 1), (6, 0)], 3, verdict(3, 3, 0, 0, 0, 0)),
        ([(5, 0), (6, 0)], 3, verdict(2, 2, 0, 0, 1, 0)),  # one missing
        ([(5, 0), (5, 1), (5, 1), (6, 0)], 3, verdict(4, 3, 1, 0, 0, 0)),  # a repeat
        ([(5, 0), (6, 0), (5, 0)], 3, verdict(3, 2, 1, 0, 1, 0)),  # a late repeat: a duplicate
        ([(5, 0), (6, 0), (5, 1)], 3, verdict(3, 3, 0, 1, 0, 0)),  # a late first sighting
        ([(5, 9), (5, 10)], 2, verdict(2, 2, 0, 0, 0, 0)),  # seq compares as a number
        ([(5, 10), (5, 9)], 2, verdict(2, 2, 0, 1, 0, 0)),
        ([(6, 0), (5, 99)], 2, verdict(2, 2, 0, 1, 0, 0)),  # ms before seq
        ([(5, 0), (5, 1), (6, 0), (7, 0)], 3, verdict(4, 4, 0, 0, 0, 1)),  # more than published
        ([], 2, verdict(0, 0, 0, 0, 2, 0)),
    ],
)
def test_detector_counts_ids(ids: list[tuple[int, int]], expected: int, wanted: Verdict) -> None:
    ms_base = 1_763_700_000_000
    stream = OPENING + b"".join(update(ms_base + ms, seq) for ms, seq in ids) + b":\n\n"
    for step in (len(stream), 7, 1):  # reads split anywhere, frames counted once
        counter = feed_split(stream, step)
        assert counter.count == len(ids)
        assert judge_ids(counter.ids(), expected) == wanted
    assert wanted.exact == (wanted == verdict(expected, expected, 0, 0, 0, 0))


@pytest.mark.parametrize(
    "noise",
    [
        b'event: snapshot\nid: 0a1b2c3d:9-9\ndata: {"gap":false}\n\n',  # a snapshot's id
        b"id: 0a1b2c3d:9-9\nevent: other\ndata: x\n\n",
        b":\n\n",  # heartbeat
        b'event: stats\ndata: {"id":"0a1b2c3d:9-9"}\n\n',  # no id line (paced): not counted
        b'id: 0a1b2c3d:9-9\ndata: {"text":"id: 0a1b2c3d:9-9\\nevent: stats\\n"}\n\n',
        b"id: 0A1B:9-9\nevent: stats\ndata: {}\n\n",  # not an id pushsvc could issue
        b"id: 0a1b2c3d:9-9\nevent: stats\ndata: {}\n",  # never ended: never counted
    ],
)
def test_detector_counts_only_update_frames(noise: bytes) -> None:
    stream = OPENING + update(10, 0) + noise
    for step in (len(stream), 1):
        counter = feed_split(stream, step)
        assert counter.count == 1
        assert counter.ids().tolist() == [[10, 0]]


def test_detector_reads_event_values() -> None:
    frames = [update(1, 0, 0.0), update(1, 1, 1.0), update(1, 2, 1.0), update(1, 3, 3.5),
              update(1, 4, -1.0), update(1, 5), update(1, 6, 2.0), update(1, 7, 4.0)]  # fmt: skip
    stream = OPENING + b"".join(frames)
    for step in (len(stream), 5):
        counter = feed_split(stream, step, values=True)
        assert counter.count == 8
        assert counter.values() == [b"0.0", b"1.0", b"1.0", b"3.5", b"-1.0", b"2.0", b"4.0"]
        # 0, 1, 2 each once (1 repeated); 3.5, -1.0, 4.0 (out of 0..4) and a tick are unexpected.
        assert judge_values(counter.values(), counter.count, 4) == verdict(8, 3, 1, 0, 1, 4)


def test_detector_on_a_messages_stream_counts_message_frames_and_their_values() -> None:
    """A messages stream: `event: message` frames under update ids, each with the published
    data, whose value the reference reads; its head and a gap are no message."""

    def message(seq: int, value: int) -> bytes:
        return b'id: 0a1b2c3d:7-%d\nevent: message\ndata: {"value":%d,"pad":"x"}\n\n' % (seq, value)

    stream = (
        b"retry: 3000\n\nid: 0a1b2c3d:7-0\n\n" + message(1, 0) + update(7, 2, 5.0)
        + b'id: 0a1b2c3d:7-3\nevent: gap\ndata: {"topics":["t"]}\n\n' + message(4, 1)
    )  # fmt: skip
    for step in (len(stream), 3):
        counter = IdCounter(values=True, messages=True)
        for i in range(0, len(stream), step):
            counter.feed(stream[i : i + step])
        assert counter.ids().tolist() == [[7, 1], [7, 4]]
        assert counter.values() == [b"0", b"1"]


def test_value_order_is_judged_for_first_sightings() -> None:
    values = [b"0.0", b"2.0", b"1.0", b"2.0", b"3.0"]
    assert judge_values(values, 5, 4) == verdict(5, 4, 1, 1, 0, 0)


def test_ids_convert_in_blocks_without_losing_any() -> None:
    # Enough ids to cross the text-to-integer conversion threshold several times.
    stream = b"".join(update(1_763_700_000_000 + i // 7, i % 7) for i in range(30_000))
    counter = feed_split(stream, 65_536)
    ids = counter.ids()
    assert ids.shape == (30_000, 2)
    assert ids[-1].tolist() == [1_763_700_000_000 + 29_999 // 7, 29_999 % 7]
    assert judge_ids(ids, 30_000).exact


# -- the chunk decoder ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "payload", "done"),
    [
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", True),
        (b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
         b"hello 0123456789", True),
        (b"3\r\nabc\r\n", b"abc", False),
        (b"10\r\n0123456789abcdef\r\n", b"0123456789abcdef", False),  # hex size
    ],
)  # fmt: skip
def test_dechunker(body: bytes, payload: bytes, done: bool) -> None:
    for step in (len(body), 3, 1):
        decoder = Dechunker()
        pieces = [p for i in range(0, len(body), step) for p in decoder.feed(body[i : i + step])]
        assert b"".join(pieces) == payload
        assert decoder.done == done


@pytest.mark.parametrize(
    "body",
    [
        b"x\r\nabc\r\n",  # size not hex
        b"3\nabc\r\n",  # bare LF after the size
        b"3\r\nabcX\r\n",  # data longer than its size
        b"0\r\n\r\nmore",  # bytes after the last chunk
        b"1" * 2000,  # a size line that never ends
    ],
)
def test_dechunker_refuses_bad_framing(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        Dechunker().feed(body)


def test_dechunker_passes_a_read_inside_one_chunk_through_uncopied() -> None:
    decoder = Dechunker()
    assert decoder.feed(b"100000\r\n") == []
    read = b"x" * 4096
    (piece,) = decoder.feed(read)
    assert piece is read
