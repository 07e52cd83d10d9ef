"""Update ids: `{epoch}:{ms}-{seq}`.

The epoch is a short random hex token naming one history; it changes when the
history is reset (a new memory broker, Redis restarted empty), so an id from a
lost history is recognisably foreign instead of silently pointing somewhere
else. `{ms}-{seq}` is a Redis stream id: two unsigned 64-bit integers, compared
as a pair. Ids of one epoch are strictly increasing in emission order; ids of
different epochs are not comparable.

Ids reach us back from clients (the `Last-Event-ID` header), so `parse_id`
accepts only the canonical form and returns None for everything else. The
canonical form has no CR, LF, NUL or space, so it is safe as an SSE `id:` field.
"""

from __future__ import annotations

import re
import secrets

_U64 = 2**64 - 1
_EPOCH = re.compile(r"[0-9a-f]{1,16}")
# Canonical decimal only (no sign, no leading zeros), so one id has one spelling.
_ID = re.compile(r"([0-9a-f]{1,16}):(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")
_MAX_LEN = 16 + 1 + 20 + 1 + 20


def new_epoch() -> str:
    """A fresh epoch token: 8 hex digits."""
    return secrets.token_hex(4)


def format_id(epoch: str, ms: int, seq: int) -> str:
    if not _EPOCH.fullmatch(epoch):
        raise ValueError(f"epoch must be 1-16 lowercase hex digits, got {epoch!r}")
    if not (0 <= ms <= _U64 and 0 <= seq <= _U64):
        raise ValueError(f"ms and seq must be unsigned 64-bit integers, got {ms}-{seq}")
    return f"{epoch}:{ms}-{seq}"


def parse_id(text: str) -> tuple[str, int, int] | None:
    """(epoch, ms, seq), or None when `text` is not an id we could have issued."""
    if not isinstance(text, str) or len(text) > _MAX_LEN:
        return None
    match = _ID.fullmatch(text)
    if match is None:
        return None
    epoch, ms, seq = match.group(1), int(match.group(2)), int(match.group(3))
    if ms > _U64 or seq > _U64:
        return None
    return epoch, ms, seq


def id_key(update_id: str) -> tuple[int, int]:
    """Sort key for ids of one epoch: `id_key(a) < id_key(b)` iff a was emitted first.

    Raises ValueError for a malformed id. It ignores the epoch; comparing ids of
    two epochs is meaningless, so check `parse_id(...)[0]` first when that can happen.
    """
    parsed = parse_id(update_id)
    if parsed is None:
        raise ValueError(f"not an update id: {update_id!r}")
    return parsed[1], parsed[2]
