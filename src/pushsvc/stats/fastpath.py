"""Per-configuration fast paths for ``TopicWindows``: ``insert``, ``insert_many``, ``summary``.

Why generate code: per event, the engine does a few dozen integer and list operations per
window, and in CPython the interpreter's overhead around them (attribute loads, loop
iterations over window objects, method calls) costs as much as the operations. So for each
(widths, labels, stats) this module writes the three methods out with every window unrolled
into local variables (``l0, a0, b0, ...``: left index, S1, S2, max and min pointers), only the
work the selected statistics need, and the labels and keys as literals; then compiles them
into a subclass of ``TopicWindows``. ``insert_many`` keeps the whole state in locals for a
batch. The generated source is kept on the class (``_fast_source``) for reading and profiling.

Only validated data reaches the source: window widths are ints, statistic names come from
``STAT_KEYS``, and labels enter as ``repr()`` literals, so nothing a user configures is ever
executed.

The generated code covers one case: an in-order event whose value is exact at the current
integer scale and below ``_HUGE`` (in a topic not on the exact path). Anything else writes the
locals back to ``_st`` and calls the general method (``windows.py``), which is the reference
the fast path must match (the oracle tests run both).
"""

from __future__ import annotations

import math
from textwrap import indent

from pushsvc.stats.layout import (
    CLOCK,
    FUNIT,
    LIMIT,
    MOMENTS_1,
    MOMENTS_2,
    QUANTILE_OF,
    local_names,
)

__all__ = ["specialise"]


def specialise(
    base: type, widths: tuple[int, ...], labels: tuple[str, ...], stats: tuple[str, ...]
) -> type:
    """A subclass of ``base`` with ``insert``, ``insert_many`` and ``summary`` generated."""
    source = _Source(widths, labels, stats).module()
    namespace: dict[str, object] = {"_sqrt": math.sqrt}
    exec(compile(source, f"<pushsvc.stats.fastpath {labels} {stats}>", "exec"), namespace)
    attrs = {
        "__slots__": (),
        "__doc__": base.__doc__,
        "_fast_source": source,
        "insert": namespace["insert"],
        "insert_many": namespace["insert_many"],
        "summary": namespace["summary"],
    }
    for name in ("insert", "insert_many", "summary"):
        attrs[name].__doc__ = getattr(base, name).__doc__
    return type(f"TopicWindows_{'_'.join(labels)}", (base,), attrs)


class _Source:
    def __init__(
        self, widths: tuple[int, ...], labels: tuple[str, ...], stats: tuple[str, ...]
    ) -> None:
        self.widths = widths
        self.labels = labels
        self.stats = stats
        selected = set(stats)
        self.m1 = bool(selected & MOMENTS_1)
        self.m2 = bool(selected & MOMENTS_2)
        self.qnames = [name for name in stats if name in QUANTILE_OF]
        self.ord = bool(self.qnames)
        self.ext = not self.ord and bool(selected & {"min", "max"})
        self.wide = max(range(len(widths)), key=widths.__getitem__)
        self.fields = ", ".join(local_names(len(widths)))

    # -- pieces ----------------------------------------------------------------------------

    def flush(self) -> str:
        return f"self._st = [{self.fields}]\n"

    def reload(self) -> str:
        return f"{self.fields} = self._st\ninv2 = inv * inv\nend = len(ts)\ncat = self._cat\n"

    def lists(self) -> str:
        """Bind the buffer, the extrema lists and the sorted lists (never rebound) to locals."""
        out = "ts = self._ts\nvals = self._vals\ntsapp = ts.append\nvapp = vals.append\n"
        out += "sqrt = _sqrt\n"
        if self.ext:
            out += "ext = self._ext\nmxt = ext.mxt\nmxv = ext.mxv\nmnt = ext.mnt\nmnv = ext.mnv\n"
            out += "mxtapp = mxt.append\nmxvapp = mxv.append\nmxtpop = mxt.pop\n"
            out += "mxvpop = mxv.pop\nmntapp = mnt.append\nmnvapp = mnv.append\n"
            out += "mntpop = mnt.pop\nmnvpop = mnv.pop\n"
        if self.ord:
            out += "ostats = self._ostats\n"
            for i in range(len(self.widths)):
                out += f"sl{i} = self._sorted[{i}]\nadd{i} = sl{i}.add\nrem{i} = sl{i}.remove\n"
        return out

    def accept(self) -> str:
        """The fast-path test for (t, v); sets x, the exact scaled integer, when sums are kept."""
        if self.m1:
            return "if t >= clk and -lim < v < lim:\n    xf = v * funit\n    if xf.is_integer():\n"
        return "if t >= clk and -lim < v < lim:\n    if True:\n"

    def body(self) -> str:
        """One in-order event (t, v[, x]) applied to the buffer and every window."""
        out = "clk = t\ntsapp(t)\nvapp(v)\nend += 1\n"
        if self.m1:
            out += "x = int(xf)\n"
        if self.m2:
            out += "x2 = x * x\n"
        if self.ext:
            # The sentinels (+inf / -inf at index 0) end these loops.
            out += "while mxv[-1] <= v:\n    mxvpop()\n    mxtpop()\n"
            out += "mxtapp(t)\nmxvapp(v)\nmlast = len(mxv) - 1\n"
            out += "while mnv[-1] >= v:\n    mnvpop()\n    mntpop()\n"
            out += "mntapp(t)\nmnvapp(v)\nnlast = len(mnv) - 1\n"
        for i, width in enumerate(self.widths):
            out += f"bound = t - {width}\n"
            if self.m1:
                out += f"a{i} += x\n"
            if self.m2:
                out += f"b{i} += x2\n"
            if self.ord:
                out += f"add{i}(v)\n"
            # The new event ends the buffer with ts > bound, so this loop needs no bounds check.
            out += f"while ts[l{i}] <= bound:\n"
            if self.m1 or self.ord:
                out += f"    u = vals[l{i}]\n"
            if self.m1:
                out += "    y = int(u * funit)\n"
                out += f"    a{i} -= y\n"
            if self.m2:
                out += f"    b{i} -= y * y\n"
            if self.ord:
                out += f"    rem{i}(u)\n"
            out += f"    l{i} += 1\n"
            if self.ext:
                # A pointer past the last entry means its entries were popped: the new one is
                # then the window's first; otherwise it only moves forward.
                out += f"if p{i} > mlast:\n    p{i} = mlast\n"
                out += f"while mxt[p{i}] <= bound:\n    p{i} += 1\n"
                out += f"if q{i} > nlast:\n    q{i} = nlast\n"
                out += f"while mnt[q{i}] <= bound:\n    q{i} += 1\n"
        return out

    def window_summary(self, i: int) -> str:
        """Assign ``s{i}``, window i's statistics dict, from the locals.

        Each moment is one correctly rounded operation on exact integers followed by an exact
        power-of-two scaling: ``float(S1)``, ``S1 / n`` and ``(n*S2 - S1**2) / (n*(n-1))`` (int
        true division rounds correctly) times ``2**-shift`` or ``2**-2shift``. The fast path's
        bounds (shift <= 128, |value| < 2**380) keep every intermediate a normal double, so
        the scaling cannot round or overflow. Dividing by the small ``n`` rather than by
        ``n << shift`` saves a third of the division's cost.
        """
        stats = self.stats
        full = {
            "count": "n",
            "sum": f"float(a{i}) * inv",
            "mean": f"a{i} / n * inv",
            "var": "var",
            "stddev": "sqrt(var)",
        }
        pre = ""
        if self.ord:
            names = ["olo", "ohi", *(f"o{name}" for name in self.qnames)]
            pre += f"{', '.join(names)} = ostats(sl{i})\n"
            full["min"] = "olo"
            full["max"] = "ohi"
            for name in self.qnames:
                full[name] = f"o{name}"
        elif self.ext:
            full["min"] = f"mnv[q{i}]"
            full["max"] = f"mxv[p{i}]"

        def literal(values: dict[str, str]) -> str:
            items = ", ".join(f"{name!r}: {values[name]}" for name in stats)
            return "{" + items + "}"

        many = f"{pre}"
        if self.m2:
            many += f"var = (n * b{i} - a{i} * a{i}) / (n * n - n) * inv2\n"
        many += f"s{i} = {literal(full)}\n"
        one = pre + f"s{i} = {literal(full | {'var': 'None', 'stddev': 'None'})}\n"
        empty = {name: "None" for name in stats} | {"count": "0", "sum": "0.0"}
        out = f"n = end - l{i}\n"
        if self.m2:
            out += "if n > 1:\n" + indent(many, "    ")
            out += "elif n:\n" + indent(one, "    ")
        else:
            out += "if n:\n" + indent(many, "    ")
        out += f"else:\n    s{i} = {literal(empty)}\n"
        return out

    def summary_expr(self) -> str:
        parts = ", ".join(f"{label!r}: s{i}" for i, label in enumerate(self.labels))
        return "{" + parts + "}"

    def summaries(self) -> str:
        return "".join(self.window_summary(i) for i in range(len(self.widths)))

    # -- the three methods -----------------------------------------------------------------

    def insert(self) -> str:
        fast = (
            "t = ts_us\n"
            + self.lists()
            + f"{self.fields} = st\n"
            + "end = len(ts)\n"
            + self.body()
            + self.flush()
            + f"if l{self.wide} >= self._cat:\n    self._compact()\n"
            + "return\n"
        )
        return (
            "def insert(self, ts_us, value):\n"
            "    v = float(value)\n"
            "    st = self._st\n"
            "    t = ts_us\n"
            f"    clk = st[{CLOCK}]\n"
            f"    lim = st[{LIMIT}]\n"
            f"    funit = st[{FUNIT}]\n"
            + indent(self.accept(), "    ")
            + indent(fast, " " * 12)
            + "    self._insert_slow(ts_us, v)\n"
        )

    def insert_many(self) -> str:
        fast = (
            self.body()
            + f"if l{self.wide} >= cat:\n"
            + indent(self.flush() + "self._compact()\n" + self.reload(), "    ")
            + self.summaries()
            + f"oapp({self.summary_expr()})\n"
            + "continue\n"
        )
        loop = (
            "for t, value in items:\n"
            "    v = float(value)\n"
            + indent(self.accept(), "    ")
            + indent(fast, " " * 12)
            + indent(self.flush(), "    ")
            + "    self._insert_slow(t, v)\n"
            + indent(self.reload(), "    ")
            + "    oapp(self.summary())\n"
        )
        return (
            "def insert_many(self, items):\n"
            + indent(self.lists() + self.reload(), "    ")
            + "    out = []\n"
            "    oapp = out.append\n"
            "    try:\n"
            + indent(loop, " " * 8)
            + "    finally:\n"
            + indent(self.flush(), " " * 8)
            + "    return out\n"
        )

    def summary(self) -> str:
        lines = f"{self.fields} = self._st\n"
        if self.m1:
            lines += "if lim == 0.0:\n    return self._summary_exact()\n"
        if self.ext:
            lines += "mxv = self._ext.mxv\nmnv = self._ext.mnv\n"
        if self.ord:
            lines += "ostats = self._ostats\n"
            lines += "".join(f"sl{i} = self._sorted[{i}]\n" for i in range(len(self.widths)))
        lines += "sqrt = _sqrt\ninv2 = inv * inv\nend = len(self._ts)\n"
        lines += self.summaries() + f"return {self.summary_expr()}\n"
        return "def summary(self):\n" + indent(lines, "    ")

    def module(self) -> str:
        return "\n\n".join((self.insert(), self.insert_many(), self.summary())) + "\n"
