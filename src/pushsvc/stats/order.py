"""Order statistics of a window: min, max and linearly interpolated quantiles.

Each window keeps its values in a ``sortedcontainers.SortedList``: add/remove are O(log n)
and positional reads are O(log n). min and max are its ends (O(1)).

Quantiles follow pandas ``rolling(...).quantile(q, interpolation="linear")`` operation for
operation, so results are bit-identical to it: ``pos = q * (n - 1)``, ``lo = int(pos)``;
``x[lo]`` when ``pos`` is integral, else ``x[lo] + (x[lo + 1] - x[lo]) * (pos - lo)``.

Speed: this runs for every window on every update; with the ``SortedList`` updates it is
most of the cost of a window with quantiles. The public API costs one tree walk per
``values[i]`` (or per ``values[i:i + 2]``); ``SortedList``'s own ``_pos``/``_lists`` give
``x[lo]`` and its neighbour from a single walk, about a third faster over three windows. Those
names are private (stable since sortedcontainers 2.0), so they are probed once at import and
the public API is used if they ever change. A list of one sublist (a small window, e.g. a
group's) is indexed directly.
"""

from __future__ import annotations

from collections.abc import Callable

from sortedcontainers import SortedList

from pushsvc.rules.names import QUANTILES

__all__ = ["QUANTILES", "order_stats", "order_stats_for"]

#: (stat name, q) reported for every window, in output order.

_QS = tuple(q for _, q in QUANTILES)


def order_stats_public(values: SortedList, qs: tuple[float, ...] = _QS) -> list[float]:
    """``[min, max, *quantiles]`` (``qs``, default ``QUANTILES``) of a non-empty sorted window."""
    n1 = len(values) - 1
    out = [values[0], values[-1]]
    append = out.append
    for q in qs:
        pos = q * n1
        lo = int(pos)
        if lo == pos:
            append(values[lo])
        else:
            # One slice is one tree walk (SortedList's small-slice fast path), two reads two.
            low, high = values[lo : lo + 2]
            append(low + (high - low) * (pos - lo))
    return out


def order_stats_internal(values: SortedList, qs: tuple[float, ...] = _QS) -> list[float]:
    """Same as ``order_stats_public``, one tree walk per quantile via SortedList internals."""
    lists = values._lists
    n1 = values._len - 1
    first = lists[0]
    out = [first[0], lists[-1][-1]]
    append = out.append
    if len(lists) == 1:
        # One sublist (under 2000 values: a group's windows, short ones): every position is
        # an index into it, so no tree walk, not even `_pos`'s call (9 a grouped event).
        for q in qs:
            pos = q * n1
            lo = int(pos)
            low = first[lo]
            append(low if lo == pos else low + (first[lo + 1] - low) * (pos - lo))
        return out
    pos_of = values._pos
    for q in qs:
        pos = q * n1
        lo = int(pos)
        i, j = pos_of(lo)
        sub = lists[i]
        low = sub[j]
        if lo == pos:
            append(low)
        else:
            j += 1
            high = sub[j] if j < len(sub) else lists[i + 1][0]
            append(low + (high - low) * (pos - lo))
    return out


def _internals_work() -> bool:
    # Several sublists, and p50 of 2000 values straddles the first two (1000 each).
    probes = [SortedList(map(float, range(k))) for k in (1, 2, 7, 2000, 5000)]
    try:
        return all(order_stats_internal(p) == order_stats_public(p) for p in probes)
    except (AttributeError, TypeError, ValueError, IndexError):
        return False


order_stats = order_stats_internal if _internals_work() else order_stats_public


def order_stats_for(qs: tuple[float, ...]) -> Callable[[SortedList], list[float]]:
    """``order_stats`` for the quantiles ``qs`` only: ``[min, max, *quantiles]``."""
    if qs == _QS:
        return order_stats
    impl = order_stats

    def selected(values: SortedList) -> list[float]:
        return impl(values, qs)

    return selected
