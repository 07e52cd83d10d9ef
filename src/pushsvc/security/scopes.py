"""Scopes: the topics a token (or anonymity) allows, as selectors (pure).

A scope is a set of selectors like a stream's: topic names, `prefix.*` and `*`. A stream asks
with its own selectors; `Scope.restrict` decides what it may receive:
* an explicit topic name outside the scope is refused (the caller learns it asked too much);
* a pattern is narrowed to the scope: a `*` stream with scope `public.*` carries only
  `public.*` topics, live, in its snapshot and in its replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pushsvc.core.topics import ALL, TopicMatcher


@dataclass(frozen=True, slots=True)
class Scope:
    """Selectors a caller may use; the empty scope allows nothing."""

    matcher: TopicMatcher | None

    @classmethod
    def of(cls, selectors: Sequence[str]) -> Scope:
        """InvalidTopic when a selector is not a topic name, `prefix.*` or `*`."""
        return cls(TopicMatcher(selectors) if selectors else None)

    @classmethod
    def union(cls, scopes: Iterable[Scope]) -> Scope:
        selectors = [s for scope in scopes for s in scope.selectors]
        return cls.of(list(dict.fromkeys(selectors)))

    @property
    def selectors(self) -> tuple[str, ...]:
        return () if self.matcher is None else self.matcher.selectors

    @property
    def empty(self) -> bool:
        return self.matcher is None

    @property
    def everything(self) -> bool:
        return ALL in self.selectors

    def allows(self, topic: str) -> bool:
        return self.matcher is not None and self.matcher(topic)

    def refused(self, wanted: TopicMatcher) -> list[str]:
        """The explicit topic names of `wanted` this scope does not allow."""
        return sorted(name for name in wanted.names if not self.allows(name))

    def restrict(self, wanted: TopicMatcher) -> TopicMatcher:
        """`wanted`, narrowed to the topics this scope allows (call after `refused` is empty:
        explicit names need no narrowing then)."""
        if wanted.exact or self.everything:
            return wanted
        return wanted.within(self.matcher)
