"""A serving process's collector thresholds (`pushsvc.ops.collector`): full passes ten times
rarer, the young generations' collections as CPython's."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pushsvc.ops import collector


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)


def test_only_the_oldest_generation_is_passed_over_more(thresholds: tuple[int, int, int]) -> None:
    young, middle, oldest = thresholds
    collector.tune_for_streams()
    assert gc.get_threshold() == (young, middle, collector.OLDEST_EVERY)
    assert 10 * oldest <= collector.OLDEST_EVERY
