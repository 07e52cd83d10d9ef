"""A topic's statistics of values before its first value: its clock, and nothing else.

A topic that carries only messages (a channel per user) never inserts a value, yet every
update gives its windows' summary and every tick moves its clock. The windows a rule compiles
(`TopicWindows`: a buffer, sorted lists for the quantiles, the scalar state) cost more than the
rest of such a topic before they hold anything (docs/performance.md, "A topic's cost"), so a
topic starts with this instead: the clock
the windows would have, and the summary they would give empty (one per rule, made once and
copied for each caller, who may add to it). At the topic's first value its owner swaps it for
the rule's windows started at this clock (`CompiledRule.valued`), which then are exactly the
windows a topic that had them all along has: a window's content is its events, and its
state without one is its clock.
"""

from __future__ import annotations

from typing import Any

Summary = dict[str, dict[str, Any]]


class Unvalued:
    """The clock and the empty summary of a rule's windows, for a topic without a value."""

    __slots__ = ("_empty", "clock_us")

    def __init__(self, empty: Summary, clock_us: int | None = None) -> None:
        self._empty = empty
        self.clock_us = clock_us
        """The topic clock (None before the first event), as the windows' `clock_us`."""

    def __len__(self) -> int:
        """Events held: none, ever (nothing for idle ticks to slide)."""
        return 0

    def start_at(self, clock_us: int) -> None:
        """Before the first event: the clock starts at `clock_us` (as `TopicWindows.start_at`)."""
        if self.clock_us is not None:
            raise ValueError("start_at is for a topic that has no clock yet")
        self.clock_us = clock_us

    def advance(self, clock_us: int) -> bool:
        """Move the clock forward; no window loses an event (it holds none): False."""
        if self.clock_us is not None and clock_us > self.clock_us:
            self.clock_us = clock_us
        return False

    def summary(self) -> Summary:
        """The summary of the rule's windows holding nothing, a copy of its own."""
        return {label: _copied(stats) for label, stats in self._empty.items()}


def _copied(stats: dict[str, Any]) -> dict[str, Any]:
    """A window's empty statistics, its containers (a tag's empty top list) copied too."""
    return {
        name: dict(value) if isinstance(value, dict) else list(value)
        if isinstance(value, list) else value
        for name, value in stats.items()
    }  # fmt: skip
