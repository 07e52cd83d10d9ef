"""The lateness rule, in one place (pure).

Each topic has a clock `T`: the largest event time accepted (or idle tick clock). An event
with `ts < T - grace` is past the grace: the append refuses it, and the ingest path either
logs it on the topic's late stream (`pushsvc.ingest.late`) or answers `400 late_event` where
its rule says `late = "refuse"`. One within the grace is accepted and inserted in place, and
`T` does not move back. The brokers judge a batch by this rule when
they append it; the Redis broker's append script (`broker/lua/append_events.lua`) applies
the same comparison inside Redis, so that no two appends race, and re-raises through
`check_lateness` so the error is this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pushsvc.core.event import US_PER_S, Event
from pushsvc.errors import LateEvent

ANY_AGE_US = (date(9999, 12, 31) - date(2000, 1, 1)).days * 86_400 * US_PER_S
"""A lateness past which no event can be late: more than any two event times differ by (an
event carries a `ts` from 2000 to 9999, `pushsvc.ingest.timestamps`). What a late stream's
own appends are judged with, so that they take any event."""


def is_late(clock_us: int | None, ts_us: int, lateness_us: int) -> bool:
    """Whether an event at `ts_us` is too late for a topic whose clock is `clock_us`."""
    return clock_us is not None and ts_us < clock_us - lateness_us


def check_lateness(clock_us: int | None, events: Sequence[Event], lateness_us: int) -> None:
    """Raise LateEvent naming the first event older than the topic clock allows.

    The clock `T` is the largest event time accepted so far (None: no event
    yet); each event of the batch may move it forward, so an event is judged
    against every event before it. `ts == T - lateness_us` is still on time.
    """
    clock = clock_us
    for index, event in enumerate(events):
        if clock is not None and is_late(clock, event.ts_us, lateness_us):
            late = LateEvent(
                f"the event is {(clock - event.ts_us) / US_PER_S:g} s older than the topic's "
                f"latest event; at most {lateness_us / US_PER_S:g} s is allowed (its rule "
                'says late = "refuse")',
                index=index,
            )
            late.clock_us = clock
            raise late
        if clock is None or event.ts_us > clock:
            clock = event.ts_us


def series_lateness_us(grace_us: int, server_grace_us: int, final: bool = False) -> int:
    """When a topic's series buckets are published after their end: at the server's grace
    (`--grace`), or at the topic's `grace_us` where that is shorter, or (`final`: its rule
    scores or forecasts its points, which learn each bucket once) at its grace. Until its
    grace, a published bucket is corrected by the late events it accepts
    (`pushsvc.series.buckets`)."""
    return grace_us if final else min(grace_us, server_grace_us)
