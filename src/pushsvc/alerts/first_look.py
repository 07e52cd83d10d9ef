"""The first look of an evaluation: which alerts' `when` holds in these windows, as one
function generated per set of alerts.

Why generate code: the aggregator evaluates every event's topic and group against every alert
that matches the topic, and nearly always no `when` holds. In a loop over (window, statistic,
operator, threshold) CPython spends about two dozen bytecodes and a call to the operator per
alert; written out with the names and thresholds as literals, about half, and the comparison
is the interpreter's own (specialised for floats). docs/performance.md, "Alerts", has the
difference.

What is generated for `mean[10s] > 300`, `max[10s] > 2000` and `count[1m] < 1`:

    def holding(windows):
        try:
            found = ()
            w = windows['10s']
            v = w['mean']
            if v is not None and v > 300.0:
                found += (0,)
            v = w['max']
            if v is not None and v > 2000.0:
                found += (1,)
            w = windows['1m']
            v = w['count']
            if v is not None and v < 1.0:
                found += (2,)
        except (KeyError, TypeError):
            return slowly(windows)
        return found

A message condition (`messages(error)[1m] > 5`) reads the window's count of the type, 0 where the
window has none. Only validated text reaches the source: window and statistic names match
`[A-Za-z0-9_.]+` and `[A-Za-z0-9_]+`, message types `[A-Za-z0-9._:-]+`, all written with `repr`;
thresholds are finite floats (`repr` reads back exactly), operators one of six. Windows without a
statistic an alert names take the general path (`slowly`: `Condition.value`, `Condition.holds`), and
so does a value that cannot be ordered. The engine's values are numbers or null, where the two agree
(a null never holds); anything else the first look lets through, the instance's own evaluation
refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pushsvc.rules.alerts import Condition

__all__ = ["Holding", "first_look"]

Holding = Callable[[Mapping[str, Any]], tuple[int, ...]]
"""The indices of the conditions that hold in `{window: {stat: value}}` (by window, not
ascending)."""


def first_look(conditions: Sequence[Condition]) -> Holding:
    """The generated `holding` for these conditions (in their order)."""
    by_window: dict[str, list[tuple[int, Condition]]] = {}
    for index, condition in enumerate(conditions):
        by_window.setdefault(condition.window, []).append((index, condition))
    lines = ["def holding(windows):", "    try:", "        found = ()"]
    for window, items in by_window.items():
        lines.append(f"        w = windows[{window!r}]")
        for index, condition in items:
            if condition.message_type is not None:  # 0 where the window has none of the type
                lines += [
                    "        m = w.get('messages')",
                    f"        m = m.get({condition.message_type!r}) if m else None",
                    f"        v = m[{condition.stat!r}] if m else 0",
                ]
            else:
                lines.append(f"        v = w[{condition.stat!r}]")
            lines += [
                f"        if v is not None and v {condition.op} {condition.threshold!r}:",
                f"            found += ({index},)",
            ]
    lines += [
        "    except (KeyError, TypeError, AttributeError):",
        "        return slowly(windows)",
        "    return found",
    ]
    source = "\n".join(lines)

    def slowly(windows: Mapping[str, Any]) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(conditions) if c.holds(c.value(windows)))

    namespace: dict[str, Any] = {"slowly": slowly}
    exec(compile(source, "<pushsvc.alerts.first_look>", "exec"), namespace)
    holding: Holding = namespace["holding"]
    holding.__doc__ = source  # for reading and profiling
    return holding
