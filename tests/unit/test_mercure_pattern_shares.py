"""Each client address's share of the process's compiled Mercure URL patterns
(`pushsvc.deliver.mercure_pattern_shares`)."""

from __future__ import annotations

import gc

import pytest

from pushsvc.deliver.mercure_pattern_shares import PatternShares
from pushsvc.deliver.mercure_selectors import Selector, SelectorSet
from pushsvc.errors import TooManyPatterns

BASE = "https://hub.example.com/.well-known/mercure"


def patterns(*names: str) -> list[Selector]:
    return [Selector("urlpattern", f"https://example.com/{n}/:id") for n in names]


def held_set(shares: PatternShares, address: str, selectors: list[Selector]) -> SelectorSet:
    shares.check(address, selectors, BASE)
    made = SelectorSet(selectors, base_url=BASE)
    shares.hold(address, made)
    return made


def test_an_address_holds_its_share_and_others_theirs() -> None:
    shares = PatternShares(per_address=3)
    first = held_set(shares, "a", patterns("p1", "p2"))
    # A pattern the address holds already costs nothing more; exact ones and `*` none at all.
    second = held_set(shares, "a", [*patterns("p2", "p3"), Selector("match", "x")])
    assert shares.held("a") == 3
    with pytest.raises(TooManyPatterns, match="at most 3"):
        shares.check("a", patterns("p4"), BASE)
    shares.check("a", [Selector("urlpattern", "*"), *patterns("p1")], BASE)
    held_set(shares, "b", patterns("p4", "p5", "p6"))  # another address: its own share
    del first
    gc.collect()
    assert shares.held("a") == 2  # p1 released; p2 still held by the second set
    del second
    gc.collect()
    assert shares.held("a") == 0
    held_set(shares, "a", patterns("p7", "p8", "p9"))


def test_an_address_holds_its_share_in_bytes_too() -> None:
    # Room for about two patterns' charges (each its compiled size and its evaluations').
    one = SelectorSet(patterns("b0"), base_url=BASE).pattern_bytes()
    shares = PatternShares(per_address=100, bytes_per_address=int(sum(one.values()) * 2.5))
    first = held_set(shares, "a", patterns("b1", "b2"))
    assert 0 < shares.held_bytes("a") <= shares.bytes_per_address
    with pytest.raises(TooManyPatterns, match="MiB"):
        held_set(shares, "a", patterns("b3"))
    assert shares.held("a") == 2  # the refused set holds nothing
    held_set(shares, "a", patterns("b1"))  # one it holds already costs nothing more
    held_set(shares, "b", patterns("b3", "b4"))  # another address: its own share
    del first
    gc.collect()
    assert shares.held_bytes("a") == 0
    held_set(shares, "a", patterns("b3"))
