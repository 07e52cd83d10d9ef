"""Taking in a request that publishes to many topics: every group of events validated first,
then each topic's appended as a one-topic POST of them would be, and what became of each.

What a request's events are is judged whole, before anything is logged: a group whose topic
is no valid name (or one only pushsvc produces), or whose events a one-topic POST would
refuse (malformed, too far ahead, a message over its size, bad tags...), refuses the
request, its error's `index` the request's position of the event at fault; nothing changed.

What is atomic then: **one topic's events of one request**. Each group is one append of the
broker (`pushsvc.ingest.accept.append_validated`, the atomic step a `POST
/topics/{topic}/events` is): all its events are logged, on the topic or its late stream, or
none. Groups are independent of each other: one refused for what only its topic's state or
the caller's rights decide (a topic the token may not publish to, a full `--max-topics`, a
late event where its rule refuses late ones, a broker that cannot be reached for its
partition) leaves the others logged. On a Redis Cluster the groups of one request fall in
several partitions, each group in its topic's.

The groups' appends go to the broker together where it can send them so
(`pushsvc.broker.base.ManyTopicsAppender`: on Redis one pipeline per connection, each append
still its own atomic script with its own answer), up to `_TOGETHER` at a time: a request to a
thousand topics costs a few round trips, not one per topic.

Idempotency: the request's key is each group's key on its topic (a key is remembered per
topic), compared with the digest of the whole request. A retry of the same request replays
what every group logged and takes in what none did (a server that stopped between two groups
logged the first ones only), so no event is logged twice and every logged group answers what
it first did. The key with another body: each topic it logged there refuses its group
(`idempotency_key_reused`, changing nothing); the request's first topic is appended first,
so a body whose first topic the key logged is refused whole, before anything changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pushsvc.broker.base import Appended, Broker, ManyTopicsAppender, TopicAppend, append_alone
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.lateness import keeps_late
from pushsvc.core.topics import TopicName, validate_topic
from pushsvc.errors import IdempotencyKeyReused, InvalidTopic, RequestError
from pushsvc.ingest.accept import validated
from pushsvc.ingest.input_limits import InputLimits
from pushsvc.ingest.parse import JSON
from pushsvc.ingest.topic_groups import TopicGroup

_NO_BODY_BOUND = 1 << 62
"""A group's own body bound: none (the request's was judged as it was read)."""
_TOGETHER = 1000
"""The most groups appended together (`ManyTopicsAppender.append_many`: one pipeline per
connection), the loop let run between two such: a broadcast to 10,000 topics neither holds
the loop for its whole append nor sends one pipeline of every topic's events."""


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    """What became of one topic's group: `appended` (logged now, or `replayed`), or the
    `error` that refused it whole, its `index` a position in the request."""

    group: TopicGroup
    appended: Appended | None = None
    error: RequestError | None = None


def ingest_groups(
    broker: Broker,
    groups: Sequence[TopicGroup],
    *,
    permit: Callable[[TopicName], None],
    grace_of: Callable[[TopicName], tuple[int, bool]],
    limits: InputLimits,
    now_us: int,
    idempotency: Idempotency | None = None,
    pause: Callable[[], None] | None = None,
) -> list[GroupOutcome]:
    """Validate every group, then append each in turn (`permit` raises what refuses a topic
    to the caller; `grace_of` gives a topic's grace and whether a late event refuses its
    batch); the outcome of each, in the order of `groups`. Raises the RequestError of the
    first invalid event, or IdempotencyKeyReused when the first group's topic holds the key
    for another request, having changed nothing; any error that is no RequestError too.
    `pause` is called between validating and appending, and between two appends (of
    `_TOGETHER` groups each where the broker appends many together)."""
    unbounded = replace(limits, max_body_bytes=_NO_BODY_BOUND)
    checked: list[tuple[TopicName, list[Event]]] = []
    for group in groups:
        try:
            try:
                name = validate_topic(group.topic)
            except InvalidTopic as exc:
                exc.index = 0  # named first by the group's first event
                raise
            checked.append(
                (name, validated(name, group.body, JSON, limits=unbounded, now_us=now_us))
            )
        except RequestError as exc:
            raise _placed(exc, group) from None
    outcomes: list[GroupOutcome | None] = [None] * len(groups)
    together: list[tuple[int, TopicAppend]] = []
    for place, (group, (name, events)) in enumerate(zip(groups, checked, strict=True)):
        try:
            permit(name)
            grace_us, refuse_late = grace_of(name)
        except RequestError as exc:
            outcomes[place] = GroupOutcome(group, error=_placed(exc, group))
            continue
        append = TopicAppend(name, events, grace_us, idempotency, keeps_late(name, refuse_late))
        if place == 0 and idempotency is not None:
            # Alone and first: a key this topic holds for another request refuses the whole
            # request before anything changed.
            if pause is not None:
                pause()
            outcomes[0] = _outcome(group, _append_each(broker, [append])[0], first=True)
        else:
            together.append((place, append))
    for start in range(0, len(together), _TOGETHER):
        chunk = together[start : start + _TOGETHER]
        if pause is not None:
            pause()
        if isinstance(broker, ManyTopicsAppender):
            results = broker.append_many([append for _, append in chunk])
        else:
            results = _append_each(broker, [append for _, append in chunk], pause)
        for (place, _), result in zip(chunk, results, strict=True):
            outcomes[place] = _outcome(groups[place], result, first=False)
    return [outcome for outcome in outcomes if outcome is not None]


def _append_each(
    broker: Broker, appends: Sequence[TopicAppend], pause: Callable[[], None] | None = None
) -> list[Appended | RequestError]:
    """Each append alone (`pause` between two), as `ManyTopicsAppender.append_many` answers."""
    results: list[Appended | RequestError] = []
    for append in appends:
        if pause is not None and results:
            pause()
        results.append(append_alone(broker, append))
    return results


def _outcome(group: TopicGroup, result: Appended | RequestError, *, first: bool) -> GroupOutcome:
    """What became of `group`; a key reused on the request's first topic refuses it whole."""
    if isinstance(result, IdempotencyKeyReused):
        if first:
            raise result
        return GroupOutcome(group, error=_reused(group))
    if isinstance(result, RequestError):
        return GroupOutcome(group, error=_placed(result, group))
    return GroupOutcome(group, appended=result)


def _placed(error: RequestError, group: TopicGroup) -> RequestError:
    """`error` with its `index` the request's position of the event it names (a position in
    the group as raised)."""
    if error.index is not None and 0 <= error.index < len(group.items):
        error.index = group.items[error.index]
    return error


def _reused(group: TopicGroup) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"this Idempotency-Key was used on {group.topic!r} for another request within the "
        "idempotency window; send a new key with a new request"
    )
