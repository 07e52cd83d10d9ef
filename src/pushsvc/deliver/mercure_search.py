"""The search of the retained history for Mercure update ids (`pushsvc.deliver.mercure_resume`
resumes after what it finds), read a page at a time so that it never holds its process long.

An id is found where a replay of `mercure.*` from where each partition's history starts would
give it first: each partition's updates in their order, several partitions' merged by time
(`_order`, as the brokers' replays merge them). Read at once, on Redis, that replay held the
loop for as long as every update kept took to be read and decoded (a fraction of a second to
seconds at the default history of 16 partitions), while every other request waited. So a
broker that reads pages (`HistoryPages`: both of pushsvc's) is read `PAGE` entries of one
partition at a time, each page taking its turn with the streams being primed
(`priming.Priming.turn`) and a `pause` before the next (`loop_pause.make_way` in a serving
process: it waits for the loop to be idle whatever the page took, for a Redis round trip
answered at once does not yield): the other requests of the process are served between two
pages, on every broker. `PAGE` is small enough for a page to be read, decoded and searched
in a few milliseconds.

The pages go through the partitions together, oldest first: the next page read is always of
the partition whose read has come least far, as a merge would take them, so that where an id
is found no partition is read further than its time (each id found is the first in the merged
order once every partition's read has come past it). An id that is not kept is searched to
the end of every partition, as one read did. The answer is the one read's: the same update
for each id, and the heads read once the search is over (`cursor_after` takes them; a head
read before the update found was published could send some updates again). Each page is read
at its own moment, so an update published during the search may be found or not, and a
partition trimmed past where its read had come is searched no further (`lost`): what the
search found of it then resumes with a gap, as any resume from a trimmed position does.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import orjson

from pushsvc.broker.base import Broker, HistoryPages
from pushsvc.core.cursor import Cursor
from pushsvc.core.partitions import partitions_matching
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateId
from pushsvc.deliver import priming
from pushsvc.deliver.mercure_subscriptions import SUBSCRIPTIONS_TOPIC
from pushsvc.deliver.mercure_updates import PATTERN
from pushsvc.deliver.projection import Projection

PAGE = 128
"""Entries of a partition's history read at once, between two pauses: read, decoded and
searched in a few milliseconds of the loop (docs/performance.md, 'Mercure')."""
SLICE = 2048
"""Updates `find_many` searches between two pauses, given a long list at once."""
KEPT = TopicMatcher([PATTERN, SUBSCRIPTIONS_TOPIC])
"""Where an id is looked for: every update's topic, and the subscription events'."""
_ID_MEMBER = re.compile(rb'"id":("(?:[^"\\]|\\.)*")')
_MESSAGES = Projection(None, None, messages=True)

Found = tuple[dict[str, UpdateId], Mapping[int, UpdateId]]
"""Of each id found, the update resumed after; and each partition's head (`cursor_after`)."""


class _PagedBroker(Broker, HistoryPages, Protocol):
    """A broker that reads pages of its history."""


def search(
    broker: Broker,
    wanted: Sequence[str],
    starts: Mapping[int, UpdateId],
    pause: Callable[[], None] | None = None,
) -> Found:
    """The first update (in a replay's order) with each id of `wanted`, searched from
    `starts` (where each partition's history starts), a page at a time where the broker
    reads pages, with `pause` between pages; and the heads, read after the search."""
    if isinstance(broker, HistoryPages):
        return _search_pages(broker, wanted, starts, pause)
    with priming.of(broker).turn():  # a broker that reads no pages is read at once
        replayed = broker.replay(Cursor(starts.values()), KEPT)
    return find_many(replayed.updates, wanted, pause), replayed.heads


def _search_pages(
    broker: _PagedBroker,
    wanted: Sequence[str],
    starts: Mapping[int, UpdateId],
    pause: Callable[[], None] | None,
) -> Found:
    primer = priming.of(broker)
    found: dict[str, UpdateId] = {}
    # Where each partition's read has come, the least far first.
    frontier = [(_start_order(starts.get(p), p), p, starts.get(p)) for p in _partitions(broker)]
    heapq.heapify(frontier)
    pages = 0
    while frontier:
        _, partition, after = heapq.heappop(frontier)
        searched = [i for i in wanted if not _settled(found.get(i), partition, after)]
        if not searched:
            continue  # nothing left of it could come before what was found
        if pages and pause is not None:
            pause()
        pages += 1
        with primer.turn():  # a page takes its turn with the streams being primed
            page = broker.history_page(partition, after, KEPT, PAGE)
        for update_id, at in find_many(page.updates, searched).items():
            known = found.get(update_id)
            if known is None or _order(at) < _order(known):
                found[update_id] = at
        if not page.lost and page.more and page.last is not None:
            heapq.heappush(frontier, (_order(page.last), partition, page.last))
    if not found:
        return found, {}
    read = set(_partitions(broker))  # the hub's one: a Mercure stream reads no other
    return found, {p: head for p, head in broker.history_heads().items() if p in read}


def _partitions(broker: Broker) -> list[int]:
    return partitions_matching(KEPT, broker.partitions)


def _order(update_id: UpdateId) -> tuple[int, int, int]:
    """Where an update comes in a replay of several partitions: by time (`ms`, then `seq`),
    then by partition, as the brokers' replays merge them."""
    return update_id.ms, update_id.seq, update_id.partition


def _start_order(after: UpdateId | None, partition: int) -> tuple[int, int, int]:
    """`_order` of where a partition's read starts (before everything from its beginning)."""
    return (-1, -1, partition) if after is None else (after.ms, after.seq, partition)


def _settled(known: UpdateId | None, partition: int, after: UpdateId | None) -> bool:
    """Whether no update of `partition` after `after` can come before `known` in a replay."""
    if known is None or after is None:
        return False
    return _order(known) <= (after.ms, after.seq, partition)


def find_many(
    updates: Sequence[Update], asked: Sequence[str], pause: Callable[[], None] | None = None
) -> dict[str, UpdateId]:
    """The pushsvc id of the first of `updates` (in replay order) that is a Mercure update
    with each id of `asked` found. One pass whatever the number of ids: each update's
    `"id":"…"` members are read from its bytes (a JSON string holds no bare `"`, so none is
    found inside a string) and looked up; only an update holding an id asked for is parsed.
    `pause` is called every `SLICE` updates."""
    wanted = {orjson.dumps(i): i for i in asked}
    found: dict[str, UpdateId] = {}
    for n, update in enumerate(updates):
        if pause is not None and n and not n % SLICE:
            pause()
        for member in _ID_MEMBER.finditer(update.data):
            given = wanted.get(member[1])
            if given is not None and given not in found and _holds(update, given):
                found[given] = update.id
        if len(found) == len(wanted):
            break
    return found


def _holds(update: Update, update_id: str) -> bool:
    """Whether `update` is a Mercure update with id `update_id`."""
    message = _MESSAGES.message_of(update)
    if message is None:
        return False
    try:
        kept = orjson.loads(message[1])
    except orjson.JSONDecodeError:
        return False
    return isinstance(kept, dict) and "topics" in kept and kept.get("id") == update_id
