"""Rolling-window statistics: one ``TopicWindows`` per topic, updated incrementally per event.

See ``windows.py`` for the window semantics and buffer, ``moments.py`` for the exact
count/sum/mean/variance arithmetic and its error analysis, ``order.py`` for min/max/quantiles.
"""

from __future__ import annotations

from pushsvc.stats.order import QUANTILES
from pushsvc.stats.windows import STAT_KEYS, TopicWindows

__all__ = ["QUANTILES", "STAT_KEYS", "TopicWindows"]
