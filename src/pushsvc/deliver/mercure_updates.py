"""Mercure updates on pushsvc's core: where an update is kept, and what a subscriber receives.

A Mercure update is one pushsvc message, so it has every promise a message has (the log,
exactly once, history, Redis and Cluster, compression, byte bounds, statistics). It is kept
in the pushsvc topic named from its FIRST topic IRI (`topic_name`), readable in listings,
`/stats` and the dashboard; the message's data is the update's envelope (`envelope`): all
its topics, its data as the publisher sent it, whether it is private, its id and `retry`.

A Mercure subscriber streams the pattern `mercure.*` and receives each update whose topics
its selectors match (one of them is enough, so an update with several topics arrives once),
and a private one only when its token may receive one of them (`MercureView`). What it
receives is written as the Mercure hub writes it: `id:` the update's id (the publisher's own,
else a `urn:uuid:`), `event:` its type unless `message`, `retry:`, and its data one `data:`
line per line. The view's key names the selectors and the grant, so streams with equal ones
share every rendering (made once per update, not once per subscriber).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pushsvc.deliver.mercure_input import message_type
from pushsvc.deliver.mercure_selectors import SelectorSet

PREFIX = "mercure."
PATTERN = "mercure.*"
"""The pushsvc selector a Mercure subscriber streams: every Mercure update's topic."""
DEFAULT_TYPE = "message"
_HASH_CHARS = 8
_MAX_SLUG = 128 - len(PREFIX) - 1 - _HASH_CHARS
_UNNAMEABLE = re.compile(r"[^A-Za-z0-9._:-]+")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LINES = re.compile(r"\r\n|\r|\n")


def topic_name(iri: str) -> str:
    """The pushsvc topic an update whose first topic is `iri` is kept in: `mercure.`, the IRI
    made a name (scheme dropped, every run of other characters a dot, cut to fit), `-` and
    the first 8 hex digits of its SHA-256 (two IRIs that read alike stay apart)."""
    digest = hashlib.sha256(iri.encode()).hexdigest()[:_HASH_CHARS]
    slug = _UNNAMEABLE.sub(".", _SCHEME.sub("", iri)).strip(".:-")[:_MAX_SLUG].rstrip(".:-")
    return f"{PREFIX}{slug or 'topic'}-{digest}"


def envelope(
    topics: Sequence[str],
    data: str,
    *,
    private: bool,
    update_id: str,
    retry: int | None,
    mercure_type: str | None = None,
) -> dict[str, Any]:
    """The pushsvc message data a Mercure update is kept as. `mercure_type` is kept only when
    the message's own type cannot be it (`mercure_input.message_type`)."""
    kept: dict[str, Any] = {
        "topics": list(topics),
        "data": data,
        "private": private,
        "id": update_id,
        "retry": retry,
    }
    if mercure_type is not None and message_type(mercure_type) != mercure_type:
        kept["type"] = mercure_type
    return kept


def sse(counted_as: str, kept: dict[str, Any]) -> bytes:
    """An update as a Mercure hub writes it on a subscriber's stream: its type the one its
    envelope keeps, else its message's."""
    event = kept.get("type")
    if not isinstance(event, str):
        event = counted_as
    lines = [f"id: {kept['id']}"]
    if event != DEFAULT_TYPE:
        lines.append(f"event: {event}")
    if kept.get("retry") is not None:
        lines.append(f"retry: {kept['retry']}")
    lines.extend(f"data: {line}" for line in _LINES.split(kept["data"]))
    return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True)
class MercureView:
    """What one subscriber may receive: the updates its selectors match, and the private
    ones `may_receive` allows (None: anonymous, no private update). It takes the grant's
    check, not the grant, as the token is read above this layer (`security/`)."""

    selectors: SelectorSet
    may_receive: Callable[[Sequence[str]], bool] | None = field(compare=False)
    rights: str
    """Names what `may_receive` allows (the grant's subscribe selectors): equal rights, equal
    answers."""
    key: str = field(init=False, compare=False)
    """Equal for subscribers that receive alike (their renderings are shared)."""

    def __post_init__(self) -> None:
        chosen = "|".join(f"{s.kind}:{s.text}" for s in self.selectors.selectors)
        object.__setattr__(self, "key", f"mercure={chosen};may={self.rights}")

    def render(self, message_type: str, data: bytes) -> bytes:
        """`data` (an envelope) as this subscriber's stream writes it; b"" when the update is
        not for it."""
        try:
            kept = orjson.loads(data)
            topics = kept["topics"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return b""  # not a Mercure update (a message posted to a mercure.* topic by hand)
        if not isinstance(topics, list) or not self.selectors.matches_any(topics):
            return b""
        if kept.get("private") and (self.may_receive is None or not self.may_receive(topics)):
            return b""
        return sse(message_type, kept)
