"""Scopes: the topics a token (or anonymity) allows, as selectors (pure).

A scope is a set of selectors like a stream's: topic names, `prefix.*` and `*`. A stream asks
with its own selectors; `Scope.restrict` decides what it may receive:
* an explicit topic name outside the scope is refused (the caller learns it asked too much);
* a pattern is narrowed to the scope: a `*` stream with scope `public.*` carries only
  `public.*` topics, live, in its snapshot and in its replay.

The reserved topic `_alerts` is readable with any scope that allows some topic: each of its
messages is about a topic, and a stream gets only those about the topics its scope allows
(`alert_topics`, applied message by message where the stream renders them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pushsvc.core.topics import ALERTS, ALL, LATE_SUFFIX, MAX_TOPIC_LEN, TopicMatcher, overlap


@dataclass(frozen=True, slots=True)
class Scope:
    """Selectors a caller may use; the empty scope allows nothing."""

    matcher: TopicMatcher | None

    @classmethod
    def of(cls, selectors: Sequence[str]) -> Scope:
        """InvalidTopic when a selector is not a topic name, `prefix.*` or `*`."""
        return cls(TopicMatcher(selectors) if selectors else None)

    @classmethod
    def reading(cls, selectors: Sequence[str]) -> Scope:
        """`of`, for reading: a topic named allows its late stream too (`<topic>.late`,
        `pushsvc.core.lateness`), whoever may read a topic may read what was late for it (a
        pattern already covers it)."""
        named = list(selectors)
        for selector in selectors:
            late = selector + LATE_SUFFIX
            if not selector.endswith("*") and len(late) <= MAX_TOPIC_LEN and late not in named:
                named.append(late)
        return cls.of(named)

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

    def reaches(self, selector: str) -> bool:
        """Whether some topic `selector` (a name, `prefix.*` or `*`) selects is one this scope
        allows: what a rule or an alert declared for `selector` may be shown for."""
        return any(overlap(selector, own) for own in self.selectors)

    def refused(self, wanted: TopicMatcher) -> list[str]:
        """The explicit topic names of `wanted` this scope does not allow (`_alerts` is
        allowed to any scope that allows a topic: its messages are filtered instead)."""
        return sorted(
            name
            for name in wanted.names
            if not self.allows(name) and (name != ALERTS or self.matcher is None)
        )

    def restrict(self, wanted: TopicMatcher) -> TopicMatcher:
        """`wanted`, narrowed to the topics this scope allows, `_alerts` included (call after
        `refused` is empty: explicit names need no narrowing then)."""
        if wanted.exact or self.everything:
            return wanted
        return wanted.within(self._with_alerts)

    def _with_alerts(self, topic: str) -> bool:
        return topic == ALERTS or self.allows(topic)

    @property
    def alert_topics(self) -> Callable[[str], bool] | None:
        """Which instances' topics a reader of `_alerts` may see (None: all of them)."""
        return None if self.everything else self.allows
