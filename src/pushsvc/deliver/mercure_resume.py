"""Where a Mercure subscriber that reconnects resumes: its `Last-Event-ID` made a cursor.

A Mercure subscriber reconnects with the id of the last update it received (`Last-Event-ID`,
or `last_event_id` / `lastEventID` in the query): the publisher's own id or the hub's
`urn:uuid:`. pushsvc resumes a stream from a cursor (`pushsvc.core.cursor`: a position in each
partition's history), so the id is looked up in what the history keeps of the Mercure topics
(`mercure.*`), and the stream resumes from the cursor just after that update: its replay,
then live, comes from the one path that keeps pushsvc's delivery promise
(`pushsvc.deliver.subscription`). Nothing is indexed on the side: the history is the index,
so the lookup is the same on the in-process store and on Redis, holds across restarts where
the history does (Redis), and costs no memory beyond a page of it: it is read and searched a
page at a time, the process serving others between pages (`pushsvc.deliver.mercure_search`).

The hub's topics are kept in one partition (`pushsvc.core.partitions`: one ordered sequence
per hub), so a Mercure stream reads that partition alone and the cursor is the update's id:
exactly the updates after it, whatever topics the stream selects. The rules below for other
partitions serve a stream whose cursor still names several (one made before the hub's topics
were kept together):

* In the update's own partition the cursor is the update's id: exactly the updates after it.
* In every other partition it is the position just before the update's millisecond (each
  history's clock): what was published there from that millisecond on is sent, in the order
  of their times, as a replay of several partitions merges them.
* Where another partition's history no longer keeps every update from that millisecond on,
  the stream's replay finds it `lost` and says so (`event: gap`), as for any cursor.

Several updates with one id (a publisher reusing ids): the earliest kept is the one resumed
after, as the specification says. `earliest` replays everything kept. An id that is not kept
(never published, or trimmed) is not found: the stream starts with `event: gap` and goes live.
A `Last-Event-ID` that reads as pushsvc's own cursor (the stream's first bare `id:`, a gap's
`id:`, the `id:` block after each update of a stream over several partitions, which is what
an `EventSource` reconnects with there: `pushsvc.deliver.rendering.CursorRendering`) is taken
as one, without a lookup: exact, where a lookup by an update's id is by time.

The answer's `Mercure-Last-Event-ID` (`Resume.answer`): the id resumed after, or `earliest`
where there is none before the first update sent (`earliest` asked for, or the id not found).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pushsvc.broker.base import Broker, HistoryStarts
from pushsvc.core.cursor import EARLIEST, Cursor
from pushsvc.core.partitions import partitions_matching
from pushsvc.core.updates import Update, UpdateId
from pushsvc.deliver import mercure_search
from pushsvc.deliver.mercure_search import KEPT, find_many

_U64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a subscriber resumes: `after`, the cursor its stream replays after (None: the id
    was not found, and the stream starts with a gap), and `answer`, the response's
    `Mercure-Last-Event-ID`."""

    after: Cursor | None
    answer: str


def requested(header: str | None, args: Mapping[str, str]) -> str | None:
    """The id a subscriber resumes from: its `Last-Event-ID` header, else `last_event_id` in
    the query, else `lastEventID` (the name before the specification settled on it); None
    when none is given (or given empty)."""
    for given in (header, args.get("last_event_id"), args.get("lastEventID")):
        if given:
            return given
    return None


def needs_lookup(last_event_id: str) -> bool:
    """Whether resuming from `last_event_id` reads the history (`resolve_many`): not for
    `earliest`, nor for pushsvc's own cursor."""
    return last_event_id != EARLIEST and Cursor.parse(last_event_id) is None


def resolve(broker: Broker, last_event_id: str) -> Resume:
    """Where a Mercure stream that asks to resume from `last_event_id` resumes (see the module
    docstring). Raises BrokerUnavailable when the history cannot be read."""
    return resolve_many(broker, [last_event_id])[0]


def resolve_many(
    broker: Broker, asked: Sequence[str], pause: Callable[[], None] | None = None
) -> list[Resume]:
    """`resolve` of each of `asked`, in order, the history read and searched once for all of
    them (`pushsvc.deliver.mercure_lookups` gathers them, `pushsvc.deliver.mercure_search`
    reads and searches it a page at a time); `pause`, if given, is called between pages.
    Raises BrokerUnavailable when the history cannot be read."""
    answers: dict[str, Resume] = {}
    for last_event_id in asked:
        if last_event_id == EARLIEST:
            answers[last_event_id] = Resume(Cursor(history_starts(broker).values()), EARLIEST)
        elif (own := Cursor.parse(last_event_id)) is not None:
            answers[last_event_id] = Resume(own, last_event_id)
    wanted = [i for i in asked if i not in answers]
    if wanted:
        found, heads = mercure_search.search(broker, wanted, history_starts(broker), pause)
        for update_id in wanted:
            at = found.get(update_id)
            answers[update_id] = (
                Resume(None, EARLIEST) if at is None else Resume(cursor_after(at, heads), update_id)
            )
    return [answers[i] for i in asked]


def history_starts(broker: Broker) -> dict[int, UpdateId]:
    """Where the history of each partition a Mercure stream reads starts (`HistoryStarts`:
    the one partition the hub's topics are kept in); none known for a broker that cannot tell
    (a replay from nothing then finds a trimmed partition `lost`)."""
    if not isinstance(broker, HistoryStarts):
        return {}
    read = set(partitions_matching(KEPT, broker.partitions))
    return {p: start for p, start in broker.history_starts().items() if p in read}


def find(updates: Sequence[Update], update_id: str) -> UpdateId | None:
    """The pushsvc id of the first of `updates` (in replay order) that is a Mercure update
    with id `update_id`."""
    return find_many(updates, [update_id]).get(update_id)


def cursor_after(found: UpdateId, heads: Mapping[int, UpdateId]) -> Cursor:
    """The cursor just after update `found`: `found` in its partition; in each other partition
    of `heads` (each one's newest update), the position just before `found`'s millisecond, or
    its newest update where that is older (a position never issued would read as `lost`)."""
    ids = [found]
    for partition, head in heads.items():
        if partition == found.partition:
            continue
        mark = UpdateId(head.epoch, found.ms - 1, _U64) if found.ms else UpdateId(head.epoch, 0, 0)
        ids.append(head if head.position <= mark.position else mark)
    return Cursor(ids)
