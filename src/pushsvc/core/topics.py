"""Topic names and the selectors a stream subscribes with (pure).

A selector is a topic name, a prefix pattern `sensors.*` (every topic whose
name starts with `sensors.`, at any depth, but not `sensors` itself), or a
bare `*` for every topic, which a dashboard watching everything needs; access
control, not this module, decides who may use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NewType

from pushsvc.errors import InvalidTopic

MAX_TOPIC_LEN = 128
MAX_SELECTORS = 100
"""Selectors of one stream or Mercure subscription at most (past it a `400`): each is matched
against every update's topic, and a stream wanting more families of topics than this wants a
prefix pattern (`sensors.*`) instead. Fixed: as a setting it served no deployment."""
LATE_SUFFIX = ".late"
"""A topic's late stream is `<topic>.late` (`pushsvc.core.lateness`)."""

# Literal ASCII classes and fullmatch: `$` would accept a trailing newline.
TOPIC_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_TOPIC = re.compile(TOPIC_PATTERN)

ALL = "*"
_PREFIX_SUFFIX = ".*"

ALERTS = "_alerts"
"""The reserved topic of alert state changes: readable (streamed, replayed, resumed), never
posted to (its name is no valid topic name for producers)."""


TopicName = NewType("TopicName", str)
"""A name `validate_topic` has checked, once, where it came in: what takes one does not check
it again."""


def validate_topic(name: str) -> TopicName:
    """Return `name` if it is a valid topic name, else raise InvalidTopic."""
    if not isinstance(name, str) or _TOPIC.fullmatch(name) is None:
        raise InvalidTopic(
            f"invalid topic {_shorten(name)}: use 1 to {MAX_TOPIC_LEN} ASCII letters, digits "
            "and '._:-' (no accents or other scripts), starting with a letter or a digit"
        )
    return TopicName(name)


def validate_readable(name: str) -> str:
    """`validate_topic`, also taking the reserved topics one may read (`ALERTS`)."""
    return name if name == ALERTS else validate_topic(name)


def _pattern_hint(selector: str) -> str:
    """Why a selector with a `*` is no pattern, and how one is written: `p*` is a guess at a
    glob, which patterns are not (they match at a dot)."""
    stem = selector.rstrip("*").rstrip(".")
    example = f"{stem}.*" if _TOPIC.fullmatch(stem) else "sensors.*"
    return (
        f"invalid topic pattern {_shorten(selector)}: a pattern is a topic name followed by "
        f"'.*' (like {example!r}: every topic whose name starts with {example[:-1]!r}), "
        "or '*' alone for every topic"
    )


def _shorten(name: object) -> str:
    return repr(name[:64] + "…" if isinstance(name, str) and len(name) > 64 else name)


def overlap(a: str, b: str) -> bool:
    """Whether two selectors select some topic in common. A pattern `p.*` selects the names
    that start with `p.`, so two patterns meet when one's prefix starts with the other's."""
    if ALL in (a, b) or a == b:
        return True
    a_prefix, b_prefix = a.endswith(".*"), b.endswith(".*")
    if a_prefix and b_prefix:
        return a[:-1].startswith(b[:-1]) or b[:-1].startswith(a[:-1])
    if a_prefix:
        return b.startswith(a[:-1])
    if b_prefix:
        return a.startswith(b[:-1])
    return False


class TopicMatcher:
    """A predicate over topic names built from selectors; immutable, greenlet-safe.

    Exact names are a set lookup and all prefixes one `str.startswith` call,
    so a matcher stays cheap with many names and a few patterns.
    """

    __slots__ = ("_all", "_names", "_prefixes", "_within", "selectors")

    def __init__(self, selectors: Sequence[str]) -> None:
        if isinstance(selectors, str):
            raise TypeError("selectors must be a sequence of strings, not one string")
        if not selectors:
            raise InvalidTopic("select at least one topic")
        names: set[str] = set()
        prefixes: set[str] = set()
        match_all = False
        for selector in selectors:
            if selector == ALL:
                match_all = True
            elif isinstance(selector, str) and selector.endswith(_PREFIX_SUFFIX):
                # The prefix must itself be a valid name, so patterns like
                # `*.*` or `a*.*` are refused rather than half-understood.
                try:
                    validate_topic(selector[: -len(_PREFIX_SUFFIX)])
                except InvalidTopic:
                    raise InvalidTopic(_pattern_hint(selector)) from None
                prefixes.add(selector[:-1])
            elif isinstance(selector, str) and "*" in selector:
                raise InvalidTopic(_pattern_hint(selector))
            else:
                names.add(validate_readable(selector))
        self.selectors: tuple[str, ...] = tuple(selectors)
        self._all = match_all
        self._names = frozenset(names)
        self._prefixes = tuple(sorted(prefixes))
        self._within: Callable[[str], bool] | None = None

    def within(self, allowed: Callable[[str], bool] | None) -> TopicMatcher:
        """This matcher narrowed to the topics `allowed` also matches (None: none at all);
        what a pattern stream may receive under a token's scope."""
        narrowed = TopicMatcher(self.selectors)
        narrowed._within = allowed if allowed is not None else _nothing
        return narrowed

    @property
    def names(self) -> frozenset[str]:
        """The exact topic names selected (not those matched by patterns)."""
        return self._names

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The prefixes its patterns select (`sensors.` for `sensors.*`)."""
        return self._prefixes

    @property
    def everything(self) -> bool:
        """True when `*` is among the selectors."""
        return self._all

    @property
    def exact(self) -> bool:
        """True when the selectors are topic names only, no pattern."""
        return not self._all and not self._prefixes

    @property
    def key(self) -> tuple[object, ...]:
        """Equal for matchers that answer alike: the same selectors, narrowed by the same
        object (its identity: a matcher holds it, so no other can take its id meanwhile)."""
        within = None if self._within is None else id(self._within)
        return (self._all, self._names, self._prefixes, within)

    def __call__(self, topic: str) -> bool:
        # startswith(()) is False, so no pattern costs one cheap call.
        selected = self._all or topic in self._names or topic.startswith(self._prefixes)
        return selected and (self._within is None or self._within(topic))

    def __repr__(self) -> str:
        narrowed = "" if self._within is None else ", narrowed"
        return f"TopicMatcher({list(self.selectors)!r}{narrowed})"


def _nothing(topic: str) -> bool:
    return False
