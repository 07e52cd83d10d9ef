"""Server-Sent Events wire encoding (pure, on the hot path of every stream).

Lines end with LF only; every message ends with a blank line. A value is
written after `field: `, so a parser that strips one space after the colon
gets it back exactly, leading spaces included. `id` and `event` must not
contain CR, LF or NUL: a line break would let the value inject fields, and a
NUL makes browsers ignore the id. Data cannot carry CR: any line break in it
(CRLF, CR or LF) becomes a new `data:` line, read back as LF.

Data is JSON, and U+2028, U+2029 and U+0085 in it (which JSON encoders such as orjson write
raw, in producers' tag values) are written as the JSON escapes `\u2028`, `\u2029`, `\u0085`:
the same JSON to any parser, but no bytes that a line splitter which breaks on Unicode line
ends (Python's `str.splitlines`, httpx-sse before 0.4.2) could take for the end of a line and
read the rest as SSE fields of the producer's choosing. Browsers split on CR and LF only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

CONTENT_TYPE = "text/event-stream"
HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", CONTENT_TYPE),
    ("Cache-Control", "no-store"),
    # nginx would otherwise buffer the stream and hold updates back.
    ("X-Accel-Buffering", "no"),
)

HEARTBEAT = b":\n\n"
"""A comment: keeps proxies from timing out an idle stream; EventSource ignores it."""

UPDATE_EVENT = "stats"
POINT_EVENT = "point"
ALERT_EVENT = "alert"
SNAPSHOT_EVENT = "snapshot"


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"an SSE {name} must not contain CR, LF or NUL: {value[:64]!r}")


def escape_line_ends(data: bytes) -> bytes:
    """JSON `data` with U+2028, U+2029 and U+0085 as JSON escapes (see above); what builds a
    `data:` line itself, not through `encode_message` or `encode_update`, passes it here."""
    # Checked before any replace, as cheaply as can be: most data is ASCII (one pass, a word at
    # a time), and in the rest a lead byte found by memchr picks the replaces needed. 0xE2 and
    # 0xC2 only ever lead a character, so nothing else encodes to these sequences (measured:
    # docs/performance.md, 'Small costs behind the code's shape').
    if data.isascii():
        return data
    if b"\xe2" in data:
        data = data.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    if b"\xc2" in data:
        data = data.replace(b"\xc2\x85", b"\\u0085")
    return data


def _data_lines(data: bytes) -> list[bytes]:
    # Not bytes.splitlines(): it drops a trailing empty line, which is data.
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")


def encode_message(
    data: bytes | str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One complete SSE message; ValueError if `id` or `event` could break the framing."""
    if isinstance(data, str):
        data = data.encode()
    data = escape_line_ends(data)
    parts: list[bytes] = []
    if id is not None:
        _check_field("id", id)
        parts.append(b"id: " + id.encode() + b"\n")
    if event is not None:
        _check_field("event", event)
        parts.append(b"event: " + event.encode() + b"\n")
    if b"\n" in data or b"\r" in data:
        parts.extend(b"data: " + line + b"\n" for line in _data_lines(data))
    else:
        parts.append(b"data: " + data + b"\n")
    if retry_ms is not None:
        parts.append(b"retry: %d\n" % _check_retry(retry_ms))
    parts.append(b"\n")
    return b"".join(parts)


def encode_update(id: str, data: bytes, event: str = UPDATE_EVENT) -> bytes:
    """An `event: stats` update (or another of pushsvc's numbered messages: `event`, one of
    ours); `data` must be one line (pushsvc's compact JSON; Unicode line ends escaped here).

    Called once per update, whatever the number of subscribers.
    """
    if "\n" in id or "\r" in id or "\0" in id:
        raise ValueError(f"an SSE id must not contain CR, LF or NUL: {id[:64]!r}")
    if b"\n" in data or b"\r" in data:
        raise ValueError("update data must be one line")
    data = escape_line_ends(data)
    lines = _EVENT_LINES.get(event)
    if lines is None:
        _check_field("event", event)
        lines = b"\nevent: " + event.encode() + b"\ndata: "
    return b"id: " + id.encode() + lines + data + b"\n\n"


def id_line(id: str) -> bytes:
    """An `id:` line alone, to put before a message encoded without one (`encode_message`
    with no `id`): how a stream writes an id of its own before bytes shared by every stream.
    `id` is pushsvc's (an update id or a cursor's text, which hold no CR, LF or NUL)."""
    return b"id: " + id.encode() + b"\n"


_EVENT_LINES = {
    name: b"\nevent: " + name.encode() + b"\ndata: "
    for name in (UPDATE_EVENT, POINT_EVENT, ALERT_EVENT, SNAPSHOT_EVENT)
}


def retry_line(ms: int) -> bytes:
    """Set the client's reconnection delay; a message of its own, no event fires."""
    return b"retry: %d\n\n" % _check_retry(ms)


def jittered_retry_ms(ms: int, draw: Callable[[], float] = random.random) -> int:
    """A stream's `retry:`, drawn uniformly in [ms, 2 * ms) (`draw`: a float in [0, 1)).

    When a web process restarts, every EventSource it served reconnects after the `retry:` it
    was sent; with one value for all they come back in the same instant and each asks for a
    replay (a reconnect storm). Drawn per stream, they come back spread over a window as wide
    as the setting, like gRPC's and Centrifugo's jittered backoff. Upwards, not around the
    setting: `--retry` stays the shortest wait any client is told, so an operator who set it
    to keep clients away from a restarting server keeps that promise; the mean is 1.5 * ms.
    """
    ms = _check_retry(ms)
    return ms + min(int(draw() * ms), ms - 1) if ms else 0


def comment(text: str = "") -> bytes:
    """A comment message, one `:` line per line of `text`; `comment()` is HEARTBEAT."""
    lines = _data_lines(text.encode())
    return b"".join(b": " + line + b"\n" if line else b":\n" for line in lines) + b"\n"


def _check_retry(ms: int) -> int:
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise ValueError(f"retry must be a non-negative integer of milliseconds, not {ms!r}")
    return ms


# Small blocks are joined into one write (fewer syscalls and chunk headers); big ones go as they
# are. Joining a backlog of big blocks copied every byte once more per client, and a write of
# tens of megabytes runs far out of the CPU caches: measured in docs/journal/publish-path.md.
COALESCE_BYTES = 64 * 1024


def coalesce(blocks: Sequence[bytes], limit: int = COALESCE_BYTES) -> Iterator[bytes]:
    """`blocks` as writes: consecutive small ones joined up to about `limit` bytes, each big
    one (>= `limit`) alone and uncopied."""
    pending: list[bytes] = []
    size = 0
    for block in blocks:
        if pending and size + len(block) > limit:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, size = [], 0
        pending.append(block)
        size += len(block)
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)
