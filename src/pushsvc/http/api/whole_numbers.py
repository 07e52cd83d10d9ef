"""A query parameter that is a whole number in a range (`?limit=`, `?points=`), judged
before anything is read: a 400 naming the parameter and its range otherwise."""

from __future__ import annotations

from pushsvc.errors import BadRequest


def whole_number(name: str, text: str | None, *, default: int, high: int, low: int = 1) -> int:
    """`text` (None where the parameter is absent: `default`) as a whole number from `low`
    to `high`."""
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise BadRequest(f"?{name}= is a whole number from {low} to {high}; got {text[:20]!r}")
    return int(text)
