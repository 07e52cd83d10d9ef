"""The lateness rule and what it does to a batch, in one place (pure).

Each topic has a clock `T`: the largest event time logged for it (or idle tick clock). An
event with `ts < T - grace` is past the grace; one within it is on time: logged on the topic
and applied to its statistics in place (`T` does not move back). Each event of a batch is
judged against the clock at its place in it: the on-time events before it may have moved it
(`past_grace`).

What the append does with a batch, once judged (`split_late`), is decided here too, so that
both brokers do the same in their one atomic append step (the memory store with this code,
the Redis append script `broker/lua/append_events.lua` by the same comparison, which the
Redis broker checks against `past_grace` whenever the script finds an event past the grace):

* every on-time event is logged on the topic;
* a message past the grace is logged on the topic too, in its place, marked `PAST_GRACE`: its
  topic's messages streams push it like any message, in the order of the log, and no
  statistic of the topic takes it. A message is never held to the statistics' clock;
* where the topic keeps a late stream (`<topic>.late`: its rule does not say
  `late = "refuse"`), every event past the grace is logged there, a message marked
  `PUSHED_ON_TOPIC` (the late stream counts it, its topic pushed it);
* where it keeps none, a plain event past the grace refuses the batch whole (`LateEvent`,
  `400 late_event`): `refuse` is a rule of the statistics, and a message is pushed whatever
  it says, counted as late and in no statistic.

The late stream lives in its topic's partition (`pushsvc.core.partitions`), so that the
topic's entry, the late stream's entry and the request's idempotency key are written in one
step: a past-grace event is logged exactly once, with its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import NamedTuple

from pushsvc.core.event import PAST_GRACE, PUSHED_ON_TOPIC, US_PER_S, Event
from pushsvc.core.topics import LATE_SUFFIX, MAX_TOPIC_LEN
from pushsvc.errors import LateEvent

ANY_AGE_US = (date(9999, 12, 31) - date(2000, 1, 1)).days * 86_400 * US_PER_S
"""A lateness past which no event can be late: more than any two event times differ by (an
event carries a `ts` from 2000 to 9999, `pushsvc.ingest.timestamps`)."""


def late_topic(topic: str) -> str:
    """The topic that holds `topic`'s events past its grace: its late stream."""
    return topic + LATE_SUFFIX


def keeps_late(topic: str, refuse: bool) -> bool:
    """Whether `topic` keeps a late stream: unless its rule refuses late events, or the late
    stream's name would be too long for anyone to read it."""
    return not refuse and len(topic) + len(LATE_SUFFIX) <= MAX_TOPIC_LEN


def is_late(clock_us: int | None, ts_us: int, lateness_us: int) -> bool:
    """Whether an event at `ts_us` is past the grace of a topic whose clock is `clock_us`.
    `ts == T - lateness_us` is still on time."""
    return clock_us is not None and ts_us < clock_us - lateness_us


def past_grace(clock_us: int | None, events: Sequence[Event], lateness_us: int) -> list[int]:
    """The indices of the events of a batch past the grace of a topic whose clock is
    `clock_us` (None: no event yet), in order. Each on-time event moves the clock for the ones
    after it; one past the grace cannot (it is older than the clock)."""
    if clock_us is None and len(events) < 2:
        return []
    clock = clock_us
    found = []
    for index, event in enumerate(events):
        ts = event.ts_us
        if clock is None or ts > clock:
            clock = ts
        elif ts < clock - lateness_us:
            found.append(index)
    return found


def clock_before(clock_us: int | None, events: Sequence[Event], index: int) -> int | None:
    """The topic clock event `index` of a batch is judged against (`past_grace`)."""
    clock = clock_us
    for event in events[:index]:
        if clock is None or event.ts_us > clock:
            clock = event.ts_us
    return clock


def refusal(clock_us: int, event: Event, index: int, lateness_us: int) -> LateEvent:
    """The error of a batch refused for event `index`, past the grace of clock `clock_us`."""
    late = LateEvent(
        f"the event is {(clock_us - event.ts_us) / US_PER_S:g} s older than the topic's "
        f"latest event; at most {lateness_us / US_PER_S:g} s is allowed (its rule "
        'says late = "refuse")',
        index=index,
    )
    late.clock_us = clock_us
    return late


class Split(NamedTuple):
    """A judged batch as the append logs it: the topic's events (on time, and the messages
    past the grace marked `PAST_GRACE`), the late stream's (empty where the topic keeps
    none), and how many of the batch were past the grace (the answer's `late`)."""

    topic: list[Event]
    late: list[Event]
    past: int


def split_late(
    clock_us: int | None,
    events: Sequence[Event],
    past: Sequence[int],
    *,
    lateness_us: int,
    keep_late: bool,
) -> Split:
    """What the append logs of `events`, whose events at indices `past` are past the grace
    (`past_grace`) of a topic whose clock was `clock_us`. Raises the LateEvent of the first
    plain event past the grace when the topic keeps no late stream (`keep_late` False)."""
    if not past:
        return Split(list(events), [], 0)
    topic: list[Event] = []
    late: list[Event] = []
    gone = set(past)
    for index, event in enumerate(events):
        if index not in gone:
            topic.append(event)
        elif event.message is None:
            if not keep_late:
                clock = clock_before(clock_us, events, index)
                assert clock is not None
                raise refusal(clock, event, index, lateness_us)
            late.append(event)
        else:
            topic.append(replace(event, mark=PAST_GRACE))
            if keep_late:
                late.append(replace(event, mark=PUSHED_ON_TOPIC))
    return Split(topic, late, len(past))


def check_lateness(clock_us: int | None, events: Sequence[Event], lateness_us: int) -> None:
    """Raise the LateEvent of the first event of a batch past the grace, if any (what a
    topic that keeps no late stream answers for a plain event)."""
    past = past_grace(clock_us, events, lateness_us)
    if past:
        index = past[0]
        clock = clock_before(clock_us, events, index)
        assert clock is not None
        raise refusal(clock, events[index], index, lateness_us)


def series_lateness_us(grace_us: int, server_grace_us: int, final: bool = False) -> int:
    """When a topic's series buckets are published after their end: at the server's grace
    (`--grace`), or at the topic's `grace_us` where that is shorter, or (`final`: its rule
    scores or forecasts its points, which learn each bucket once) at its grace. Until its
    grace, a published bucket is corrected by the late events it accepts
    (`pushsvc.series.buckets`)."""
    return grace_us if final else min(grace_us, server_grace_us)
