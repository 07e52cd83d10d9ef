"""What the Redis broker sends `lua/append_events.lua` of a batch, and what the script's
lateness answers become: the Python side of the append's one judgement.

The script judges a batch against its topic's clock by the rule of `pushsvc.core.lateness`.
Where it finds events past the grace it logs nothing and answers which (SPLIT), or refuses the
batch (LATE, a plain event where the topic keeps no late stream); each answer is checked here
against the Python rule from the clock the script names, so that the two can never disagree
silently, and a SPLIT becomes the entries of the batch as the rule splits it, which the broker
sends again for the script to log in one step.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushsvc.broker.redis.script_replies import AppendReply
from pushsvc.broker.redis.wire import encode_events
from pushsvc.broker.shared_log import entry_slices
from pushsvc.core.event import Event
from pushsvc.core.lateness import Split, check_lateness, past_grace, split_late
from pushsvc.errors import RequestError

ADMIT_ARG = 3
"""Where append_events.lua reads whether a topic new to its partition may be logged ('1')."""
ANSWER_ARG, EXPECTED_ARG, LATE_ENTRIES_ARG, FIRST_PAYLOAD_ARG = 6, 10, 11, 13
"""Where append_events.lua reads (0-based in the broker's ARGV list) what a SPLIT changes:
the answer a repeat gets, the indices expected past the grace, how many entries are the late
stream's, and the first entry's payload."""


def payloads(events: Sequence[Event]) -> list[str | int | bytes]:
    """The log entries of `events` (`ENTRY_EVENTS` each at most), encoded."""
    return [encode_events(events[cut]) for cut in entry_slices(len(events))]


def message_indices(events: Sequence[Event]) -> str:
    """Which events of a batch are messages, as the script's `messages` (',i,j,'): where the
    topic keeps no late stream, the script refuses the batch for a plain event past the grace,
    never for a message."""
    found = [str(i) for i, event in enumerate(events) if event.message is not None]
    return f",{','.join(found)}," if found else ""


def split_as_judged(
    reply: AppendReply, events: Sequence[Event], lateness_us: int, keep_late: bool
) -> Split:
    """The batch split as the script judged it (SPLIT), which must be what the one rule
    judges from the same clock."""
    clock = reply.topic_clock_us
    past = past_grace(clock, events, lateness_us)
    if tuple(past) != reply.past:
        # The script and pushsvc.core.lateness disagree: a bug, never a silent split.
        raise AssertionError(f"append script judged {reply.past} past the grace; Python {past}")
    return split_late(clock, events, past, lateness_us=lateness_us, keep_late=keep_late)


def raise_late(reply: AppendReply, events: Sequence[Event], lateness_us: int) -> None:
    """The script refused the batch for a plain event past the grace (LATE): raise the one
    rule's own error for it."""
    index, clock = reply.late_index, reply.topic_clock_us
    assert index is not None and clock is not None
    try:
        check_lateness(clock, [events[index]], lateness_us)
    except RequestError as late:
        late.index = index
        raise
    # The script and pushsvc.core.lateness disagree: a bug, never a silent accept.
    raise AssertionError(f"append script judged event {index} late at T={clock}; Python did not")
