"""The application backend's answer body, read within a byte bound before and after any
decoding (`pushsvc.security.backend_auth`).

pushsvc asks for no compression (`Accept-Encoding: identity`): a grant is a few selectors. A
backend that compresses anyway is still read, gzip or deflate, but never through httpx's own
decoders, which inflate a whole received chunk at once: a 64 KiB chunk of a gzip bomb is some
64 MB before any bound could be checked. Here the raw bytes are read with `iter_raw` and
counted, and each is inflated with `max_length`, so neither the bytes received nor the bytes
decoded ever pass the bound by more than one read. Any other encoding is refused: no answer
pushsvc did not ask for is decoded by a codec it cannot bound.
"""

from __future__ import annotations

import zlib

import httpx

ACCEPT_ENCODING = "identity"
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS, "x-gzip": zlib.MAX_WBITS | 16}


class UndecodableAnswer(Exception):
    """The answer's encoding is one pushsvc does not decode, or its bytes are not what the
    encoding says; the message says which (never the body)."""


def read_bounded(response: httpx.Response, limit: int) -> bytes | None:
    """The decoded body of `response`, or None when it is longer than `limit` bytes, raw or
    decoded (read no further than that). UndecodableAnswer for an encoding it cannot bound."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        received = bytearray()
        for chunk in response.iter_raw():
            received += chunk
            if len(received) > limit:
                return None
        return bytes(received)
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UndecodableAnswer(f"a Content-Encoding it cannot read: {encoding[:40]!r}")
    inflate = zlib.decompressobj(wbits)
    raw = 0
    decoded = bytearray()
    try:
        for chunk in response.iter_raw():
            raw += len(chunk)
            if raw > limit:
                return None
            decoded += inflate.decompress(chunk, limit + 1 - len(decoded))
            if len(decoded) > limit or inflate.unconsumed_tail:
                return None  # more than `limit` decoded: the rest is not inflated
        decoded += inflate.flush()  # all input consumed within the bound: little or nothing
    except zlib.error as exc:
        raise UndecodableAnswer(f"a {encoding} body that does not inflate ({exc})") from None
    if len(decoded) > limit:
        return None
    if not inflate.eof:
        raise UndecodableAnswer(f"a {encoding} body cut short")
    return bytes(decoded)
