"""The load generator's parsers and counters (pure): byte tables, judged by the standards.

The event-stream parser is pushsvc.sse_parser, tested in test_sse.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from loadgen.dechunk import Dechunker
from loadgen.http1 import ProtocolError, parse_head
from loadgen.tally import Tally, percentiles


def test_chunked_bytewise_and_whole() -> None:
    body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"
    for step in (1, 3, len(body)):
        decoder = Dechunker()
        out = b"".join(
            b"".join(decoder.feed(body[i : i + step])) for i in range(0, len(body), step)
        )
        assert out == b"hello 0123456789"
        assert decoder.done


@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nhelloXX\r\n", b"0\r\n\r\nmore"])
def test_chunked_rejects(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        Dechunker().feed(bad)


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
