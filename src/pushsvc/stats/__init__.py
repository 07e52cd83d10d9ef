"""Rolling-window statistics: one ``TopicWindows`` per topic, updated incrementally per event.

See ``windows.py`` for the window semantics, buffer and statistic selection, ``fastpath.py``
for the generated per-event paths, ``moments.py`` for the exact count/sum/mean/variance
arithmetic and its error analysis, ``order.py`` for quantiles and ``extrema.py`` for min/max
without a sorted list.
"""

from __future__ import annotations

from pushsvc.stats.order import QUANTILES
from pushsvc.stats.windows import SCALAR_STATS, STAT_KEYS, TopicWindows

__all__ = ["QUANTILES", "SCALAR_STATS", "STAT_KEYS", "TopicWindows"]
