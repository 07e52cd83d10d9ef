"""Mercure topic matchers: which topics a subscription (or a token's grant) selects (pure).

Mercure names two matcher types. `exact` (the bare `match` query parameter, `Selector.kind`
"match") compares the topic byte for byte; `urlpattern` (`match_urlpattern`) evaluates the
WHATWG URL Pattern standard, relative patterns and topics resolved against the hub's URL.
The value `*` is the reserved wildcard: it selects every topic whatever its kind.

URL patterns compile to regular expressions, and the spec's "URL-Pattern Denial of Service"
section asks for a linear-time engine or a bound on each evaluation. The `urlpattern` package
compiles them for Rust's `regex` crate, which never backtracks (no catastrophic `(a+)+b`, no
back-references or look-arounds: those fail to compile). Linear is not free, so the cost is
bounded three more ways, each limit below with its reason:

* what a selector may be: its length, its groups (each `:name`, `*` or `(regexp)` is a
  capture the engine tracks through the whole topic), and inside a regexp group neither
  counted repetition (`{n,m}`, which the engine unrolls at compile time) nor the large
  Unicode classes `\\w`, `\\W`, `\\p{..}`, `\\P{..}` (thousands of ranges to compile);
* how many selectors a subscription holds, and how many of them are URL patterns;
* the topic: one longer than `MAX_URLPATTERN_TOPIC_LENGTH` is matched by no URL pattern
  (the spec: a pattern whose evaluation limit is reached does not match).

What a pattern takes compiled is measured as it compiles (`mercure_pattern_bytes`: a class
that spans all of Unicode, such as `[^a]` or `.`, takes many times what a narrow one does,
so the length of a pattern says little): one that takes more than `MAX_COMPILED_BYTES` is
refused, and the process holds at most `MAX_LIVE_PATTERN_BYTES` of compiled patterns (each
charged its size and its evaluations' allowance), whatever their number.

And work is shared. A compiled pattern (the engine's automata for eight URL components) is
shared by every subscription with the same selector while one holds it, and the
last `COMPILED_CACHE_SIZE` asked for stay compiled after (an LRU, for reconnections). Each
(pattern, topic) result is memoized in a bounded cache keyed by strings (so it never keeps a
compiled pattern alive), so an update costs one evaluation per distinct pattern, and a cache
lookup per other subscription. Equal `SelectorSet`s are equal and hash alike, so the endpoint
can group its subscribers by set and ask once per set per update: then the cost does not grow
with the subscribers of a pattern at all. `docs/performance.md` ("Mercure") has the measured
costs. The caches are safe to share between greenlets (nothing in them yields).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit
from weakref import WeakValueDictionary

from urlpattern import URLPattern

from pushsvc.deliver.mercure_input import check_chars
from pushsvc.deliver.mercure_pattern_bytes import MAX_COMPILED_BYTES, charge, measured

WILDCARD = "*"
# The base of relative patterns and topics when the hub gives none: `.invalid` is reserved
# (RFC 6761), so it is never a real host; relative against relative still matches.
FALLBACK_BASE_URL = "http://mercure.invalid"
# A selector's length in characters: URLs in the wild stay under 2,000 characters, and a
# pattern's compile time grows with its length.
MAX_SELECTOR_LENGTH = 1024
# Selectors per subscription (or per grant): as many as the reference hub takes. Exact ones
# cost a set lookup per topic; the URL patterns are bounded apart below.
MAX_SELECTORS = 100
# URL patterns per subscription (or per grant): each costs an evaluation per new topic, and
# its compiled size (`mercure_pattern_bytes`) when no other subscription holds the same one.
MAX_URLPATTERNS = 16
# Captures in one URL pattern (`:name`, `*`, `(regexp)`): the engine's work per topic
# character grows with them, by orders of magnitude past a few dozen (docs/performance.md).
MAX_PATTERN_GROUPS = 16
# Topics longer than this are matched by no URL pattern: an evaluation's cost grows with the
# topic's length. Exact selectors still match them.
MAX_URLPATTERN_TOPIC_LENGTH = 2048
# Compiled patterns kept alive after their last subscription ends, for the next one (a
# reconnection): within MAX_LIVE_PATTERN_BYTES with the live ones.
COMPILED_CACHE_SIZE = 256
# Distinct compiled patterns a process holds (for its live subscriptions and its recent ones),
# by number and by bytes (each charged its measured compiled size and its evaluations'
# allowance, `mercure_pattern_bytes.charge`): whoever opens the subscriptions, the patterns
# take at most MAX_LIVE_PATTERN_BYTES. Past either a subscription with a pattern no live one
# holds waits (`TooManyLivePatterns`: the endpoint answers 503 with Retry-After); shared ones
# never do. Past the bytes, recent patterns no live subscription holds are let go first.
MAX_LIVE_PATTERNS = 1024
MAX_LIVE_PATTERN_BYTES = 128 << 20
# (pattern, topic) results kept: 32 updates' worth with a thousand distinct patterns. Keys
# hold topics of at most MAX_URLPATTERN_TOPIC_LENGTH characters: at worst some 70 MB,
# with 60-character topics some 4 MB.
MATCH_CACHE_SIZE = 32768
# Inside a regexp group: the escapes of the large Unicode classes.
_REFUSED_ESCAPES = frozenset("wWpP")

MatcherKind = Literal["match", "urlpattern"]
# The spec's matcher type names (`match_type` in tokens, `match_<type>` in queries) to kinds.
MATCH_TYPES: dict[str, MatcherKind] = {"exact": "match", "urlpattern": "urlpattern"}


@dataclass(frozen=True, slots=True)
class Selector:
    """One topic matcher: `kind` "match" is the spec's `exact` type, "urlpattern" its URL
    Pattern type; `text` is the matcher as given."""

    kind: MatcherKind
    text: str

    @property
    def match_type(self) -> str:
        """The spec's name of the kind: "exact" or "urlpattern"."""
        return "exact" if self.kind == "match" else "urlpattern"

    @property
    def is_wildcard(self) -> bool:
        return self.text == WILDCARD

    @classmethod
    def of_type(cls, match_type: str | None, text: str) -> Selector:
        """A selector from a token's `match_type` (None: exact). ValueError if unsupported."""
        if match_type is None:
            return cls("match", text)
        kind = MATCH_TYPES.get(match_type)
        if kind is None:
            raise ValueError(
                f"unsupported match_type {match_type!r} (supported: {', '.join(MATCH_TYPES)})"
            )
        return cls(kind, text)

    @staticmethod
    def is_param(name: str) -> bool:
        """Whether a query parameter is in the reserved `match` namespace (a name beginning
        with `match` in any case): the spec has the hub refuse (400) those `of_param` does
        not know, rather than ignore them."""
        return name[:5].lower() == "match"

    @classmethod
    def of_param(cls, name: str, text: str) -> Selector:
        """A selector from a subscribe query parameter: `match`, `match_exact` or
        `match_urlpattern` (case-sensitive). ValueError for any other name (for one in the
        reserved namespace, `is_param`, a 400)."""
        if name == "match":
            return cls("match", text)
        if name.startswith("match_") and name[6:] in MATCH_TYPES:
            return cls(MATCH_TYPES[name[6:]], text)
        raise ValueError(
            f"unknown topic matcher parameter {name!r} (use match, match_exact or match_urlpattern)"
        )


@dataclass(frozen=True, eq=False)
class _Pattern:
    """A compiled URL pattern, shared by every subscription holding the same selector."""

    text: str
    base_url: str
    compiled: URLPattern = field(repr=False)
    charged: int
    """Bytes it counts against `MAX_LIVE_PATTERN_BYTES` while it lives."""


class SelectorSet:
    """One subscription's (or one grant's) selectors, checked and compiled once.

    ValueError, with a message fit for a 400, for a selector the limits refuse or that is no
    URL pattern. `matches_any` is pure and greenlet-safe."""

    __slots__ = (
        "__weakref__",  # a client address's share is released with the set (mercure_pattern_shares)
        "_everything",
        "_exact",
        "_key",
        "_patterns",
        "base_url",
        "selectors",
    )

    def __init__(self, selectors: Sequence[Selector], *, base_url: str = FALLBACK_BASE_URL) -> None:
        check_base_url(base_url)
        unique = tuple(dict.fromkeys(selectors))
        if len(unique) > MAX_SELECTORS:
            raise ValueError(f"too many topic matchers: {len(unique)} (at most {MAX_SELECTORS})")
        for selector in unique:
            check_text(selector.text)
        self.selectors = unique
        self.base_url = base_url
        self._key = (frozenset(unique), base_url)
        self._everything = any(s.is_wildcard for s in unique)
        self._exact = frozenset(s.text for s in unique if s.kind == "match")
        texts = [s.text for s in unique if s.kind == "urlpattern" and not s.is_wildcard]
        if len(texts) > MAX_URLPATTERNS:
            raise ValueError(
                f"too many URL patterns: {len(texts)} (at most {MAX_URLPATTERNS} per subscription)"
            )
        self._patterns = () if self._everything else tuple(_pattern(t, base_url) for t in texts)

    @property
    def holds_patterns(self) -> bool:
        """Whether the set holds compiled URL patterns (each one of the process's live
        patterns while the set lives)."""
        return bool(self._patterns)

    def matches_any(self, topics: Sequence[str]) -> bool:
        """True when a selector selects at least one of `topics`."""
        if self._everything or not self._exact.isdisjoint(topics):
            return True
        for pattern in self._patterns:
            for topic in topics:
                if len(topic) <= MAX_URLPATTERN_TOPIC_LENGTH and _matches(pattern, topic):
                    return True
        return False

    def pattern_bytes(self) -> dict[tuple[str, str], int]:
        """Each compiled pattern's charge in bytes, by (text, base URL)."""
        return {(p.text, p.base_url): p.charged for p in self._patterns}

    def pathnames(self) -> tuple[str, ...]:
        """The pathname component of each URL pattern, as compiled (relative ones resolved
        against the base URL)."""
        return tuple(str(p.compiled.pathname) for p in self._patterns)

    @property
    def everything(self) -> bool:
        """Whether the wildcard `*` is among the selectors."""
        return self._everything

    def matches_all(self, topics: Sequence[str]) -> bool:
        """True when every one of `topics` is selected (a publisher's right on an update)."""
        return all(self.matches_any((topic,)) for topic in topics)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SelectorSet) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __bool__(self) -> bool:
        return bool(self.selectors)

    def __repr__(self) -> str:
        return f"SelectorSet({list(self.selectors)!r})"


def check_base_url(base_url: str) -> None:
    parts = urlsplit(base_url)
    if not (parts.scheme and parts.netloc):
        raise ValueError(f"the base URL of URL patterns must be absolute, not {base_url!r}")


def check_text(text: str) -> None:
    """The spec's rule for every matcher value: no C0, C1, DEL or format (Cf) character; and
    ours: at most `MAX_SELECTOR_LENGTH` characters."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise ValueError(
            f"a topic matcher has {len(text)} characters (at most {MAX_SELECTOR_LENGTH})"
        )
    check_chars("a topic matcher", text)


def check_pattern_cost(text: str) -> None:
    """Refuse what makes a URL pattern costly to compile or evaluate (module docstring).

    Scans the pattern as the URL Pattern tokenizer does: `\\` escapes a character, `(` opens a
    regexp group up to its matching `)`. Counting is conservative: a `*` modifier (`:id*`) and
    a `:` before a letter anywhere count as groups too."""
    groups = 0
    depth = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            if depth and text[index + 1 : index + 2] in _REFUSED_ESCAPES:
                raise ValueError(
                    f"a URL pattern's regexp group may not use \\{text[index + 1]} "
                    "(large Unicode class); use an explicit class such as [a-z0-9]"
                )
            index += 2
            continue
        if depth:
            if char == "{":
                raise ValueError(
                    "a URL pattern's regexp group may not use counted repetition {n,m} "
                    "(or \\p{...}); use * or +"
                )
            depth += (char == "(") - (char == ")")
        elif char == "(":
            depth, groups = 1, groups + 1
        elif char == "*" or (
            char == ":" and index + 1 < len(text) and _starts_name(text[index + 1])
        ):
            groups += 1
        index += 1
    if groups > MAX_PATTERN_GROUPS:
        raise ValueError(
            f"a URL pattern has {groups} groups (:name, *, (regexp)); at most {MAX_PATTERN_GROUPS}"
        )


def _starts_name(char: str) -> bool:
    return char.isalpha() or char in "_$"


def _pattern(text: str, base_url: str) -> _Pattern:
    check_pattern_cost(text)
    return _compiled(text, base_url)


# Compiled patterns by (text, base URL): every one a live subscription holds (weakly: freed
# with the last), and the most recently asked for (strongly), so a reconnection finds its own.
_live: WeakValueDictionary[tuple[str, str], _Pattern] = WeakValueDictionary()
_recent: OrderedDict[tuple[str, str], _Pattern] = OrderedDict()
# (pattern text, base URL, topic) -> matched: keyed by strings, never holding a pattern alive.
# Evicted first in, first out (no reordering on a hit: a hit stays a dict lookup).
# (An OrderedDict: a plain dict's oldest key is found by scanning the slots deleted before it.)
_results: OrderedDict[tuple[str, str, str], bool] = OrderedDict()
# Bytes charged by the compiled patterns alive (live or recent), each given back when freed.
_bytes = {"alive": 0}


class TooManyLivePatterns(Exception):
    """The process holds `MAX_LIVE_PATTERNS` distinct compiled patterns: a new one waits."""


def _compiled(text: str, base_url: str) -> _Pattern:
    key = (text, base_url)
    pattern = _live.get(key)
    if pattern is None:
        if len(_live) >= MAX_LIVE_PATTERNS:
            raise TooManyLivePatterns(
                f"this server holds {MAX_LIVE_PATTERNS} distinct URL patterns for its "
                "subscriptions; retry later, or share a pattern another subscription uses"
            )
        try:
            # No options: `ignoreCase` stays off, as the spec requires.
            compiled, size = measured(lambda: URLPattern(text, base_url))
        except (ValueError, TypeError) as exc:
            # The library's words ("tokenizer error: ...") say what is wrong with the pattern.
            raise ValueError(f"{text!r} is not a URL pattern: {exc}") from None
        if size is not None and size > MAX_COMPILED_BYTES:
            raise ValueError(
                f"a URL pattern takes {size >> 10} KiB compiled (at most "
                f"{MAX_COMPILED_BYTES >> 10} KiB): classes such as [^a] or . span all of Unicode "
                "and take some 6 KiB each; use fewer, or narrower ones such as [a-z0-9]"
            )
        charged = charge(size)
        _make_room(charged)
        pattern = _live.setdefault(key, _Pattern(text, base_url, compiled, charged))
        if pattern.compiled is compiled:
            _bytes["alive"] += charged
            weakref.finalize(pattern, _give_back, charged)
    _recent[key] = pattern
    with suppress(KeyError):  # another thread's eviction: never in a gevent process
        _recent.move_to_end(key)
        while len(_recent) > COMPILED_CACHE_SIZE:
            _recent.popitem(last=False)
    return pattern


def _make_room(charged: int) -> None:
    """Let recent patterns go, oldest first, until `charged` more bytes fit the process's
    bound; TooManyLivePatterns when live subscriptions hold too much for them to."""
    while _bytes["alive"] + charged > MAX_LIVE_PATTERN_BYTES and _recent:
        _recent.popitem(last=False)  # freed at once unless a live subscription holds it
    if _bytes["alive"] + charged > MAX_LIVE_PATTERN_BYTES:
        raise TooManyLivePatterns(
            f"this server's URL patterns take {_bytes['alive'] >> 20} MiB compiled (at most "
            f"{MAX_LIVE_PATTERN_BYTES >> 20} MiB); retry later, or share a pattern another "
            "subscription uses"
        )


def _give_back(charged: int) -> None:
    _bytes["alive"] -= charged


def _matches(pattern: _Pattern, topic: str) -> bool:
    key = (pattern.text, pattern.base_url, topic)
    found = _results.get(key)
    if found is not None:
        return found
    try:
        found = pattern.compiled.test(topic, pattern.base_url)
    except (ValueError, TypeError):
        found = False  # the spec: a topic that is no URL reference matches no URL pattern
    _results[key] = found
    if len(_results) > MATCH_CACHE_SIZE:
        with suppress(KeyError):  # another thread evicted it: never in a gevent process
            _results.popitem(last=False)
    return found


def alive_bytes() -> int:
    """Bytes the compiled patterns alive are charged (`MAX_LIVE_PATTERN_BYTES` at most)."""
    return _bytes["alive"]
