"""Idempotent publishing, the pure part: the `Idempotency-Key` rule and what repeats compare.

A key is 1-128 visible ASCII characters (VCHAR, %x21-7E), taken as it is sent, like
Stripe's. The IETF draft (httpapi-idempotency-key-header) writes it as a structured-field
string, `"..."`: such a key is taken with its quotes, which is harmless, since a retry sends
the same bytes.

A repeat is compared by a digest of the request as sent: the media type its body is parsed as
and the raw body. Not by the parsed events: an event without `ts` gets the time the server
received it, which differs on every attempt of the same request.

Keys are bounded in number per partition (`MAX_KEYS_PER_PARTITION`), and so in bytes (a key,
its topic, the digest and the answer are bounded each). Past it, the keys nearest the end of
their window are forgotten early, counted (`Appended.evicted`): a flood of fresh keys costs
its writer a shorter window for the oldest keys, never an accepted event, a refused request
or memory without end. Refusing new keys instead would let the same flood refuse every
producer that retries safely (the clients send a key with every batch).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pushsvc.errors import IdempotencyKeyReused, InvalidIdempotencyKey

IDEMPOTENCY_WINDOW_US = 600_000_000
"""How long a key is remembered: 10 minutes, as the outbox reader may also be down that long
between appending a row and deleting it and still append it once. Fixed, not a setting: a
client's retries of one batch come within seconds to minutes (Stripe keeps keys a day for
payments; a stream's updates a minute late are news no longer), and a partition's keys are
bounded in number (`MAX_KEYS_PER_PARTITION`) whatever the window."""

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
"""Sent as `Idempotent-Replayed: true` on an answer that repeats an earlier request's."""
MAX_KEY_LENGTH = 128
KEY_PATTERN = rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}"
DIGEST_BYTES = 32
MAX_KEYS_PER_PARTITION = 100_000
"""The most keys a partition remembers: 10 minutes of 166 keyed POSTs a second to one
partition's topics. A key and its topic are 128 characters at most, so this bounds the bytes
too (docs/reliability.md: some 43 MB of Redis with UUID keys, under 90 MB at worst)."""

_KEY = re.compile(KEY_PATTERN)


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An append made idempotent: its key, the digest of the request that carried it
    (`request_digest`), and how long the broker remembers the key (ms, at least 1)."""

    key: str
    digest: bytes
    window_ms: int

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_BYTES:
            raise ValueError(f"a digest has {DIGEST_BYTES} bytes, not {len(self.digest)}")
        if self.window_ms < 1:
            raise ValueError(f"the window must be at least 1 ms, got {self.window_ms}")


def check_key(values: Sequence[str]) -> str | None:
    """The key a request's `Idempotency-Key` header lines give (None for no header), or
    InvalidIdempotencyKey: an empty, too long or non-visible-ASCII value, or two lines."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKey(f"give {HEADER} once, not {len(values)} times")
    key = values[0]
    if not _KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters "
            f"(got {len(key)} characters)"
        )
    return key


def request_digest(media_type: str, body: bytes) -> bytes:
    """What a repeat of a request must match: sha256 of its media type and raw body."""
    return hashlib.sha256(media_type.encode() + b"\n" + body).digest()


def window_ms(window_us: int) -> int:
    """A window in µs as the broker keeps it: whole milliseconds, rounded up, at least 1."""
    return max(1, -(-window_us // 1000))


def key_reused() -> IdempotencyKeyReused:
    """The error for a key repeated with another body, whichever broker finds it."""
    return IdempotencyKeyReused(
        f"this {HEADER} was used for another body on this topic within the idempotency "
        "window; send a new key with a new batch"
    )
