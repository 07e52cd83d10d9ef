"""Grants by credential (`pushsvc.security.grant_cache`): never past their expiry, at most so
many, the least recently used going first."""

from __future__ import annotations

from pushsvc.security.grant_cache import ENTRY_BYTES, MISSING, GrantCache
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import Grant

GRANT = Grant("u", Scope.of([]), Scope.of(["a"]), 0.0)


def test_a_grant_is_kept_until_its_expiry_and_not_a_moment_longer() -> None:
    cache = GrantCache(10)
    cache.put(b"k", GRANT, 100.0)
    assert cache.get(b"k", 99.999) is GRANT
    assert cache.get(b"k", 100.0) is MISSING
    assert len(cache) == 0  # dropped when read past its expiry


def test_a_denial_is_kept_as_none() -> None:
    cache = GrantCache(10)
    cache.put(b"k", None, 100.0)
    assert cache.get(b"k", 50.0) is None
    assert cache.get(b"other", 50.0) is MISSING


def test_full_it_lets_go_of_the_least_recently_used() -> None:
    cache = GrantCache(2)
    cache.put(b"a", GRANT, 100.0)
    cache.put(b"b", GRANT, 100.0)
    assert cache.get(b"a", 1.0) is GRANT  # a is used: b is now the oldest
    cache.put(b"c", GRANT, 100.0)
    assert len(cache) == 2
    assert cache.get(b"b", 1.0) is MISSING
    assert cache.get(b"a", 1.0) is GRANT and cache.get(b"c", 1.0) is GRANT


def test_full_in_bytes_it_lets_go_of_the_least_recently_used() -> None:
    """Counted as the answer's bytes plus ENTRY_BYTES each: big answers are kept fewer."""
    cache = GrantCache(100, max_bytes=3 * (ENTRY_BYTES + 1000))
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, GRANT, 100.0, size=1000)
    assert len(cache) == 3 and cache.held_bytes == 3 * (ENTRY_BYTES + 1000)
    assert cache.get(b"a", 1.0) is MISSING
    cache.put(b"big", GRANT, 100.0, size=2500)  # its room is two others'
    assert cache.get(b"b", 1.0) is MISSING and cache.get(b"c", 1.0) is MISSING
    assert cache.get(b"d", 1.0) is GRANT and cache.get(b"big", 1.0) is GRANT
    assert cache.held_bytes == 2 * ENTRY_BYTES + 3500


def test_putting_a_key_again_counts_it_once() -> None:
    cache = GrantCache(10)
    cache.put(b"k", GRANT, 100.0, size=10)
    cache.put(b"k", None, 200.0)
    assert len(cache) == 1 and cache.held_bytes == ENTRY_BYTES
    assert cache.get(b"k", 150.0) is None
