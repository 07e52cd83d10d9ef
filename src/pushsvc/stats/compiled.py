"""A rule compiled once: one topic's (or one group's) statistics as the rule asks for them.

A rule's windows come in three kinds, each kept by its own structure:

* exact time windows (up to `exact_percentiles_up_to`): `TopicWindows` with the generated
  fast path (`WindowSpec`), every event held;
* sketch time windows (wider): `LongWindows`, sub-buckets with exact moments and a sketch;
* count windows (`last = [N]`): `CountWindows`, the last N events.

A rule's tag statistics (`distinct`, `top`) are kept beside them by `pushsvc.stats.tagged`:
the exact windows' (not durable: the log gives them back, like the exact windows), the long
windows' and the count windows' (durable, after the other parts in the state).

`CompiledRule.new()` gives a plain `TopicWindows` when a rule needs nothing else (the default
rule, and any rule of exact time windows without `rate`), so topics without rules keep
today's per-event cost; otherwise a `RuleStats` that feeds every part and joins their
summaries in the rule's label order (exact, sketch, count: `Rule.labels`). A topic starts with
`CompiledRule.unvalued()` (its clock and the empty summary, `pushsvc.stats.unvalued`) and gets
these at its first value (`CompiledRule.valued`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from pushsvc.rules.analytics import Rule
from pushsvc.stats.layout import NO_CLOCK
from pushsvc.stats.spec import WindowSpec
from pushsvc.stats.tagged import CountTags, ExactTags, Tags, TagSpec, TimeTags
from pushsvc.stats.unvalued import Unvalued
from pushsvc.stats.windows import TopicWindows

__all__ = ["CompiledRule", "RuleStats", "WindowSet"]

Summary = dict[str, dict[str, Any]]


class WindowSet(Protocol):
    """What `RuleStats` needs of a sketch or count window set (the exact windows are a
    `TopicWindows`, which keeps its own clock)."""

    slides: bool
    """Whether the clock moves its windows (time windows) or not (count windows)."""

    def insert(self, ts_us: int, value: float, clock_us: int) -> None: ...
    def advance(self, clock_us: int) -> bool: ...
    def summary(self) -> Summary: ...
    def is_empty(self) -> bool: ...
    def to_state(self) -> bytes: ...


class CompiledRule:
    """A rule compiled: the exact windows' generated class, and how to build the rest."""

    __slots__ = ("_drop_count", "_empty", "_exact", "_plain", "_rates", "_tags", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        stats = rule.stats
        core = tuple(s for s in stats if s != "rate")
        # Rate is count over width: the exact windows count even when count is not asked for.
        self._drop_count = "rate" in stats and "count" not in stats
        exact_core = ("count", *core) if self._drop_count else core
        widths = rule.exact_windows_us
        labels = tuple(rule.window_label(w) for w in widths)
        self._exact = WindowSpec(widths, labels, exact_core) if widths else None
        self._rates = (
            tuple((label, w / 1_000_000) for label, w in zip(labels, widths, strict=True))
            if "rate" in stats
            else ()
        )
        self._tags = TagSpec(rule.distinct, rule.top)
        self._plain = (
            self._exact is not None
            and not rule.sketch_windows_us
            and not rule.last
            and "rate" not in stats
            and not self._tags
        )
        self._empty: Summary | None = None

    def unvalued(self, clock_us: int | None = None) -> Unvalued:
        """A topic's statistics before its first value (`pushsvc.stats.unvalued`), at
        `clock_us`: what a topic of messages only keeps."""
        empty = self._empty
        if empty is None:
            fresh = self._build(None)
            fresh.start_at(0)
            empty = self._empty = fresh.summary()
        return Unvalued(empty, clock_us)

    def valued(self, unvalued: Unvalued) -> TopicWindows | RuleStats:
        """The statistics that take a topic's first value: empty, at its clock."""
        stats = self._build(None)
        if unvalued.clock_us is not None:
            stats.start_at(unvalued.clock_us)
        return stats

    def new(self) -> TopicWindows | RuleStats:
        """A topic's statistics, empty."""
        return self._build(None)

    def restored(self, state: bytes) -> TopicWindows | RuleStats:
        """Statistics whose durable parts continue from `state` (`RuleStats.durable_state`)
        and whose exact windows are empty, for a rebuild to fill from the log."""
        return self._build(state or None)

    def _build(self, state: bytes | None) -> TopicWindows | RuleStats:
        if self._plain:
            assert self._exact is not None
            return self._exact.new()
        saved = iter(_unpack(state)) if state is not None else None
        clock = next(saved) if saved is not None else None
        # In the state's order: the clock, the value windows, then the tag windows.
        parts = self._value_parts(saved)
        tag_parts = self._tag_parts(saved)
        tags = self._tags
        exact = self._exact.new() if self._exact is not None else None
        exact_tags = None
        if tags and self._exact is not None:
            exact_tags = ExactTags(self._exact.widths_us, self._exact.labels, tags)
        stats = RuleStats(
            exact, tuple(parts), self._rates, self._drop_count, exact_tags, tuple(tag_parts)
        )
        if clock is not None:
            stats.restore_clock(int.from_bytes(clock, "big", signed=True))
        return stats

    def _value_parts(self, saved: Iterator[bytes] | None) -> list[WindowSet]:
        """The sketch and count windows of values, empty or continued from `saved`."""
        rule = self.rule
        parts: list[WindowSet] = []
        if rule.sketch_windows_us:
            from pushsvc.stats.long_windows import LongWindows

            widths = rule.sketch_windows_us
            labels = tuple(rule.window_label(w) for w in widths)
            parts.append(
                LongWindows(widths, labels, rule.stats)
                if saved is None
                else LongWindows.from_state(widths, labels, rule.stats, next(saved))
            )
        if rule.last:
            from pushsvc.stats.count_windows import CountWindows

            parts.append(
                CountWindows(rule.last, rule.stats)
                if saved is None
                else CountWindows.from_state(rule.last, rule.stats, next(saved))
            )
        return parts

    def _tag_parts(self, saved: Iterator[bytes] | None) -> list[TimeTags | CountTags]:
        """The sketch and count windows of tags, empty or continued from `saved` (a state
        saved before the rule had tags has none of them: they start empty)."""
        rule, tags = self.rule, self._tags
        tag_parts: list[TimeTags | CountTags] = []
        if tags and rule.sketch_windows_us:
            widths = rule.sketch_windows_us
            labels = tuple(rule.window_label(w) for w in widths)
            tag_parts.append(
                TimeTags(widths, labels, tags)
                if saved is None
                else TimeTags.from_state(widths, labels, tags, next(saved, b""))
            )
        if tags and rule.last:
            tag_parts.append(
                CountTags(rule.last, tags)
                if saved is None
                else CountTags.from_state(rule.last, tags, next(saved, b""))
            )
        return tag_parts


class RuleStats:
    """Exact, sketch and count windows of one topic or group, fed together.

    Its clock is the largest event time inserted or advanced to, as `TopicWindows`'s.
    """

    __slots__ = (
        "_clock", "_drop_count", "_exact", "_exact_only", "_exact_tags", "_parts", "_rates",
        "_sliding", "_tag_parts", "tagged",
    )  # fmt: skip

    def __init__(
        self,
        exact: TopicWindows | None,
        parts: tuple[WindowSet, ...],
        rates: tuple[tuple[str, float], ...],
        drop_count: bool,
        exact_tags: ExactTags | None = None,
        tag_parts: tuple[TimeTags | CountTags, ...] = (),
    ) -> None:
        self._exact = exact
        self._parts = parts
        self._rates = rates
        self._drop_count = drop_count
        self._clock: int | None = None
        self._sliding: tuple[WindowSet | ExactTags | TimeTags | CountTags, ...] = tuple(
            p for p in (*parts, *tag_parts) if p.slides
        )
        self._exact_tags = exact_tags
        self._tag_parts = tag_parts
        self.tagged = exact_tags is not None or bool(tag_parts)
        """Whether it keeps tag statistics (the tags of each event are wanted)."""
        # Exact windows and nothing else to feed (rates come from their counts): an event
        # can take the exact windows' fused `insert_and_summary`.
        self._exact_only = exact is not None and not parts and not self.tagged

    @property
    def clock_us(self) -> int | None:
        return self._clock

    def __len__(self) -> int:
        """Nonzero while a time window holds an event (what idle ticks can still slide)."""
        held = len(self._exact) if self._exact is not None else 0
        return held + sum(not part.is_empty() for part in self._sliding)

    def start_at(self, clock_us: int) -> None:
        """Before the first event: an empty topic at clock `clock_us` (see TopicWindows)."""
        if self._exact is not None:
            self._exact.start_at(clock_us)
        if self._exact_tags is not None:
            self._exact_tags.start_at(clock_us)
        self._clock = clock_us

    def insert(self, ts_us: int, value: float, tags: Tags = None) -> None:
        clock = ts_us if self._clock is None or ts_us > self._clock else self._clock
        if self._exact is not None:
            self._exact.insert(ts_us, value)
        for part in self._parts:
            part.insert(ts_us, value, clock)
        if self.tagged:
            if self._exact_tags is not None:
                self._exact_tags.insert(ts_us, tags, clock)
            for tag_part in self._tag_parts:
                tag_part.insert(ts_us, tags, clock)
        self._clock = clock

    def insert_and_summary(self, ts_us: int, value: float, tags: Tags = None) -> Summary:
        """`insert` then `summary` (a group's event)."""
        exact = self._exact
        if exact is None or not self._exact_only:
            self.insert(ts_us, value, tags)
            return self.summary()
        clock = ts_us if self._clock is None or ts_us > self._clock else self._clock
        out = exact.insert_and_summary(ts_us, value)
        self._clock = clock  # after: a value `insert` refuses leaves the clock as it was
        self._add_rates(out)
        return out

    def insert_tagged(self, items: Iterable[tuple[int, float, Tags]]) -> Iterator[Summary]:
        """`insert` then `summary` for each `(ts_us, value, tags)`, in order, one at a time:
        a summary with top lists holds a dozen containers, and a batch's worth of them held
        at once would start the cyclic garbage collector every batch."""
        for ts_us, value, tags in items:
            self.insert(ts_us, value, tags)
            yield self.summary()

    def insert_many(self, items: Sequence[tuple[int, float]]) -> list[Summary]:
        """`insert` then `summary` for each item, in order."""
        out = []
        for ts_us, value in items:
            self.insert(ts_us, value)
            out.append(self.summary())
        return out

    def advance(self, clock_us: int) -> bool:
        """Move the clock forward to `clock_us`; True iff some window lost events."""
        if self._clock is None or clock_us <= self._clock:
            return False
        self._clock = clock_us
        changed = self._exact.advance(clock_us) if self._exact is not None else False
        for part in self._parts:
            changed |= part.advance(clock_us)
        if self._exact_tags is not None:
            changed |= self._exact_tags.advance(clock_us)
        for tag_part in self._tag_parts:
            changed |= tag_part.advance(clock_us)
        return changed

    def insert_exact(self, ts_us: int, value: float, tags: Tags = None) -> None:
        """Rebuilding from a checkpoint: an event the durable parts already hold goes into
        the exact windows only."""
        if self._exact is not None:
            self._exact.insert(ts_us, value)
            exact_tags = self._exact_tags
            if exact_tags is not None:
                clock = exact_tags.clock_us
                exact_tags.insert(ts_us, tags, ts_us if clock is None or ts_us > clock else clock)

    def durable_state(self) -> bytes:
        """The clock and the durable parts' state (`CompiledRule.restored` takes it)."""
        clock = (self._clock if self._clock is not None else NO_CLOCK).to_bytes(
            8, "big", signed=True
        )
        return _pack(
            [
                clock,
                *(part.to_state() for part in self._parts),
                *(part.to_state() for part in self._tag_parts),
            ]
        )

    def restore_clock(self, clock_us: int) -> None:
        if clock_us != NO_CLOCK:
            self._clock = clock_us

    def catch_up(self) -> None:
        """After a rebuild's replay: bring the exact windows to the clock the durable parts
        stand at (the replay filled them with events only)."""
        if self._exact is None or self._clock is None:
            return
        if self._exact.clock_us is None:
            self._exact.start_at(self._clock)
        else:
            self._exact.advance(self._clock)
        if self._exact_tags is not None:
            if self._exact_tags.clock_us is None:
                self._exact_tags.start_at(self._clock)
            else:
                self._exact_tags.advance(self._clock)

    def summary(self) -> Summary:
        out: Summary = self._exact.summary() if self._exact is not None else {}
        self._add_rates(out)
        for part in self._parts:
            out.update(part.summary())
        if self.tagged:
            if self._exact_tags is not None:
                self._exact_tags.fill(out)
            for tag_part in self._tag_parts:
                tag_part.fill(out)
        return out

    def _add_rates(self, out: Summary) -> None:
        """The exact windows' rates into their summaries (`out`), from their counts."""
        for label, seconds in self._rates:
            window = out[label]
            window["rate"] = window["count"] / seconds
            if self._drop_count:
                del window["count"]


def _pack(items: list[bytes]) -> bytes:
    """Byte strings framed by their lengths (4 bytes each, big-endian)."""
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def _unpack(data: bytes) -> list[bytes]:
    items = []
    at = 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        items.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return items
