"""The Mercure specification's rules for what a publisher and a subscriber send (pure).

Every rule here is one the specification states as a MUST with a `400`:

* a form (a publication's body, a subscription's query) is `application/x-www-form-urlencoded`
  whose names and values are UTF-8 once percent-decoded (`parse_form`): a value that is not
  is refused, never read with replacement characters (which would keep `%FF%FE` as another
  text than the one sent);
* a topic, a matcher, an id and a type hold no control character (C0, DEL, C1) and no format
  character (Unicode category `Cf`: bidirectional and zero-width controls), which are
  invisible and let one identifier pass for another (`forbidden`);
* an id does not start with `#` (the hub's own ids may) and is not `earliest`;
* a type is any other text: `Book Updated`, `café`, `user/created`. pushsvc's messages take a
  narrower type (an SSE event name of 64 ASCII characters at most, counted per type in the
  statistics), so a type that is not one is kept in the update's envelope and its message
  counted under a name made from it (`message_type`), as a topic's IRI is (`topic_name`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import unquote_to_bytes

from pushsvc.core.event import MESSAGE_TYPE

RESERVED_ID = "earliest"
_HASH_CHARS = 8
_MAX_TYPE_SLUG = 64 - 1 - _HASH_CHARS
_UNNAMEABLE = re.compile(r"[^A-Za-z0-9._:-]+")


def forbidden(text: str) -> str | None:
    """The first control (C0, DEL, C1) or format (Cf) character of `text`, else None."""
    for char in text:
        if char < " " or "\x7f" <= char <= "\x9f":
            return char
        if char > "\x9f" and unicodedata.category(char) == "Cf":
            return char
    return None


def check_chars(what: str, text: str) -> None:
    """ValueError, naming the character, when `text` holds one `forbidden` refuses."""
    char = forbidden(text)
    if char is not None:
        raise ValueError(f"{what} contains the control or format character U+{ord(char):04X}")


def check_id(update_id: str) -> None:
    """A publisher's own id: no control or format character, no leading `#`, not `earliest`."""
    check_chars("an id", update_id)
    if update_id.startswith("#"):
        raise ValueError("an id may not start with # (the hub's own ids may)")
    if update_id == RESERVED_ID:
        raise ValueError("earliest is reserved: a subscriber asks for every update kept with it")


def message_type(mercure_type: str) -> str:
    """The pushsvc message type an update of `mercure_type` is counted under: the type itself
    when pushsvc's messages take it, else a name made from it (every run of other characters
    a dot, cut to fit, then `-` and the first 8 hex digits of its SHA-256)."""
    if MESSAGE_TYPE.fullmatch(mercure_type):
        return mercure_type
    digest = hashlib.sha256(mercure_type.encode()).hexdigest()[:_HASH_CHARS]
    slug = _UNNAMEABLE.sub(".", mercure_type).strip(".:-")[:_MAX_TYPE_SLUG].rstrip(".:-")
    return f"{slug or 'type'}-{digest}"


def parse_form(raw: bytes) -> list[tuple[str, str]]:
    """The name/value pairs of an `application/x-www-form-urlencoded` body or query, as the
    URL standard parses it (`&` between pairs, the first `=` between name and value, `+` a
    space, then percent-decoding), each name and value decoded as UTF-8. ValueError for a
    name or value that is not UTF-8."""
    pairs: list[tuple[str, str]] = []
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        pairs.append((_decoded(name, "a name"), _decoded(value, "a value")))
    return pairs


def _decoded(raw: bytes, what: str) -> str:
    octets = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw[:60].decode("latin-1")
        raise ValueError(f"{what} is not UTF-8 once percent-decoded: {shown!r}") from None
