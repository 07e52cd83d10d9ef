"""The application backend's answer to an ask (`pushsvc.security.backend_auth`), validated
(pure).

A 200 whose body is the same claims a token carries, with a lifetime in place of `exp`:

    {"sub": "user-42", "ttl": 300,
     "pushsvc": {"publish": ["orders"], "subscribe": ["orders", "public.*"]}}

`ttl` is whole seconds, 1 to a day; `sub` is optional. Anything else is malformed: the
answer is refused whole, never half-read (a backend that answers garbage must not open a
topic by accident).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pushsvc.errors import InvalidTopic
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import CLAIM, Grant

MAX_TTL_S = 86_400
"""The longest lifetime an answer may give: a day (a grant is never cached longer than its
lifetime, and a longer one is more likely a unit mistake, milliseconds for seconds)."""
_KNOWN = frozenset({"sub", "ttl", CLAIM})


class MalformedAnswer(Exception):
    """The backend's 200 is not a grant; the message says what is wrong with it (never
    echoing the body: it may hold what the backend knows of the user)."""


def parse_answer(body: bytes, asked_at: float) -> Grant:
    """The grant `body` gives, expiring `ttl` seconds after `asked_at` (epoch seconds: when
    the ask was sent, so that it is never held longer than the backend meant)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedAnswer(f"not JSON ({len(body)} bytes)") from None
    if not isinstance(answer, Mapping):
        raise MalformedAnswer(f"a JSON {type(answer).__name__}, not an object")
    unknown = sorted(set(answer) - _KNOWN)
    if unknown:
        # A misspelt "subscibe" at the top would otherwise grant nothing, silently.
        names = ", ".join(repr(name) for name in unknown[:5])
        raise MalformedAnswer(f"unknown field(s) {names}: give sub, ttl and {CLAIM}")
    ttl = answer.get("ttl")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_S:
        raise MalformedAnswer(
            f"'ttl' must be a whole number of seconds from 1 to {MAX_TTL_S}, not {ttl!r:.40}"
        )
    subject = answer.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise MalformedAnswer("'sub' must be a string")
    granted = answer.get(CLAIM, {})
    if not isinstance(granted, Mapping):
        raise MalformedAnswer(f"{CLAIM!r} must be an object")
    extra = sorted(set(granted) - {"publish", "subscribe"})
    if extra:
        names = ", ".join(repr(name) for name in extra[:5])
        raise MalformedAnswer(f"unknown field(s) {names} in {CLAIM!r}: give publish, subscribe")
    try:
        publish = Scope.of(_selectors(granted, "publish"))
        subscribe = Scope.reading(_selectors(granted, "subscribe"))
    except InvalidTopic as exc:
        raise MalformedAnswer(exc.message) from None
    return Grant(subject, publish, subscribe, asked_at + ttl)


def _selectors(granted: Mapping[str, Any], name: str) -> list[str]:
    value = granted.get(name, [])
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise MalformedAnswer(f"'{CLAIM}.{name}' must be a list of selectors")
    return value
