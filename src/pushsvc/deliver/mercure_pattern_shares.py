"""Each client address's share of the URL patterns a process compiles for Mercure subscriptions.

A process holds at most `MAX_LIVE_PATTERNS` distinct compiled URL patterns for its live
subscriptions, taking at most `MAX_LIVE_PATTERN_BYTES` (`pushsvc.deliver.mercure_selectors`);
past either a subscription with a new pattern is refused with a `503`. Without a share, one
client opening subscriptions of made-up patterns from one address (16 a subscription, well
within its streams per address) takes all of them, and every other client's new pattern is
refused until it leaves. So an
address may hold at most `MAX_PATTERNS_PER_ADDRESS` distinct patterns through its live
subscriptions (each counted once however many of its subscriptions hold it, whether or not
another address holds it too): past it, that address is refused (`429 too_many_patterns`),
and others still find the process's own bound a quarter away at least. Likewise in bytes:
an address's distinct patterns may be charged at most `MAX_PATTERN_BYTES_PER_ADDRESS` (each
its measured compiled size and its evaluations' allowance), checked once they are compiled
(a pattern's size is known only then), so that a client cannot take the process's bytes with
a few hundred costly patterns either.

A share is held while the subscription's `SelectorSet` lives (released when it is freed: when
its stream ends, or at once when the request is refused later on). Greenlet-safe: nothing here
yields.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence

from pushsvc.deliver.mercure_selectors import (
    MAX_LIVE_PATTERN_BYTES,
    MAX_LIVE_PATTERNS,
    WILDCARD,
    Selector,
    SelectorSet,
)
from pushsvc.errors import TooManyPatterns

MAX_PATTERNS_PER_ADDRESS = MAX_LIVE_PATTERNS // 4
"""Distinct URL patterns one address's live subscriptions may hold: a quarter of the
process's, so an attacker needs four addresses to take them all (behind a proxy every client
has the proxy's address: `--trusted-proxies`)."""

MAX_PATTERN_BYTES_PER_ADDRESS = MAX_LIVE_PATTERN_BYTES // 4
"""Bytes one address's distinct live patterns may be charged: a quarter of the process's."""

_Key = tuple[str, str]


class PatternShares:
    """See the module docstring."""

    def __init__(
        self,
        per_address: int = MAX_PATTERNS_PER_ADDRESS,
        bytes_per_address: int = MAX_PATTERN_BYTES_PER_ADDRESS,
    ) -> None:
        self.per_address = per_address
        self.bytes_per_address = bytes_per_address
        self._held: dict[str, Counter[_Key]] = {}
        self._sizes: dict[str, dict[_Key, int]] = {}

    def check(self, address: str, selectors: Sequence[Selector], base_url: str) -> None:
        """Raise TooManyPatterns when `selectors` would take `address` past its share; call
        before compiling them (`SelectorSet`), then `hold` the set made."""
        held = self._held.get(address, Counter())
        new = {k for k in _keys(selectors, base_url) if k not in held}
        if len(held) + len(new) > self.per_address:
            raise TooManyPatterns(
                f"the subscriptions of this client address hold {len(held)} distinct URL "
                f"patterns (at most {self.per_address}); share patterns, or end subscriptions"
            )

    def hold(self, address: str, selectors: SelectorSet) -> None:
        """Count `selectors`' patterns against `address` while the set lives; TooManyPatterns,
        holding nothing, when their bytes would take the address past its share."""
        keys = _keys(selectors.selectors, selectors.base_url)
        if not keys:
            return
        charged = selectors.pattern_bytes()
        sizes = self._sizes.get(address, {})
        new = {key: charged.get(key, 0) for key in keys if key not in sizes}
        held_bytes = sum(sizes.values())
        if held_bytes + sum(new.values()) > self.bytes_per_address:
            raise TooManyPatterns(
                f"the subscriptions of this client address hold URL patterns of "
                f"{held_bytes >> 20} MiB compiled; these would take it past "
                f"{self.bytes_per_address >> 20} MiB: share patterns, use narrower ones, or "
                "end subscriptions"
            )
        self._held.setdefault(address, Counter()).update(keys)
        self._sizes.setdefault(address, {}).update(new)
        weakref.finalize(selectors, self._release, address, keys)

    def held(self, address: str) -> int:
        """Distinct patterns `address` holds now."""
        return len(self._held.get(address, ()))

    def held_bytes(self, address: str) -> int:
        """What the distinct patterns `address` holds now are charged."""
        return sum(self._sizes.get(address, {}).values())

    def _release(self, address: str, keys: list[_Key]) -> None:
        held = self._held.get(address)
        if held is None:
            return
        held.subtract(keys)
        sizes = self._sizes.get(address, {})
        for key in keys:
            if held[key] <= 0:
                del held[key]
                sizes.pop(key, None)
        if not held:
            del self._held[address]
            self._sizes.pop(address, None)


def _keys(selectors: Sequence[Selector], base_url: str) -> list[_Key]:
    """The compiled patterns a set of `selectors` holds (a wildcard compiles none), once each."""
    texts = {s.text for s in selectors if s.kind == "urlpattern" and s.text != WILDCARD}
    if any(s.text == WILDCARD for s in selectors):
        return []
    return [(text, base_url) for text in sorted(texts)]


shares = PatternShares()
"""The process's shares (as the compiled patterns are the process's)."""
