"""Mercure's active subscriptions (the specification's "Active Subscriptions"): what a
subscription is called, the documents the hub publishes and lists, and one process's bounded
registry of its own (pure).

A Mercure connection holds one subscription per matcher it asked with (`match`,
`match_urlpattern`), all under one subscriber id the hub makes (`urn:uuid:`, never the
client's word). Each has a path under the hub's: `{hub}/subscriptions/{match_type}/{match}/
{subscriber}`, each variable percent-encoded once, whole (`quote(..., safe="")`). That path
is at once the topic of its subscription events, the `id` of its document and the URL the
subscriptions API answers it at, so one token matcher covers the event and the resource.

The registry holds each subscription's document already serialized: a listing is a join of
bytes up to a byte budget, never a serialization of every subscriber. Its size is bounded
(`max_tracked`): past it a new Mercure connection is refused (`TooManySubscriptions`, a 503
with `Retry-After`) rather than served untracked (the specification has every subscription
announced). Documents are indexed by their matcher's collection path, so a listing of one
matcher reads only its own.

Where the subscription events are kept: one pushsvc topic, `SUBSCRIPTIONS_TOPIC`, whatever
their Mercure topic (a topic per subscriber would make a pushsvc topic, with its state and
listings, per connection), outside the `mercure.*` every Mercure stream reads. A stream reads
it too only when its selectors may select a path of the hub's namespace (`may_select_hub`):
otherwise N connections would cost every one of N streams N events to look at and drop, and
a reconnect storm would grow with the square of the subscribers.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
from urlpattern import URLPattern

from pushsvc.deliver.mercure_selectors import SelectorSet

SUBSCRIPTIONS_TOPIC = "mercure-subscriptions"
"""The pushsvc topic every subscription event is kept in: outside `mercure.*`, so that only
the Mercure streams that may receive one stream it at all (`may_select_hub`)."""
EVENT_TYPE = "mercure"
"""The SSE `event:` of subscription events, reserved: no publisher may use it."""
DOCUMENT_TYPE = "subscription"
COLLECTION_TYPE = "subscriptions"
MAX_LISTING_BYTES = 1 << 20
"""The subscription documents one API answer carries at most (bytes): past it the answer is
cut and says so (`"truncated": true`), as the specification lets a hub do."""
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def encode(value: str) -> str:
    """One variable of the path, percent-encoded once as a whole (RFC 6570 `{var}`)."""
    return quote(value, safe="")


def subscription_path(hub_path: str, match_type: str, match: str, subscriber: str) -> str:
    return f"{collection_path(hub_path, match_type, match)}/{encode(subscriber)}"


def collection_path(hub_path: str, match_type: str | None = None, match: str | None = None) -> str:
    """`{hub}/subscriptions`, or its collection of one matcher."""
    base = f"{hub_path}/subscriptions"
    if match_type is None or match is None:
        return base
    return f"{base}/{match_type}/{encode(match)}"


def document(
    path: str, match_type: str, match: str, subscriber: str, *, active: bool, payload: Any
) -> dict[str, Any]:
    """A subscription's document, as its events carry it and the API answers it."""
    doc: dict[str, Any] = {
        "id": path,
        "type": DOCUMENT_TYPE,
        "match_type": match_type,
        "match": match,
        "subscriber": subscriber,
        "active": active,
    }
    if payload is not None:
        doc["payload"] = payload
    return doc


def addresses_hub(topic: str, hub_url: str) -> bool:
    """Whether a topic addresses the hub's reserved namespace: resolved against the hub's URL
    by the URL standard's parser (`_whatwg_path`: `\\` is `/` in a special scheme's URL,
    `%2e` segments are dot-segments, tabs and newlines are dropped), its path (dot-segments
    removed, unreserved characters decoded) is the hub's path or under it, whatever its
    scheme or host. A topic that is no URL reference does not.

    That parser alone, as the specification has it: it is the one subscribers' URL patterns
    match with, so a topic it puts outside the namespace is one no pattern for the hub's own
    topics selects. Python's `urljoin` reads some malformed references otherwise (`//` as the
    hub's own URL; `http://h\\.well-known\\x/.well-known/mercure` under it): asked beside
    it, it refused publications the specification allows."""
    path = _whatwg_path(topic, hub_url)
    if path is None:
        return False
    hub = _normal_path(urlsplit(hub_url).path)
    normal = _normal_path(path)
    return normal == hub or normal.startswith(hub.rstrip("/") + "/")


_ANY_URL = URLPattern({"pathname": "*"})
"""Matches every URL: its `exec` is the URL standard's parser, giving the resolved pathname."""


def _whatwg_path(topic: str, base_url: str) -> str | None:
    """The path of `topic` resolved against `base_url` as the URL standard parses it (the
    parser URL patterns use), or None when it is no URL."""
    try:
        found = _ANY_URL.exec(topic, base_url)
    except (ValueError, TypeError):
        return None
    if not found:
        return None
    return str(found["pathname"]["input"])


_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def may_select_hub(selectors: SelectorSet, hub_url: str) -> bool:
    """Whether any of `selectors` may select a topic of the hub's namespace (conservative:
    True unless each one surely cannot). An exact one is judged as a publication's topic is
    (`addresses_hub`); a URL pattern surely cannot when a leading segment of its pathname is
    plain text that differs from the hub's path there."""
    if selectors.everything:
        return True
    for selector in selectors.selectors:
        if selector.kind == "match" and addresses_hub(selector.text, hub_url):
            return True
    hub_segments = urlsplit(hub_url).path.strip("/").split("/")
    for pathname in selectors.pathnames():
        segments = pathname.split("/")[1:] if pathname.startswith("/") else [pathname]
        for index, hub_segment in enumerate(hub_segments):
            if index >= len(segments) or not _LITERAL_SEGMENT.fullmatch(segments[index]):
                return True  # a pattern there (or nothing more): it may
            if segments[index] != hub_segment:
                break  # plain text elsewhere: this one cannot
        else:
            return True
    return False


def _normal_path(path: str) -> str:
    decoded = _decode_unreserved(path) or "/"
    normal = posixpath.normpath(decoded)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal + ("/" if decoded.endswith("/") and normal != "/" else "")


def _decode_unreserved(path: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(path):
        char = path[index]
        if char == "%" and index + 3 <= len(path):
            decoded = unquote(path[index : index + 3])
            if len(decoded) == 1 and decoded in _UNRESERVED:
                out.append(decoded)
                index += 3
                continue
        out.append(char)
        index += 1
    return "".join(out)


def listing(
    collection_id: str, bodies: Iterable[bytes], max_bytes: int, *, last_event_id: str
) -> bytes:
    """A collection document of `bodies` (serialized documents), cut before `max_bytes` of
    them with `"truncated": true`; `lastEventID` as the drafts had it."""
    kept: list[bytes] = []
    size = 0
    truncated = False
    for body in bodies:
        if size + len(body) + 1 > max_bytes:
            truncated = True
            break
        kept.append(body)
        size += len(body) + 1
    head = orjson.dumps(
        {"id": collection_id, "type": COLLECTION_TYPE, "lastEventID": last_event_id}
    )[:-1]
    tail = b', "truncated": true}' if truncated else b"}"
    return head + b', "subscriptions": [' + b",".join(kept) + b"]" + tail
