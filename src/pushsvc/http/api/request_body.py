"""A producer's request body, read whole or refused whole (413) past `--max-body`, whatever its
framing.

* `Content-Length` over the limit: refused before a byte is read.
* Chunked: the server's input read until its end or one byte past the limit. Not through
  `request.stream`: capped at the limit (`MAX_CONTENT_LENGTH`), it never returns more, so one
  `read(limit + 1)` took the part that fit for the whole body; and a read may return less than
  asked, so one read is never enough. The rest, unread, pywsgi discards after the answer.
* Neither (HTTP/1.0 style, the body ends where the client closes its side): pywsgi reads
  such a body as empty, so it is read here, from the connection, up to its end. Only on a
  connection that closes after the request (HTTP/1.0 without keep-alive, or
  `Connection: close`): on one that stays open, HTTP/1.1 gives such a request no body, and
  anything after its head is the next request, so the answer is `411 length_required`.

Past the limit nothing more is read, in any framing: the connection closes after the 413,
lingering for a moment first so that the answer reaches a client still sending (`pushsvc.
server`). (It once drained the rest before answering: a client that never stopped sending
was read for ever.) The body's deadlines (`--body-timeout`, and a third of it between
pieces) bound every read: past them the answer is `408 request_timeout` and the connection closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pushsvc.errors import IncompleteBody, LengthRequired, PayloadTooLarge, RequestTimeout
from pushsvc.gevent_private import ENVIRON_KEY, unframed_input
from pushsvc.http.body_deadline import BodyTooSlow

_READ_SIZE = 1 << 16


def read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    """The body of the request `environ` describes, at most `limit` bytes; PayloadTooLarge
    past it, LengthRequired where its end cannot be known."""
    try:
        return _read(environ, limit)
    except PayloadTooLarge:
        handler = environ.get(ENVIRON_KEY)
        if handler is not None:
            handler.refuse_body()
        raise
    except BodyTooSlow:
        raise RequestTimeout("the request body did not arrive in time (--body-timeout)") from None
    except OSError:
        raise IncompleteBody("the connection ended before the request body did") from None


def _read(environ: Mapping[str, Any], limit: int) -> bytes:
    content_length = _content_length(environ)
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(_too_large(limit))
    raw = unframed_input(environ)
    if raw is not None:
        if not _closes_after(environ):
            raise LengthRequired(
                "a body needs Content-Length or Transfer-Encoding: chunked (or a connection "
                "that closes after it)"
            )
        return _read_capped(raw, limit)
    if content_length is None and not environ.get("wsgi.input_terminated"):
        # A WSGI server that does not end the input itself: nothing can be read safely.
        return b""
    return _read_capped(environ["wsgi.input"], limit)


def _read_capped(stream: Any, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part: bytes = stream.read(min(_READ_SIZE, limit + 1 - size))
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
    raise PayloadTooLarge(_too_large(limit))


def _too_large(limit: int) -> str:
    return f"the body is larger than {limit} bytes (--max-body)"


def _content_length(environ: Mapping[str, Any]) -> int | None:
    text = environ.get("CONTENT_LENGTH")
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _closes_after(environ: Mapping[str, Any]) -> bool:
    tokens = {t.strip().lower() for t in str(environ.get("HTTP_CONNECTION", "")).split(",")}
    if environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens
