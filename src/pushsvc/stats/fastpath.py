"""Per-configuration fast paths for ``TopicWindows``: ``insert``, ``insert_many``, ``summary``
and ``insert_and_summary``.

Why generate code: per event, the engine does a few dozen integer and list operations per
window, and in CPython the interpreter's overhead around them (attribute loads, loop
iterations over window objects, method calls) costs as much as the operations. So for each
(widths, labels, stats) this module writes the methods out with every window unrolled
into local variables, only the work the selected statistics need, and the labels and keys as
literals; then compiles them into a subclass of ``TopicWindows``. ``insert_many`` keeps the
whole state in locals for a batch. The generated source is kept on the class
(``_fast_source``) for reading and profiling.

What it generates for the server's default configuration (windows ``10s,1m,5m``, every
statistic) is committed as ``fastpath_default.py.txt`` beside this module, and
``tests/unit/test_fastpath_golden.py`` checks it is current; after a deliberate change regenerate
it with ``PUSHSVC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_fastpath_golden.py`` and review
the diff. The source is built from the templates below (``_INSERT``, ``_INSERT_MANY``,
``_SUMMARY`` and their pieces), which read like the code they make.

The shape of each method:

* ``insert``: load the few fields the accept test needs; if the event passes it, bind the
  buffers and unpack ``_st`` into locals, apply the event (buffer, extrema, then every window
  in turn: add the event, evict what fell out, move the min/max pointers), store the locals
  back into ``_st`` and return. A late event inside the widest window takes its own branch
  (below). Otherwise call the general ``_insert_slow``.
* ``insert_many``: the same per item with the state in locals for the whole batch, then every
  window's summary dict; a rejected item stores the locals, runs the general path and
  reloads. ``finally`` stores the locals whatever happens.
* ``summary``: unpack ``_st``, then per window its count and, when it is not empty, its
  statistics from the sums, the extrema lists or the sorted list.
* ``insert_and_summary``: ``insert``'s fast case, then the summary from the same locals: one
  load and one store of ``_st`` where ``insert`` then ``summary`` take two loads. A group's
  event takes this path (each event goes to a different group's windows, so there is no
  batch to keep in locals as ``insert_many`` does). After a compaction, or off the fast case,
  it is ``insert`` then ``summary``.

The generated locals (``i`` is a window's index, in configuration order):

===================================  ============================================================
local                                meaning
===================================  ============================================================
``clock shift unit inv_unit limit``  topic fields of ``_st`` (``layout.py``): clock ``T``, the
                                     integer scale's exponent, ``2.0**shift``, ``2.0**-shift``,
                                     the fast path's magnitude limit (0.0: exact path only)
``left{i} sum{i} sumsq{i}``          window fields: left index into the buffer, scaled integer
                                     sums of ``x`` and ``x * x``
``maxptr{i} minptr{i}``              window fields: index of the window's max / min entry in the
                                     shared extrema lists (``extrema.py``)
``t v``                              the event's time (µs) and value
``x_float x x_sq``                   ``v * unit``; it as an exact ``int``; its square
``old old_x``                        a value leaving a window; it scaled to an ``int``
``bound``                            ``t - width``: a window holds the events after it
``times values end``                 the buffer (``_ts``, ``_vals``) and its length
``compact_at``                       ``_cat``: compact the buffer once the widest ``left`` is here
``max_times max_values max_last``    the max list (sentinel first) and its last index; same
                                     for ``min_*``
``sorted{i}``                        window ``i``'s ``SortedList`` (when a quantile is selected)
``order_stats``                      ``_ostats``: ``[min, max, *quantiles]`` of a sorted list,
``lowest highest p50 p90 p99``       read into these (the selected quantiles only)
``n var stats{i} inv_unit2``         a window's count, variance, statistics dict; ``inv_unit**2``
===================================  ============================================================

``append_*``, ``pop_*``, ``add_sorted{i}``, ``remove_sorted{i}`` are bound methods of those
lists, looked up once per call. ``lists{i}`` and ``maxes{i}`` are ``sorted{i}``'s sublists and
their maxima (``SortedList`` internals): a list of one sublist (``sub``, under 1000 values)
takes an insert and a removal inline with ``insort`` and ``bisect_left``, SortedList's own
steps, without its two method calls each (``_ADD_SORTED``).

Only validated data reaches the source: window widths are ints, statistic names come from
``STAT_KEYS``, and labels enter as ``repr()`` literals, so nothing a user configures is ever
executed.

The generated code covers two cases of an event whose value is exact at the current integer
scale and below ``HUGE`` (``layout.py``), in a topic not on the exact path: in order, and late
but inside the widest window (a rule's grace keeps such events; in place: the buffer's lists
take it by bisection, each window whose span it falls in adds it, the others move their left
edge over it, and nothing is evicted). Anything else writes the locals back to ``_st`` and
calls the general method (``windows.py``), which is the reference the fast paths must match
(the oracle tests run both).
"""

from __future__ import annotations

import bisect
import linecache
import math
import re
from pathlib import Path
from string import Template

from sortedcontainers import SortedList

from pushsvc.stats.layout import (
    CLOCK,
    FUNIT,
    LIMIT,
    MOMENTS_1,
    MOMENTS_2,
    QUANTILE_OF,
    STAT_KEYS,
    TOPIC_FIELDS,
    WSTRIDE,
    local_names,
)

__all__ = ["DEFAULT_CONFIGURATION", "GOLDEN_PATH", "generate", "specialise"]

#: The server's default (``config.py``: ``--windows 10s,1m,5m``, every statistic): widths in
#: µs, labels, statistics. Its generated source is the golden file.
DEFAULT_CONFIGURATION: tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]] = (
    (10_000_000, 60_000_000, 300_000_000),
    ("10s", "1m", "5m"),
    STAT_KEYS,
)
#: What ``generate(*DEFAULT_CONFIGURATION)`` returns, committed for review.
GOLDEN_PATH = Path(__file__).with_name("fastpath_default.py.txt")


def specialise(
    base: type, widths: tuple[int, ...], labels: tuple[str, ...], stats: tuple[str, ...]
) -> type:
    """A subclass of ``base`` with ``insert``, ``insert_many``, ``summary`` and
    ``insert_and_summary`` generated."""
    source = generate(widths, labels, stats)
    namespace: dict[str, object] = {
        "_sqrt": math.sqrt,
        "_insort": bisect.insort,
        "_bisect_left": bisect.bisect_left,
        "_bisect_right": bisect.bisect_right,
    }
    filename = f"<pushsvc.stats.fastpath {labels} {stats}>"
    # Registered with linecache (as dataclasses and attrs do for their generated methods), so
    # that tracebacks, pdb and profilers show the generated lines rather than nothing. The
    # entry has no mtime, so linecache.checkcache never drops it.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)
    attrs = {
        "__slots__": (),
        "__doc__": base.__doc__,
        "_fast_source": source,
        "insert": namespace["insert"],
        "insert_many": namespace["insert_many"],
        "summary": namespace["summary"],
        "insert_and_summary": namespace["insert_and_summary"],
    }
    for name in ("insert", "insert_many", "summary", "insert_and_summary"):
        attrs[name].__doc__ = getattr(base, name).__doc__
    return type(f"TopicWindows_{'_'.join(labels)}", (base,), attrs)


def generate(widths: tuple[int, ...], labels: tuple[str, ...], stats: tuple[str, ...]) -> str:
    """The source of ``insert``, ``insert_many``, ``summary`` and ``insert_and_summary`` for
    one configuration."""
    return _Source(widths, labels, stats).module()


# -- filling templates -----------------------------------------------------------------------

_BLOCK_LINE = re.compile(r"(?P<indent> *)\$(?P<name>\w+)")


def _fill(template: str, **fields: object) -> str:
    """``template`` with its ``$name`` placeholders filled from ``fields``.

    A line that is only ``$name`` takes a block (source lines, each ending in a newline),
    indented to that line's depth; an empty block removes the line. Any other ``$name`` or
    ``${name}`` is replaced inline. Filled-in text is never read as a template again.
    """
    out: list[str] = []
    for line in template.split("\n")[:-1]:
        block = _BLOCK_LINE.fullmatch(line)
        if block is None:
            out.append(Template(line).substitute(fields) + "\n")
            continue
        text = fields[block["name"]]
        assert isinstance(text, str) and (text == "" or text.endswith("\n")), block["name"]
        out += [block["indent"] + code + "\n" for code in text.split("\n")[:-1]]
    return "".join(out)


# -- templates: the methods --------------------------------------------------------------------
#
# Placeholders: $fields lists every state local in layout order (``layout.local_names``), a
# line for the topic's and one per window's; $accept is _ACCEPT_SCALED or _ACCEPT, holding the
# method's fast case; $wide is the widest window's index.

_INSERT = """\
def insert(self, ts_us, value):
    v = float(value)
    st = self._st
    t = ts_us
    clock = st[$CLOCK]
    limit = st[$LIMIT]
    unit = st[$FUNIT]
    $accept
    $accept_late
    self._insert_slow(ts_us, v)
"""

_INSERT_FAST = """\
t = ts_us
$bind_lists
(
    $fields
) = st
end = len(times)
$event
$store
if left$wide >= self._cat:
    self._compact()
return
"""

# A late event leaves the widest window's left edge where it is: no compaction is due.
_LATE_IN_LOCALS = """\
$bind_lists
(
    $fields
) = st
end = len(times)
$late_event
$store
"""

_INSERT_LATE_FAST = _LATE_IN_LOCALS + "return\n"

_INSERT_MANY = """\
def insert_many(self, items):
    $bind_lists
    $load
    out = []
    emit = out.append
    try:
        for t, value in items:
            v = float(value)
            $accept
            $accept_late
            $store
            self._insert_slow(t, v)
            $load
            emit(self.summary())
    finally:
        $store
    return out
"""

_INSERT_MANY_FAST = """\
$event
if left$wide >= compact_at:
    $store
    self._compact()
    $load
$summaries
emit($summary_dict)
continue
"""

_INSERT_MANY_LATE_FAST = """\
$late_event
$summaries
emit($summary_dict)
continue
"""

_SUMMARY = """\
def summary(self):
    (
        $fields
    ) = self._st
    $exact_path
    $bind_extrema_values
    $bind_sorted
    sqrt = _sqrt
    inv_unit2 = inv_unit * inv_unit
    end = len(self._ts)
    $summaries
    return $summary_dict
"""

# ``summary``'s exact-path test is not needed here: the fast case implies ``limit > 0.0``.
_INSERT_AND_SUMMARY = """\
def insert_and_summary(self, ts_us, value):
    v = float(value)
    st = self._st
    t = ts_us
    clock = st[$CLOCK]
    limit = st[$LIMIT]
    unit = st[$FUNIT]
    $accept
    $accept_late
    self._insert_slow(ts_us, v)
    return self.summary()
"""

_INSERT_AND_SUMMARY_FAST = """\
$bind_lists
(
    $fields
) = st
end = len(times)
$event
$store
if left$wide >= self._cat:
    self._compact()
    return self.summary()
inv_unit2 = inv_unit * inv_unit
$summaries
return $summary_dict
"""

_INSERT_AND_SUMMARY_LATE_FAST = (
    _LATE_IN_LOCALS
    + """\
inv_unit2 = inv_unit * inv_unit
$summaries
return $summary_dict
"""
)

_SUMMARY_EXACT_PATH = """\
if limit == 0.0:
    return self._summary_exact()
"""

_SUMMARY_EXTREMA_VALUES = """\
max_values = self._ext.mxv
min_values = self._ext.mnv
"""

# -- templates: state in and out of locals, lists bound to locals ------------------------------

_STORE = """\
self._st = [
    $fields
]
"""

_LOAD = """\
(
    $fields
) = self._st
inv_unit2 = inv_unit * inv_unit
end = len(times)
compact_at = self._cat
"""

# The buffer, the extrema lists and the sorted lists are never rebound: bound once per call.
_BIND_LISTS = """\
times = self._ts
values = self._vals
append_time = times.append
append_value = values.append
sqrt = _sqrt
$bind_extrema
$bind_sorted
"""

_BIND_EXTREMA = """\
extrema = self._ext
max_times = extrema.mxt
max_values = extrema.mxv
min_times = extrema.mnt
min_values = extrema.mnv
append_max_time = max_times.append
append_max_value = max_values.append
pop_max_time = max_times.pop
pop_max_value = max_values.pop
append_min_time = min_times.append
append_min_value = min_values.append
pop_min_time = min_times.pop
pop_min_value = min_values.pop
"""

_BIND_ORDER_STATS = """\
order_stats = self._ostats
"""

_BIND_SORTED = """\
sorted$i = self._sorted[$i]
add_sorted$i = sorted$i.add
remove_sorted$i = sorted$i.remove
"""

_BIND_SORTED_INTERNALS = """\
lists$i = sorted$i._lists
maxes$i = sorted$i._maxes
"""

_BIND_SORTED_HELPERS = """\
insort = _insort
bisect_left = _bisect_left
"""

_SUMMARY_BIND_SORTED = """\
sorted$i = self._sorted[$i]
"""

# -- templates: one event ----------------------------------------------------------------------

# The fast case: in order, within the magnitude limit and, when sums are kept, exact at the
# current integer scale (``x_float`` is then an integer).
_ACCEPT_SCALED = """\
if t >= clock and -limit < v < limit:
    x_float = v * unit
    if x_float.is_integer():
        $fast
"""

_ACCEPT = """\
if t >= clock and -limit < v < limit:
    $fast
"""

# The late case: behind the clock but inside the widest window (an event older than every
# window changes nothing: the general path), under the same magnitude and scale tests.
_ACCEPT_LATE_SCALED = """\
if clock - $widest < t < clock and -limit < v < limit:
    x_float = v * unit
    if x_float.is_integer():
        $fast
"""

_ACCEPT_LATE = """\
if clock - $widest < t < clock and -limit < v < limit:
    $fast
"""

_EVENT = """\
clock = t
append_time(t)
append_value(v)
end += 1
$scale
$push_extrema
$windows
"""

_SCALE = """\
x = int(x_float)
"""

_SQUARE = """\
x_sq = x * x
"""

_PUSH_EXTREMA = """\
# The sentinels (+inf / -inf at index 0) end these loops.
while max_values[-1] <= v:
    pop_max_value()
    pop_max_time()
append_max_time(t)
append_max_value(v)
max_last = len(max_values) - 1
while min_values[-1] >= v:
    pop_min_value()
    pop_min_time()
append_min_time(t)
append_min_value(v)
min_last = len(min_values) - 1
"""

_WINDOW_UPDATE = """\
# Window $i, $label: the events with t - $width < ts <= t.
bound = t - $width
$add_event
# The new event ends the buffer with ts > bound, so this loop needs no bounds check.
while times[left$i] <= bound:
    $evict_event
    left$i += 1
$move_pointers
"""

_ADD_SUM = "sum$i += x\n"
_ADD_SUMSQ = "sumsq$i += x_sq\n"
# A sorted list of one sublist (a small window: a group's) is changed as SortedList's own
# add and remove change it, inline: two calls fewer per event and window. A list of one
# sublist has no positional index to keep (SortedList builds one only over several, and
# clears it when they merge back into one); below 1000 values an insert cannot split it,
# and a removal that would empty it takes SortedList's own path.
_ADD_SORTED_INLINE = """\
if len(lists$i) == 1 and len(sub := lists$i[0]) < 1000:
    insort(sub, v)
    maxes$i[0] = sub[-1]
    sorted$i._len += 1
else:
    add_sorted$i(v)
"""
_EVICT_READ = "old = values[left$i]\n"
_EVICT_SUM = "old_x = int(old * unit)\nsum$i -= old_x\n"
_EVICT_SUMSQ = "sumsq$i -= old_x * old_x\n"
_EVICT_SORTED_INLINE = """\
if len(lists$i) == 1 and len(sub := lists$i[0]) > 1:
    del sub[bisect_left(sub, old)]
    maxes$i[0] = sub[-1]
    sorted$i._len -= 1
else:
    remove_sorted$i(old)
"""


def _inline_sorted_works() -> bool:
    """Whether SortedList's internals are as the inline steps above assume (stable since
    sortedcontainers 2.0; probed once, as ``order.py`` does, and the methods are called if
    they ever change)."""
    try:
        probe = SortedList([3.0, 1.0, 2.0])
        lists, maxes = probe._lists, probe._maxes
        sub = lists[0]
        bisect.insort(sub, 2.5)
        maxes[0] = sub[-1]
        probe._len += 1
        del sub[bisect.bisect_left(sub, 1.0)]
        maxes[0] = sub[-1]
        probe._len -= 1
        probe.add(0.5)
        probe.remove(3.0)
        return len(lists) == 1 and not probe._index and list(probe) == [0.5, 2.0, 2.5]
    except (AttributeError, TypeError, IndexError, ValueError):
        return False


_INLINE_SORTED = _inline_sorted_works()
_ADD_SORTED = _ADD_SORTED_INLINE if _INLINE_SORTED else "add_sorted$i(v)\n"
_EVICT_SORTED = _EVICT_SORTED_INLINE if _INLINE_SORTED else "remove_sorted$i(old)\n"

# A late event goes in after the held events with ts <= its ts (bisection from the widest
# window's left edge: nothing before it is held), into each window whose span it falls in; a
# window it is older than keeps its content, so its left edge moves over the new entry. The
# clock does not move, so nothing is evicted.
_LATE_EVENT = """\
at = _bisect_right(times, t, left$wide)
times.insert(at, t)
values.insert(at, v)
end += 1
$scale
$windows
$extrema
"""

_LATE_WINDOW = """\
# Window $i, $label: holds the event if clock - $width < t.
if t > clock - $width:
    $add_event
else:
    left$i += 1
"""

# (A window that keeps neither sums nor a sorted list: only its left edge to move.)
_LATE_WINDOW_COUNTED = """\
# Window $i, $label: holds the event if clock - $width < t.
if t <= clock - $width:
    left$i += 1
"""

_LATE_WIDEST = """\
# Window $i, $label, the widest: the accept test put the event in it.
$add_event
"""

# The rare path's own steps (``extrema.py``): the late entry placed in both monotonic lists,
# then each window's pointers found again by bisection.
_LATE_EXTREMA = """\
extrema.insert_late(t, v)
"""

_LATE_POINTERS = """\
maxptr$i, minptr$i = extrema.pointers(clock - $width)
"""

# A pointer past the last entry means its entries were popped: the new one is then the
# window's first; otherwise it only moves forward.
_MOVE_POINTERS = """\
if maxptr$i > max_last:
    maxptr$i = max_last
while max_times[maxptr$i] <= bound:
    maxptr$i += 1
if minptr$i > min_last:
    minptr$i = min_last
while min_times[minptr$i] <= bound:
    minptr$i += 1
"""

# -- templates: one window's summary ------------------------------------------------------------
#
# Each moment is one correctly rounded operation on exact integers followed by an exact
# power-of-two scaling: ``float(S1)``, ``S1 / n`` and ``(n*S2 - S1**2) / (n*(n-1))`` (int true
# division rounds correctly) times ``2**-shift`` or ``2**-2shift``. The fast path's bounds
# (shift <= 128, |value| < 2**380) keep every intermediate a normal double, so the scaling
# cannot round or overflow. Dividing by the small ``n`` rather than by ``n << shift`` saves a
# third of the division's cost.

_WINDOW_SUMMARY_VAR = """\
n = end - left$i
if n > 1:
    $read_sorted
    var = (n * sumsq$i - sum$i * sum$i) / (n * n - n) * inv_unit2
    stats$i = {
        $full
    }
elif n:
    $read_sorted
    stats$i = {
        $single
    }
else:
    stats$i = {
        $empty
    }
"""

_WINDOW_SUMMARY = """\
n = end - left$i
if n:
    $read_sorted
    stats$i = {
        $full
    }
else:
    stats$i = {
        $empty
    }
"""

_READ_SORTED = """\
$names = order_stats(sorted$i)
"""


class _Source:
    """The templates filled for one configuration."""

    def __init__(
        self, widths: tuple[int, ...], labels: tuple[str, ...], stats: tuple[str, ...]
    ) -> None:
        self.widths = widths
        self.labels = labels
        self.stats = stats
        selected = set(stats)
        # What the statistics need kept, as in TopicWindows: the scaled sums S1 and S2, a
        # SortedList per window (quantiles), or the shared extrema lists (min/max without).
        self.sums = bool(selected & MOMENTS_1)
        self.squares = bool(selected & MOMENTS_2)
        self.quantiles = [name for name in stats if name in QUANTILE_OF]
        self.sorted_lists = bool(self.quantiles)
        self.extrema = not self.sorted_lists and bool(selected & {"min", "max"})
        self.wide = max(range(len(widths)), key=widths.__getitem__)
        names = local_names(len(widths))
        rows = [names[:TOPIC_FIELDS]] + [
            names[start : start + WSTRIDE] for start in range(TOPIC_FIELDS, len(names), WSTRIDE)
        ]
        self.fields = "".join(", ".join(row) + ",\n" for row in rows)

    def windows(self) -> range:
        return range(len(self.widths))

    # -- pieces ----------------------------------------------------------------------------

    def store(self) -> str:
        return _fill(_STORE, fields=self.fields)

    def load(self) -> str:
        return _fill(_LOAD, fields=self.fields)

    def bind_sorted(self, template: str) -> str:
        if not self.sorted_lists:
            return ""
        per_window = "".join(_fill(template, i=i) for i in self.windows())
        return _BIND_ORDER_STATS + per_window

    def bind_lists(self) -> str:
        template = _BIND_SORTED + (_BIND_SORTED_INTERNALS if _INLINE_SORTED else "")
        sorted_lists = self.bind_sorted(template)
        helpers = _BIND_SORTED_HELPERS if sorted_lists and _INLINE_SORTED else ""
        return _fill(
            _BIND_LISTS,
            bind_extrema=_BIND_EXTREMA if self.extrema else "",
            bind_sorted=sorted_lists + helpers,
        )

    def accept(self, fast: str) -> str:
        return _fill(_ACCEPT_SCALED if self.sums else _ACCEPT, fast=fast)

    def accept_late(self, fast: str) -> str:
        template = _ACCEPT_LATE_SCALED if self.sums else _ACCEPT_LATE
        return _fill(template, fast=fast, widest=f"{self.widths[self.wide]:_}")

    def add_event(self, i: int) -> str:
        """Window i takes the event (t, v[, x, x_sq])."""
        add = (_ADD_SUM if self.sums else "") + (_ADD_SUMSQ if self.squares else "")
        add += _ADD_SORTED if self.sorted_lists else ""
        return _fill(add, i=i)

    def window_update(self, i: int) -> str:
        evict = _EVICT_READ if self.sums or self.sorted_lists else ""
        evict += (_EVICT_SUM if self.sums else "") + (_EVICT_SUMSQ if self.squares else "")
        evict += _EVICT_SORTED if self.sorted_lists else ""
        return _fill(
            _WINDOW_UPDATE,
            i=i,
            label=repr(self.labels[i]),
            width=f"{self.widths[i]:_}",
            add_event=self.add_event(i),
            evict_event=_fill(evict, i=i),
            move_pointers=_fill(_MOVE_POINTERS, i=i) if self.extrema else "",
        )

    def event(self) -> str:
        """One in-order event (t, v[, x_float]) applied to the buffer and every window."""
        return _fill(
            _EVENT,
            scale=(_SCALE if self.sums else "") + (_SQUARE if self.squares else ""),
            push_extrema=_PUSH_EXTREMA if self.extrema else "",
            windows="".join(self.window_update(i) for i in self.windows()),
        )

    def late_event(self) -> str:
        """One late event (t, v[, x_float]) inside the widest window, applied in place."""
        windows = ""
        for i in self.windows():
            add_event = self.add_event(i)
            if i == self.wide:
                template = _LATE_WIDEST
            elif add_event:
                template = _LATE_WINDOW
            else:
                template = _LATE_WINDOW_COUNTED
            width = f"{self.widths[i]:_}"
            windows += _fill(
                template, i=i, label=repr(self.labels[i]), width=width, add_event=add_event
            )
        extrema = ""
        if self.extrema:
            extrema = _LATE_EXTREMA + "".join(
                _fill(_LATE_POINTERS, i=i, width=f"{self.widths[i]:_}") for i in self.windows()
            )
        return _fill(
            _LATE_EVENT,
            wide=self.wide,
            scale=(_SCALE if self.sums else "") + (_SQUARE if self.squares else ""),
            windows=windows,
            extrema=extrema,
        )

    def window_summary(self, i: int) -> str:
        """Assign ``stats{i}``, window i's statistics dict, from the locals."""
        full = {
            "count": "n",
            "sum": f"float(sum{i}) * inv_unit",
            "mean": f"sum{i} / n * inv_unit",
            "var": "var",
            "stddev": "sqrt(var)",
        }
        read_sorted = ""
        if self.sorted_lists:
            names = ["lowest", "highest", *self.quantiles]
            read_sorted = _fill(_READ_SORTED, names=", ".join(names), i=i)
            full |= {"min": "lowest", "max": "highest"} | {name: name for name in self.quantiles}
        elif self.extrema:
            full |= {"min": f"min_values[minptr{i}]", "max": f"max_values[maxptr{i}]"}
        single = full | {"var": "None", "stddev": "None"}
        empty = {name: "None" for name in self.stats} | {"count": "0", "sum": "0.0"}
        return _fill(
            _WINDOW_SUMMARY_VAR if self.squares else _WINDOW_SUMMARY,
            i=i,
            read_sorted=read_sorted,
            full=self.stats_dict(full),
            single=self.stats_dict(single),
            empty=self.stats_dict(empty),
        )

    def stats_dict(self, values: dict[str, str]) -> str:
        """The items of a statistics dict display, one a line."""
        return "".join(f"{name!r}: {values[name]},\n" for name in self.stats)

    def summary_dict(self) -> str:
        parts = ", ".join(f"{label!r}: stats{i}" for i, label in enumerate(self.labels))
        return "{" + parts + "}"

    def summaries(self) -> str:
        return "".join(self.window_summary(i) for i in self.windows())

    # -- the methods -----------------------------------------------------------------

    def blocks(self) -> dict[str, object]:
        """Every piece a method's templates ask for (each takes the ones it names)."""
        return {
            "bind_lists": self.bind_lists(),
            "fields": self.fields,
            "event": self.event(),
            "late_event": self.late_event(),
            "store": self.store(),
            "load": self.load(),
            "wide": self.wide,
            "summaries": self.summaries(),
            "summary_dict": self.summary_dict(),
        }

    def accepting(self, method: str, fast: str, late: str) -> str:
        """A method that takes an event: `method` with its fast cases, in order (`fast`) and
        late (`late`), filled in."""
        blocks = self.blocks()
        return _fill(
            method,
            **blocks,
            CLOCK=CLOCK,
            LIMIT=LIMIT,
            FUNIT=FUNIT,
            accept=self.accept(_fill(fast, **blocks)),
            accept_late=self.accept_late(_fill(late, **blocks)),
        )

    def insert(self) -> str:
        return self.accepting(_INSERT, _INSERT_FAST, _INSERT_LATE_FAST)

    def insert_many(self) -> str:
        return self.accepting(_INSERT_MANY, _INSERT_MANY_FAST, _INSERT_MANY_LATE_FAST)

    def summary(self) -> str:
        return _fill(
            _SUMMARY,
            fields=self.fields,
            exact_path=_SUMMARY_EXACT_PATH if self.sums else "",
            bind_extrema_values=_SUMMARY_EXTREMA_VALUES if self.extrema else "",
            bind_sorted=self.bind_sorted(_SUMMARY_BIND_SORTED),
            summaries=self.summaries(),
            summary_dict=self.summary_dict(),
        )

    def insert_and_summary(self) -> str:
        return self.accepting(
            _INSERT_AND_SUMMARY, _INSERT_AND_SUMMARY_FAST, _INSERT_AND_SUMMARY_LATE_FAST
        )

    def module(self) -> str:
        methods = (self.insert(), self.insert_many(), self.summary(), self.insert_and_summary())
        return "\n\n".join(methods)
