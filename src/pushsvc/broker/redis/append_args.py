"""What the Redis broker sends `lua/append_events.lua` of a batch (`append_call`), and what the
script's answers become (`appended`): the Python side of the append's one judgement.

The script judges a batch against its topic's clock by the rule of `pushsvc.core.lateness`.
Where it finds events past the grace it logs nothing and answers which (SPLIT), or refuses the
batch (LATE, a plain event where the topic keeps no late stream); each answer is checked here
against the Python rule from the clock the script names, so that the two can never disagree
silently, and a SPLIT becomes the entries of the batch as the rule splits it, which the broker
sends again for the script to log in one step.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushsvc.broker.base import Appended
from pushsvc.broker.redis.keys import PartitionKeys, time_key
from pushsvc.broker.redis.script_replies import AppendCode, AppendReply
from pushsvc.broker.redis.wire import encode_events
from pushsvc.broker.shared_log import entry_slices
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency, key_reused
from pushsvc.core.lateness import Split, check_lateness, late_topic, past_grace, split_late
from pushsvc.errors import ReplicasUnconfirmed, RequestError

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


def append_call(
    part: PartitionKeys,
    topic: str,
    events: Sequence[Event],
    lateness_us: int,
    idempotency: Idempotency | None,
    keep_late: bool,
    fence: tuple[str, str] | None,
    *,
    wake: bool,
    max_keys: int,
) -> tuple[list[str], list[str | int | bytes]]:
    """The keys and arguments of `lua/append_events.lua` for one batch to `topic` of the
    partition `part`, as it came. `wake`: the script publishes on the partition's wake channel
    (a Cluster's log waiters); `max_keys`: the idempotency keys a partition keeps."""
    keys = [part.log, part.clocks, part.logged]
    times = "".join(time_key(event.ts_us) + time_key(event.ts_us + lateness_us) for event in events)
    aside = late_topic(topic) if keep_late else ""
    args: list[str | int | bytes] = [topic, aside, times, ""]
    if fence is not None:
        keys.append(part.fence(fence[0]))
        args.append(fence[1])
    else:
        args.append("")
    if idempotency is not None:
        keys += [part.idempotency(topic, idempotency.key), part.idempotency_order]
        args += [idempotency.digest, len(events), idempotency.window_ms]
    else:
        args += ["", "", 0]
    args += [part.wake_channel if wake else "", max_keys, "", 0]
    args.append("" if keep_late else message_indices(events))
    args += payloads(events)
    return keys, args


def resplit(
    args: list[str | int | bytes],
    reply: AppendReply,
    events: Sequence[Event],
    lateness_us: int,
    keep_late: bool,
) -> int:
    """`args` made to send the batch again split as the script judged it (SPLIT): the events
    on time to the topic, the rest to its late stream or marked; how many are past the grace."""
    split = split_as_judged(reply, events, lateness_us, keep_late)
    args[ANSWER_ARG] = len(events) - split.past
    args[EXPECTED_ARG] = ",".join(map(str, reply.past))
    args[LATE_ENTRIES_ARG] = len(entry_slices(len(split.late)))
    del args[FIRST_PAYLOAD_ARG:]
    args += payloads(split.topic) + payloads(split.late)
    return split.past


def appended(
    reply: AppendReply,
    replicas: int | None,
    events: Sequence[Event],
    lateness_us: int,
    past: int,
    min_replicas: int,
) -> Appended:
    """What a final reply of the append script (no SPLIT, no NEW_TOPIC) answers; `replicas`:
    how many confirmed the write, where `min_replicas` asks for any."""
    if reply.code is AppendCode.LATE:
        raise_late(reply, events, lateness_us)
    if reply.code is AppendCode.KEY_REUSED:
        raise key_reused()
    if reply.code is AppendCode.REPLAYED:
        assert reply.replayed_events is not None
        accepted = reply.replayed_events
        return Appended(accepted, replayed=True, late=len(events) - accepted)
    if replicas is not None and replicas < min_replicas:
        raise ReplicasUnconfirmed(
            f"the events reached {replicas} of {min_replicas} replicas in time; "
            "they will be applied unless the primary is lost (a retry with the same "
            "Idempotency-Key cannot duplicate them)"
        )
    return Appended(len(events) - past, evicted=reply.evicted, late=past)
