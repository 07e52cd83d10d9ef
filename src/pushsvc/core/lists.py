"""Comma-separated lists, as settings, query parameters and CLI options take them (pure)."""

from __future__ import annotations

from collections.abc import Sequence


def comma_list(text: str) -> tuple[str, ...]:
    """`" a, b,,c "` → `("a", "b", "c")`: items stripped, empty ones dropped."""
    return tuple(item for item in (part.strip() for part in text.split(",")) if item)


def choose(text: str, known: Sequence[str]) -> tuple[str, ...]:
    """The items of `text`, which must all be in `known`, in `known`'s order (whatever order
    they were listed in); ValueError naming the choices when one is unknown or none is given."""
    chosen = comma_list(text)
    if not chosen or any(item not in known for item in chosen):
        raise ValueError(f"{text!r}: choose from {', '.join(known)}")
    return tuple(item for item in known if item in chosen)
