"""Presence: how many streams watch a topic now, and (where the operator lets it be told) the
token subjects (`sub`) of those that do.

A stream counts from the moment its view accepts it until it ends, whatever ends it (the
client leaving, a reset, its token expiring, the server cutting it as slow or stopping).

What a stream watches, as presence counts it (`Watch`):
* a stream of topics named outright (`/topics/{t}/stream`, `/stream?topic=a&topic=b`)
  counts once for each of those topics;
* a stream with a pattern (`sensors.*`, `*`, alone or beside names) counts once for every
  topic its selectors match *now or later*, narrowed to its token's scope exactly as its
  updates are (`pushsvc.security.scopes.Scope.restrict`): it is counted for a topic whenever an
  update of that topic would reach it. A `*` stream of a reader whose scope is `public.*`
  counts for `public.news`, never for a private topic. A topic that does not exist yet has
  the pattern streams that would receive it as its presence.

This module holds one process's tally (`PresenceRegistry`): per topic named outright and per
pattern watch, how many of the process's streams watch it (and their subjects, when kept).
Joining and leaving are a few dictionary operations (no walk over streams or topics). Reading
a topic's presence looks its name up and tests each distinct pattern watch of the process
(there are few: streams of one page ask alike). Where several processes serve streams (on
Redis), each publishes its tally and the reads add every live process's
(`pushsvc.broker.redis.presence`); embedded, the tally is the whole answer
(`pushsvc.deliver.presence.LocalPresence`).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from pushsvc.core.topics import ALERTS, ALL, TopicMatcher
from pushsvc.errors import InvalidTopic

_SCOPED = "|"
"""Between a pattern watch's selectors and its scope's (neither holds it, nor a space)."""


@dataclass(frozen=True, slots=True)
class Presence:
    """A topic's presence: how many streams watch it, and the distinct subjects of those
    opened with a token that has one (empty when subjects are not kept)."""

    watching: int
    subs: tuple[str, ...] = ()


NOBODY = Presence(0)


_NO_NAMES: frozenset[str] = frozenset()


class Watch(NamedTuple):
    """What one stream is counted for: `names` (a stream of names only) or `pattern`, the key
    of a pattern watch (its selectors, and its scope's when narrowed), and its subject."""

    names: frozenset[str]
    pattern: str | None
    sub: str | None

    @classmethod
    def of(cls, matcher: TopicMatcher, scope: tuple[str, ...] | None, sub: str | None) -> Watch:
        """The watch of a stream receiving by `matcher` (its selectors, as its view took them)
        under the selectors of its scope (None: auth off, no narrowing). The matcher's own
        name set is shared, not copied: a stream costs presence a few pointers."""
        if matcher.exact:
            return cls(matcher.names, None, sub)
        key = " ".join(matcher.selectors)
        if scope is not None and ALL not in scope:
            key += _SCOPED + " ".join(scope)
        return cls(_NO_NAMES, key, sub)


@functools.lru_cache(maxsize=4096)
def pattern_matcher(key: str) -> Callable[[str], bool]:
    """The topics a pattern watch (`Watch.pattern`) counts for: the matcher its stream
    receives by. Keys come from this process or another one's (through Redis); one that does
    not parse matches nothing (a newer version's, say), rather than failing every read."""
    selectors, scoped, scope = key.partition(_SCOPED)
    try:
        wanted = TopicMatcher(selectors.split(" "))
        if not scoped:
            return wanted
        # As `pushsvc.security.scopes.Scope.restrict` narrows the stream: its scope's topics,
        # and `_alerts` (whose messages are filtered one by one instead).
        allowed = TopicMatcher(scope.split(" ")) if scope else None
        return wanted.within(
            None if allowed is None else lambda topic: topic == ALERTS or allowed(topic)
        )
    except InvalidTopic:
        return _nothing


def _nothing(topic: str) -> bool:
    return False


@dataclass(slots=True)
class Tally:
    """Streams per key (a topic name or a pattern watch), and their subjects when kept."""

    counts: dict[str, int] = field(default_factory=dict)
    subs: dict[str, Counter[str]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    """Keys whose count or subjects changed since `take_changed` (what Redis is told)."""

    def add(self, key: str, sub: str | None, step: int) -> None:
        count = self.counts.get(key, 0) + step
        if count > 0:
            self.counts[key] = count
        else:
            self.counts.pop(key, None)
        if sub is not None:
            subs = self.subs.setdefault(key, Counter())
            subs[sub] += step
            if subs[sub] <= 0:
                del subs[sub]
            if not subs:
                del self.subs[key]
        self.changed.add(key)

    def entry(self, key: str) -> tuple[int, tuple[str, ...]]:
        subs = self.subs.get(key)
        return self.counts.get(key, 0), tuple(sorted(subs)) if subs else ()

    def take_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed


class PresenceRegistry:
    """One process's streams as presence counts them (see the module docstring). Nothing here
    yields: greenlet-safe under gevent as the hub is."""

    def __init__(self, *, keep_subs: bool = False) -> None:
        self.keep_subs = keep_subs
        """Whether subjects are kept (`--presence-subs`): off, none is held anywhere."""
        self.names = Tally()
        self.patterns = Tally()
        self.joins = 0
        self.leaves = 0

    def join(self, watch: Watch) -> None:
        self._step(watch, 1)
        self.joins += 1

    def leave(self, watch: Watch) -> None:
        self._step(watch, -1)
        self.leaves += 1

    def _step(self, watch: Watch, step: int) -> None:
        sub = watch.sub if self.keep_subs else None
        if watch.pattern is not None:
            self.patterns.add(watch.pattern, sub, step)
        else:
            for name in watch.names:
                self.names.add(name, sub, step)

    @property
    def streams(self) -> int:
        """Streams counted now (a stream of several names counts once)."""
        return self.joins - self.leaves

    def presence(self, topic: str) -> Presence:
        """This process's streams watching `topic`."""
        parts = [self.names.entry(topic)]
        for key, count in self.patterns.counts.items():
            if pattern_matcher(key)(topic):
                parts.append((count, self.patterns.entry(key)[1]))
        return combine(parts)


def combine(parts: Iterable[tuple[int, Iterable[str]]]) -> Presence:
    """Counts added, subjects united (a subject watching from two processes is one)."""
    watching = 0
    subs: set[str] = set()
    for count, names in parts:
        watching += count
        subs.update(names)
    return Presence(watching, tuple(sorted(subs))) if watching else NOBODY


class Stop(Protocol):
    """When to stop (a gevent Event): `wait` returns True once set."""

    def wait(self, timeout: float | None = None) -> bool: ...


class PresenceSource(Protocol):
    """Where a process reads presence: its own tally embedded, every process's on Redis."""

    registry: PresenceRegistry

    def read(self, topics: Collection[str]) -> dict[str, Presence]:
        """The presence of each of `topics` now; BrokerUnavailable when it cannot be read."""
        ...

    def run(self, stop: Stop) -> None:
        """Whatever keeps the presence of this process's streams published, until `stop` is
        set; returns at once where there is nothing to publish."""
        ...

    def close(self) -> None: ...
