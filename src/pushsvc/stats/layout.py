"""The statistics' names, and the layout of a topic's scalar state: one owner for both.

``TopicWindows`` (``windows.py``) keeps its scalar state in one flat list ``_st`` so that the
generated fast paths (``fastpath.py``) move it in and out of local variables with one unpack
and one list display; both read the layout from here. Topic fields come first, then
``WSTRIDE`` fields per window, in window order.
"""

from __future__ import annotations

from collections.abc import Sequence

# The names a rule may ask for, which the layout lays out (re-exported for the engine).
from pushsvc.rules.names import ALL_STATS as ALL_STATS
from pushsvc.rules.names import QUANTILES
from pushsvc.rules.names import STAT_KEYS as STAT_KEYS

#: Every statistic except the quantiles: O(1) per event, no sorted list kept.
SCALAR_STATS: tuple[str, ...] = STAT_KEYS[:7]

QUANTILE_OF = dict(QUANTILES)
MOMENTS_1 = frozenset({"sum", "mean", "var", "stddev"})  # need S1 = sum(x)
MOMENTS_2 = frozenset({"var", "stddev"})  # need S2 = sum(x * x)

# The fast paths hold values whose integer needs a scale of at most 2**-MAX_FAST_SHIFT and
# whose magnitude is below HUGE, so that ``int(v * 2.0**shift)`` is exact and every scaled
# moment stays a normal double (var * 4**shift < 2**(2*380 + 2 + 256) < 2**1023, see
# ``fastpath.py``). A value outside that (1e-300, 1e200) switches the topic to the exact
# general path until it has left every window.
MAX_FAST_SHIFT = 128
HUGE = 2.0**380
NO_CLOCK = -(1 << 63)
"""``CLOCK`` before the first event."""

# Topic fields: the clock T, the integer scale's exponent, 2**shift, 2**-shift, and the
# magnitude limit of the fast path (0.0 while the topic is on the exact path).
CLOCK, SHIFT, FUNIT, INV, LIMIT = range(5)
TOPIC_FIELDS = 5
# Per window: its left index in the buffer, scaled S1 and S2, and its max/min pointers.
LEFT, S1, S2, MAXP, MINP = range(5)
WSTRIDE = 5

_TOPIC_NAMES = ("clock", "shift", "unit", "inv_unit", "limit")
_WINDOW_NAMES = ("left", "sum", "sumsq", "maxptr", "minptr")


def local_names(windows: int) -> list[str]:
    """The fast paths' local variable for each state field, in layout order."""
    names = list(_TOPIC_NAMES)
    for i in range(windows):
        names += [f"{prefix}{i}" for prefix in _WINDOW_NAMES]
    assert len(names) == TOPIC_FIELDS + WSTRIDE * windows
    return names


def initial_state(windows: int, *, limit: float) -> list[int | float]:
    """A topic's state before its first event (`limit`: see LIMIT)."""
    return [NO_CLOCK, 0, 1.0, 1.0, limit] + [0, 0, 0, 1, 1] * windows


def validate(
    widths_us: Sequence[int], labels: Sequence[str], stats: Sequence[str]
) -> tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
    """Widths, labels and the statistics (in ``STAT_KEYS`` order), checked."""
    if len(widths_us) != len(labels) or not labels:
        raise ValueError("need one label per window width, and at least one window")
    if len(set(labels)) != len(labels):
        raise ValueError(f"window labels must be distinct: {list(labels)}")
    for width in widths_us:
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise ValueError(f"window widths must be positive integers (µs), got {width!r}")
    return tuple(widths_us), tuple(labels), select_stats(stats, STAT_KEYS)


def select_stats(stats: Sequence[str], known: Sequence[str] = ALL_STATS) -> tuple[str, ...]:
    """`stats` checked against `known` and put in its order (repeats dropped); ValueError
    naming what is wrong. Every window kind reports its statistics in this one order."""
    if isinstance(stats, str):
        raise ValueError(f"stats must be a sequence of names, got the string {stats!r}")
    for name in stats:
        if name not in known:
            raise ValueError(f"unknown statistic {name!r}; known: {', '.join(known)}")
    if not stats:
        raise ValueError("select at least one statistic")
    chosen = set(stats)
    return tuple(name for name in known if name in chosen)
