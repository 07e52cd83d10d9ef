"""Pages of topic names in name order, read from a sorted index one selector range at a time
(pure).

A listing (`GET /topics`) answers at most `limit` names after a cursor (`after`, the last name
of the previous page). What a caller may read is a scope of selectors (`pushsvc.security.
scopes`): topic names, `prefix.*` and `*`. In name order, every selector is one contiguous
range of names — a name is a range of one, `p.*` the names from `p.` up to the first string
past every name that starts with `p.` — so a page is read range by range from a sorted index
(`index_range` says how far each reaches), and the names the caller may not read are never
visited: an anonymous caller allowed `public.*` among 100,000 private topics reads the
`public.` range only. A page's cost is O(limit + ranges * log(topics)), whatever the number of
topics; the ranges are the caller's own selectors, which the operator grants.

`topic_ranges` makes the ranges disjoint (a name or pattern inside a wider pattern is
dropped), so sorted by their first name they are in name order too, and walking them yields
every name once, in order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, TypeVar

from pushsvc.core.topics import ALL

DEFAULT_LIMIT = 100
"""Names in a page when `?limit=` is not given."""
MAX_LIMIT = 1000
"""The largest `?limit=`."""
SCAN = 1000
"""The most index entries a listing filtered by scope key by key (`scan_page`) reads per call."""

ABOVE = "\x7f"
"""Sorts after every character a topic name may hold (the highest is `z`): `p.` + ABOVE is
past every name that starts with `p.`."""


@dataclass(frozen=True, slots=True, order=True)
class TopicRange:
    """One selector as a range of names: `low` alone (`exact`), or every name starting with
    `low` (`""` for `*`)."""

    low: str
    exact: bool


@dataclass(frozen=True, slots=True)
class IndexRange:
    """The part of a range a page still reads: names above `low` (or equal to it when
    `low_inclusive`), below `high` (or equal when `high_inclusive`); `high` None: no bound."""

    low: str
    low_inclusive: bool
    high: str | None
    high_inclusive: bool


def topic_ranges(selectors: Sequence[str]) -> tuple[TopicRange, ...]:
    """The disjoint ranges of `selectors` (names, `prefix.*`, `*`), in name order."""
    if ALL in selectors:
        return (TopicRange("", exact=False),)
    prefixes = sorted({s[:-1] for s in selectors if s.endswith(".*")})
    kept: list[str] = []
    for prefix in prefixes:  # sorted: a prefix covering this one came before it
        if not any(prefix.startswith(wider) for wider in kept):
            kept.append(prefix)
    names = {s for s in selectors if not s.endswith("*")}
    ranges = [TopicRange(p, exact=False) for p in kept]
    ranges += [TopicRange(n, exact=True) for n in names if not n.startswith(tuple(kept))]
    return tuple(sorted(ranges))


def common_ranges(a: Sequence[str], b: Sequence[str]) -> tuple[TopicRange, ...]:
    """The disjoint ranges, in name order, of the names both selector lists select (of two
    overlapping selectors, the narrower: `p.q.*` of `p.*` and `p.q.*`, `p.x` of `p.*` and
    `p.x`)."""
    both: list[str] = []
    for first in topic_ranges(a):
        for second in topic_ranges(b):
            narrow, wide = sorted((first, second), key=lambda r: (r.exact, len(r.low)))[::-1]
            if narrow == wide or (not wide.exact and narrow.low.startswith(wide.low)):
                both.append(_selector(narrow))
    return topic_ranges(both)


def _selector(scope_range: TopicRange) -> str:
    if scope_range.exact:
        return scope_range.low
    return scope_range.low + "*" if scope_range.low else ALL


def index_range(scope_range: TopicRange, after: str | None) -> IndexRange | None:
    """What of `scope_range` lies after name `after` (None: all of it); None when nothing."""
    if scope_range.exact:
        if after is not None and after >= scope_range.low:
            return None
        return IndexRange(scope_range.low, True, scope_range.low, True)
    high = None if scope_range.low == "" else scope_range.low + ABOVE
    if after is None or after < scope_range.low:
        return IndexRange(scope_range.low, True, high, False)
    if high is not None and after >= high:
        return None
    return IndexRange(after, False, high, False)


@dataclass(frozen=True, slots=True)
class NamePage:
    names: list[str]
    """At most the page's limit, in name order."""
    more: bool
    """Names follow the last one (ask again with it as `after`)."""


def walk(
    ranges: Sequence[TopicRange],
    after: str | None,
    limit: int,
    read: Callable[[IndexRange, int], list[str]],
) -> NamePage:
    """The first `limit` names of `ranges` after `after`: `read(part, count)` answers at most
    `count` names of the index in `part`, in order. One more name than `limit` is asked for,
    so `more` is exact."""
    found: list[str] = []
    for scope_range in ranges:
        part = index_range(scope_range, after)
        if part is None:
            continue
        found += read(part, limit + 1 - len(found))
        if len(found) > limit:
            return NamePage(found[:limit], True)
    return NamePage(found, False)


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[str]
    """The keys kept, at most the page's limit, in order."""
    next: str | None
    """The key the next page reads after; None when nothing follows."""


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


Name = TypeVar("Name", bound=_Ordered)


def merged_head(
    count: int,
    sources: int,
    read: Callable[[Mapping[int, Name | None], int], Mapping[int, list[Name]]],
) -> list[Name]:
    """The first `count` names of `sources` sorted indexes with no name in common, merged.

    `read(asking, chunk)` answers, for each source in `asking`, its first `chunk` names after
    the name given (all of them from the start for None), in order. Each source is asked for
    about twice its share of `count` first, then only the sources that hold up the merge (the
    one whose last name read is the lowest, among those that may hold more) for twice as many
    each time: names hash evenly over partitions, so a page of 1,000 from 16 reads some
    2,100 names instead of 16,000 (every partition asked for the whole page)."""
    chunk = max(8, 2 * (count // max(sources, 1) + 1))
    asking: dict[int, Name | None] = dict.fromkeys(range(sources))
    read_so_far: dict[int, list[Name]] = {source: [] for source in range(sources)}
    more: set[int] = set()  # the sources that answered a whole chunk: they may hold more
    while asking:
        for source, names in read(asking, chunk).items():
            read_so_far[source] += names
            if len(names) < chunk:
                more.discard(source)
            else:
                more.add(source)
        merged = heapq.merge(*read_so_far.values())
        if not more:
            return list(islice(merged, count))
        # Every name up to the lowest last name of a source that may hold more is known.
        bound = min(read_so_far[source][-1] for source in more)
        known = [name for name in islice(merged, count) if not bound < name]
        if len(known) == count:
            return known
        asking = {s: read_so_far[s][-1] for s in more if read_so_far[s][-1] == bound}
        chunk *= 2
    return []  # not reached: `asking` is never empty while a source may hold more


def scan_page(read: Sequence[str], limit: int, scan: int, keep: Callable[[str], bool]) -> KeyPage:
    """A page of the keys `keep` keeps among `read` — at most `scan + 1` keys of a sorted
    index after the cursor, the one past `scan` saying more follow: a listing whose order is
    not by topic (alert instances sort by alert first) cannot read its visible keys by range,
    so it reads `scan` keys per call whatever it keeps, and may answer fewer than `limit`,
    even none, with a `next` to read on from."""
    kept: list[str] = []
    for key in read[:scan]:
        if keep(key):
            if len(kept) == limit:
                return KeyPage(kept, kept[-1])
            kept.append(key)
    return KeyPage(kept, read[scan - 1] if len(read) > scan else None)
