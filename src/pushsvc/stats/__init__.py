"""Rolling-window statistics: one ``TopicWindows`` per topic, updated incrementally per event.

The module map:

* ``layout.py``   — the statistics' names and the flat layout of a topic's scalar state;
* ``windows.py``  — ``TopicWindows``: window semantics, the shared buffer, statistic
  selection, and the general (reference) path for everything;
* ``fastpath.py`` — the per-configuration generated ``insert`` / ``insert_many`` / ``summary``
  (what it generates for the default configuration: ``fastpath_default.py.txt``);
* ``spec.py``     — ``WindowSpec``: one configuration, validated and compiled once; ``new()``;
* ``moments.py``  — exact count/sum/mean/variance arithmetic and its error analysis;
* ``order.py``    — quantiles; ``extrema.py`` — min/max without a sorted list;
* ``long_windows.py`` — ``LongWindows``: windows too long to keep their events (exact moments
  and min/max over sub-buckets, quantiles from ``sketch.py``'s relative-error ``Sketch``);
  ``state_codec.py`` — the bytes of their state.
"""

from __future__ import annotations

from pushsvc.stats.layout import ALL_STATS, SCALAR_STATS, STAT_KEYS
from pushsvc.stats.order import QUANTILES
from pushsvc.stats.spec import WindowSpec
from pushsvc.stats.windows import TopicWindows

__all__ = ["ALL_STATS", "QUANTILES", "SCALAR_STATS", "STAT_KEYS", "TopicWindows", "WindowSpec"]
