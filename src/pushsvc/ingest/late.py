"""Appending a batch whose events may be past their topic's grace, losing none of them.

The broker's append judges lateness against the topic clock it keeps, atomically with the
append (`Broker.append_events`, `pushsvc.core.lateness`): that judgement, made in log order,
is the authoritative one, so the aggregator never judges lateness itself and replaying the
log yields the same updates. An append that meets an event past the grace changes nothing
and names the clock it judged by; every event of the batch older than that clock less the
grace, from the refused one on, is then past the grace for good (a topic clock never moves
back), so those events are logged on the topic's late stream and the rest is appended again.
An event before the refused one stays: it was judged against an older clock (each event is
judged against the clock at its place in the batch). A batch takes one append more per
clock it meets, usually two in all; its late events reach the late stream in the order they
are found, round by round.

The late stream is a topic of its own, `<topic>.late` (`late_topic`): read like any topic
(stream, history, statistics), its updates carry each late event as it was posted; a token
that may read the topic may read it (`Scope.reading`). Its appends accept any age. The late
events of each round are logged before the batch's on-time events, each round under the
request's idempotency key with the round's first event index: a producer that retries never
loses a late event. A request whose every event went to the late stream then remembers its
own key on the topic (an empty append, `Broker.append_events`), as one that logged there
does: a repeat is answered from the topic's key without touching the late stream, and the
key with another body is refused (IdempotencyKeyReused) whatever that body's events are. A
retry after the server died between two appends, while the topic clock moved on, may log an
event on the late stream twice (it is then late by more in the retry); it never logs one on
the topic twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from pushsvc.broker.base import Appended, Broker
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.lateness import ANY_AGE_US
from pushsvc.core.topics import LATE_SUFFIX, MAX_TOPIC_LEN
from pushsvc.errors import LateEvent


def late_topic(topic: str) -> str:
    """The topic that holds `topic`'s events past its grace."""
    return topic + LATE_SUFFIX


def append_keeping_late(
    broker: Broker,
    topic: str,
    events: Sequence[Event],
    *,
    grace_us: int,
    refuse: bool,
    idempotency: Idempotency | None = None,
    append: Callable[[list[Event]], Appended] | None = None,
) -> Appended:
    """Append `events` to `topic`; those past the grace go to `late_topic(topic)` (counted in
    `Appended.late`), or, with `refuse`, the batch is refused whole (LateEvent, nothing
    changed). `append`: how the topic's own appends are made, where not plainly (the Redis
    bridge's are fenced by its lease; its late stream's are not, so a bridge that lost its
    lease mid-batch may log a late event twice there, never on the topic)."""
    remaining = list(enumerate(events))
    late = evicted = 0
    replayed = idempotency is not None  # every late append so far was an earlier request's
    while remaining:
        batch = [event for _, event in remaining]
        try:
            if append is not None:
                appended = append(batch)
            else:
                appended = broker.append_events(
                    topic, batch, lateness_us=grace_us, idempotency=idempotency
                )
        except LateEvent as exc:
            if refuse or exc.clock_us is None or len(late_topic(topic)) > MAX_TOPIC_LEN:
                # (A name too long for a late stream, which no one could read: refused.)
                if exc.index is not None:
                    exc.index = remaining[exc.index][0]
                raise
            # Those before the one refused were on time at their place in the batch; of the
            # others, every one older than the clock it met less the grace is past it for good.
            edge, first = exc.clock_us - grace_us, exc.index or 0
            found = [(i, event) for i, event in remaining[first:] if event.ts_us < edge]
            kept = None
            if idempotency is not None:
                kept = replace(idempotency, key=f"{idempotency.key}:late:{found[0][0]}")
            logged = broker.append_events(
                late_topic(topic),
                [event for _, event in found],
                lateness_us=ANY_AGE_US,
                idempotency=kept,
            )
            late += len(found)
            evicted += logged.evicted
            replayed = replayed and logged.replayed
            gone = {i for i, _ in found}
            remaining = [(i, event) for i, event in remaining if i not in gone]
            continue
        if appended.replayed:
            # An earlier request logged this one: what it did not log on the topic, it
            # logged on the late stream.
            late = len(events) - appended.accepted
        return appended._replace(late=late, evicted=appended.evicted + evicted)
    if idempotency is not None:
        # Every event was past the grace: the key is remembered on the topic all the same.
        remembered = broker.append_events(topic, [], lateness_us=grace_us, idempotency=idempotency)
        evicted += remembered.evicted
        if remembered.replayed:  # a racing repeat remembered it first
            return remembered._replace(evicted=evicted, late=len(events) - remembered.accepted)
    # A retry that found every late event logged already (the server died before the key
    # was remembered on the topic) is a replay too.
    return Appended(0, replayed=replayed, evicted=evicted, late=late)
