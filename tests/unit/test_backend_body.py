"""The backend's answer read within a byte bound (`pushsvc.security.backend_body`): before
and after decoding, gzip and deflate inflated no further than the bound, other encodings and
broken ones refused."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import httpx
import pytest

from pushsvc.security.backend_body import UndecodableAnswer, read_bounded

GRANT = b'{"ttl": 60, "pushsvc": {"subscribe": ["orders"]}}'


def _answer(body: bytes, encoding: str | None = None) -> httpx.Response:
    headers = {} if encoding is None else {"Content-Encoding": encoding}
    # Chunks as a socket would give them, not one piece.
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    return httpx.Response(200, headers=headers, content=iter(chunks))


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [(None, bytes), ("identity", bytes), ("gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_an_answer_within_the_bound_is_read_decoded(
    encoding: str | None, encode: Callable[[bytes], bytes]
) -> None:
    assert read_bounded(_answer(encode(GRANT), encoding), 1000) == GRANT


def test_an_answer_over_the_bound_is_none_raw_or_decoded() -> None:
    assert read_bounded(_answer(b"x" * 1001), 1000) is None
    assert read_bounded(_answer(b"x" * 1000), 1000) == b"x" * 1000
    bomb = gzip.compress(b" " * 50_000_000)  # 50 MB in 50 KB
    assert read_bounded(_answer(bomb, "gzip"), 65_536) is None
    assert read_bounded(_answer(gzip.compress(b"y" * 1001), "gzip"), 1000) is None
    assert read_bounded(_answer(gzip.compress(b"y" * 1000), "gzip"), 1000) == b"y" * 1000


@pytest.mark.parametrize(
    ("body", "encoding", "said"),
    [
        (GRANT, "br", "cannot read: 'br'"),
        (GRANT, "gzip, gzip", "cannot read"),
        (b"not gzip at all", "gzip", "does not inflate"),
        (gzip.compress(GRANT, mtime=0)[:-12], "gzip", "cut short"),
    ],
)
def test_an_encoding_it_cannot_bound_or_a_broken_one_is_refused(
    body: bytes, encoding: str, said: str
) -> None:
    with pytest.raises(UndecodableAnswer, match=said):
        read_bounded(_answer(body, encoding), 65_536)
