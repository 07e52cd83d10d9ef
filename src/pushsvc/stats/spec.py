"""``WindowSpec``: one configuration of windows and statistics, validated and compiled once.

An aggregator holds one spec and calls ``new()`` for every topic it meets; the generated
class (``fastpath.py``) is made once per configuration and shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from pushsvc.stats.fastpath import specialise
from pushsvc.stats.layout import STAT_KEYS, validate
from pushsvc.stats.windows import TopicWindows


@cache
def _fast_class(
    widths: tuple[int, ...], labels: tuple[str, ...], stats: tuple[str, ...]
) -> type[TopicWindows]:
    fast: type[TopicWindows] = specialise(TopicWindows, widths, labels, stats)
    return fast


class WindowSpec:
    """Window widths (µs), their labels, and the statistics computed (``STAT_KEYS`` order)."""

    __slots__ = ("_fast", "labels", "stats", "widths_us")

    def __init__(
        self, widths_us: Sequence[int], labels: Sequence[str], stats: Sequence[str] = STAT_KEYS
    ) -> None:
        self.widths_us, self.labels, self.stats = validate(widths_us, labels, stats)
        self._fast = _fast_class(self.widths_us, self.labels, self.stats)

    @property
    def widest_us(self) -> int:
        return max(self.widths_us)

    def new(self) -> TopicWindows:
        """A topic's windows, empty, with the fast paths."""
        return self._fast(self.widths_us, self.labels, stats=self.stats)

    def reference(self) -> TopicWindows:
        """The same without the generated fast paths: what they are checked against."""
        return TopicWindows(self.widths_us, self.labels, stats=self.stats)
