"""`?delta=positional`: a stream whose updates after the first of each topic go as patches
against the previous update of their topic that the stream sent (`pushsvc.core.delta_patch`),
made once per update per projection, never per stream.

A patch is a message of its own, `event: stats-delta`, with the `id:` the full update would
have had; pushsvc's clients apply it and hand the whole update on. Everything else (points,
alerts, a topic's deletion, the snapshot and the replay at a stream's head) is sent as a
stream without `?delta=` sends it.

Once per update per projection. The process keeps, per projection and topic, the newest
update a delta stream wrote and its leaves (`DeltaBook`, a chain per topic), and the recent
patches made against it. The first delta stream to write a run works out, for its projection,
each update's full message and patch (`RunPlan`, kept on the run, `Run.deltas`, and shared
by every stream): the first update's patch against the chain's newest update (or the patch
made already for that update, when the run is a conflated copy), each later one's against
the update before it in the run; then the chain moves on to the run's newest update.

Never a patch against what the stream did not receive. Each stream remembers the last update
of each topic it sent (`DeltaRendering`, a dict of ids), and takes a run's patched form only
when the run's first patch is against exactly that id; otherwise it takes the run's first
update whole (the rest of the run are patches against updates it has just sent). So:

* after the snapshot or the replay at its head, a stream starts with nothing remembered:
  each topic's first live update goes whole (replays are sent whole, as without `?delta=`);
* a conflated stream (a slow reader) skipped updates: its next update's patch is against one
  it never got, so it goes whole;
* a topic's deletion makes the stream forget the topic, and the chain start afresh;
* a new epoch (a history reset) never chains onto the old one;
* on a multi-topic stream the chains are per topic: an update of another topic in between
  changes nothing (the client keeps the last update per topic too);
* a paced stream (`?max_hz=`) skips updates by design: its updates go whole.

A patch that is not smaller than the update is not sent: the update goes whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pushsvc.core import delta_patch
from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import encode_message, id_line
from pushsvc.core.updates import Run, Update, UpdateId
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import CursorRendering, Rendering, rendering_for
from pushsvc.deliver.stream_socket import http_chunk
from pushsvc.errors import BadRequest

DELTA_EVENT = "stats-delta"
"""The SSE event name of a patch."""

FORMATS = ("positional",)
"""What `?delta=` takes."""

Leaves = tuple[delta_patch.Layout, list[Any]]


def parse_delta(given: str | None) -> bool:
    """`?delta=`: True for a known format, False when absent; BadRequest otherwise."""
    if given is None:
        return False
    if given not in FORMATS:
        raise BadRequest(f"?delta= takes {', '.join(FORMATS)}; got {given[:40]!r}")
    return True


def delta_key(projection_key: str) -> str:
    """The rendering key of a delta stream of this projection (`Rendering.key`: what streams
    rendering alike share, e.g. a compression context): never a plain stream's."""
    return projection_key + ";delta=positional"


REMEMBERED_TOPICS = 1024
"""How many topics a delta stream remembers its last update of (`DeltaRendering._remember`):
about 100 kB at most; a forgotten topic's next update goes whole, never wrong."""

_RECENT = 8
"""Patches a chain keeps, by update id: a conflated copy of a run finds its patch there."""


@dataclass(slots=True)
class _Chain:
    """One topic's chain under one projection: its newest update written by a delta stream,
    that update's leaves, and the recent patches (update id → base id, patch data)."""

    newest: UpdateId
    leaves: Leaves
    recent: dict[UpdateId, tuple[UpdateId, bytes]] = field(default_factory=dict)


class DeltaBook:
    """The chains of this process, by projection key and topic, at most `max_chains` (the
    oldest go: a topic whose chain went sends its next update whole). Greenlet-safe as the
    hub is: nothing here yields."""

    def __init__(self, max_chains: int = 4096) -> None:
        self.max_chains = max_chains
        self._chains: dict[tuple[str, str], _Chain] = {}

    def get(self, key: str, topic: str) -> _Chain | None:
        return self._chains.get((key, topic))

    def put(self, key: str, topic: str, chain: _Chain) -> None:
        chains = self._chains
        chains.pop((key, topic), None)
        if len(chains) >= self.max_chains:
            del chains[next(iter(chains))]
        chains[(key, topic)] = chain

    def drop(self, key: str, topic: str, before: UpdateId) -> None:
        """Forget the topic's chain if its newest update comes before `before` (a deletion)."""
        chain = self._chains.get((key, topic))
        if chain is not None and before.is_after(chain.newest):
            del self._chains[(key, topic)]

    def __len__(self) -> int:
        return len(self._chains)


BOOK = DeltaBook()
"""This process's chains."""


@dataclass(slots=True)
class _Item:
    """One update of a run as a delta stream writes it, without its `id:`: whole (`full`),
    and as a patch (`patch`, None when there is none)."""

    update: Update
    full: bytes
    patch: bytes | None
    stats: bool


_KEEP: Any = object()
"""`RunPlan.after` of a run that leaves the stream's remembered id as it was."""


@dataclass(slots=True)
class RunPlan:
    """A run as delta streams of one projection write it (made once, shared)."""

    topic: str
    items: list[_Item]
    """The updates the projection keeps, in order."""
    first: int
    """The index in `items` of the first statistics update (-1: none)."""
    base: UpdateId | None
    """What the first statistics update's patch is against (None: it has none)."""
    after: Any
    """What the stream remembers of the topic after the run: an id, None (forget it: the
    topic was deleted), or `_KEEP`."""
    chained: bytes | None = None
    """The block, with each update's own `id:`, for a stream that has `base`."""
    fresh: bytes | None = None
    """The block for any other stream: the first statistics update whole."""
    chunks: dict[bool, bytes] | None = None
    """`block` framed as one HTTP/1.1 chunk, by `chained`: what the hub's writer sends."""

    def chunk(self, chained: bool) -> bytes:
        """`block(chained)` as one HTTP/1.1 chunk (empty when there is nothing to send)."""
        chunks = self.chunks
        if chunks is None:
            chunks = self.chunks = {}
        data = chunks.get(chained)
        if data is None:
            block = self.block(chained)
            data = chunks[chained] = http_chunk(block) if block else b""
        return data

    def block(self, chained: bool) -> bytes:
        if chained:
            data = self.chained
            if data is None:
                data = self.chained = self._join(True)
            return data
        data = self.fresh
        if data is None:
            data = self.fresh = self._join(False) if self.base is not None else self.block(True)
        return data

    def _join(self, chained: bool) -> bytes:
        first = self.first
        return b"".join(
            [
                id_line(item.update.id.text) + _pick(item, n != first or chained)
                for n, item in enumerate(self.items)
            ]
        )


def _pick(item: _Item, patched: bool) -> bytes:
    patch = item.patch
    return patch if patched and patch is not None else item.full


def _full(projection: Projection | None, update: Update) -> tuple[bytes, bytes | None]:
    """The update's message without `id:` as a stream of `projection` writes it, and its
    JSON (None, with b"": the stream leaves it out)."""
    if projection is None:
        if update.is_point:
            return b"", None
        return update.unnumbered, update.data
    data = projection.data(update)
    if data is None:
        return b"", None
    return encode_message(data, event=update.event), data


def plan_of(run: Run, key: str, projection: Projection | None, book: DeltaBook = BOOK) -> RunPlan:
    """The run's `RunPlan` for this projection (`key`: its key, "*" for none), made by the
    first delta stream that writes the run and kept on it."""
    cache = run.deltas
    if cache is None:
        cache = run.deltas = {}
    plan = cache.get(key)
    if plan is None:
        plan = cache[key] = _plan(run, key, projection, book)
    assert isinstance(plan, RunPlan)
    return plan


def _plan(run: Run, key: str, projection: Projection | None, book: DeltaBook) -> RunPlan:
    topic = run.updates[0].topic
    chain = book.get(key, topic)
    items: list[_Item] = []
    first = -1
    base: UpdateId | None = None
    after: Any = _KEEP
    previous: tuple[UpdateId, Leaves] | None = None
    """The stats update before, within the run (None: none yet, or a deletion since)."""
    made: list[tuple[UpdateId, UpdateId, bytes]] = []
    for update in run.updates:
        message, data = _full(projection, update)
        if data is None:
            continue
        if update.is_deletion:
            items.append(_Item(update, message, None, False))
            previous = None
            after = None
            book.drop(key, topic, update.id)
            chain = book.get(key, topic)
            continue
        if not update.is_update:
            items.append(_Item(update, message, None, False))
            continue
        update_id = update.id
        patch: bytes | None = None
        leaves: Leaves | None = None
        against: UpdateId | None = None
        if first < 0 and after is _KEEP and chain is not None:
            known = chain.recent.get(update_id)
            if known is not None:
                against, patch = known
            elif update_id.epoch == chain.newest.epoch and update_id.is_after(chain.newest):
                leaves = delta_patch.leaves(orjson.loads(data))
                against = chain.newest
                patch = delta_patch.diff(topic, chain.leaves, leaves)
        elif previous is not None:
            leaves = delta_patch.leaves(orjson.loads(data))
            against = previous[0]
            patch = delta_patch.diff(topic, previous[1], leaves)
        if patch is not None and len(patch) >= len(data):
            patch = None  # not smaller: the update goes whole
        if first < 0:
            first = len(items)
            base = against if patch is not None else None
        if patch is not None and against is not None:
            made.append((update_id, against, patch))
        items.append(_Item(update, message, None if patch is None else _patch_message(patch), True))
        if leaves is None:
            leaves = delta_patch.leaves(orjson.loads(data))
        previous = (update_id, leaves)
        after = update_id
    if previous is not None:
        newest_id, newest_leaves = previous
        if chain is None or (
            newest_id.is_after(chain.newest) and newest_id.epoch == chain.newest.epoch
        ):
            fresh = _Chain(newest_id, newest_leaves, chain.recent if chain is not None else {})
            book.put(key, topic, fresh)
            chain = fresh
        elif newest_id.epoch != chain.newest.epoch:
            # A new epoch: the chain starts again from this update.
            chain = _Chain(newest_id, newest_leaves)
            book.put(key, topic, chain)
            made = []
    if chain is not None and made and (chain.newest == previous[0] if previous else False):
        recent = chain.recent
        for update_id, against, patch in made:
            recent[update_id] = (against, patch)
        while len(recent) > _RECENT:
            del recent[next(iter(recent))]
    return RunPlan(topic, items, first, base, after)


def _patch_message(patch: bytes) -> bytes:
    return encode_message(patch, event=DELTA_EVENT)


class DeltaRendering(Rendering):
    """One `?delta=` stream's rendering: its own object, as it remembers the last update it
    sent of each topic; its bytes are one of the two forms of each run's shared `RunPlan`
    (`wire` hands the hub's writer those bytes as they are: one `send`, no copy). With
    `cursor` (a stream over several partitions: `DeltaCursorRendering`) each message's `id:`
    is the stream's cursor, as `CursorRendering` writes it. Replays and paced updates go
    whole."""

    __slots__ = ("_cursor", "_plan_key", "_sent", "_whole")

    def __init__(
        self, projection: Projection | None, *, chunked: bool, cursor: Cursor | None
    ) -> None:
        super().__init__(projection, chunked=chunked)
        self._plan_key = "*" if projection is None else projection.key
        self._cursor = (
            None if cursor is None else CursorRendering(projection, chunked=False, cursor=cursor)
        )
        self._whole: Rendering = (
            self._cursor if self._cursor is not None else rendering_for(projection, chunked=False)
        )
        self._sent: dict[str, UpdateId] = {}

    @property
    def key(self) -> str:
        """Names what this stream's bytes are: the projection's, as deltas (`delta_key`)."""
        return delta_key(self._plan_key)

    def _take(self, run: Run) -> tuple[RunPlan, bool]:
        """The run's plan, and whether this stream takes its patched form; remembers what
        the stream has of the topic afterwards. Once per run per stream: kept short."""
        cache = run.deltas
        plan = cache.get(self._plan_key) if cache is not None else None
        if plan is None:
            plan = plan_of(run, self._plan_key, self.projection)
        assert isinstance(plan, RunPlan)
        base = plan.base
        topic = plan.topic
        sent = self._sent
        chained = False
        if base is not None:
            last = sent.get(topic)
            chained = last is not None and (last is base or last == base)
        after = plan.after
        if after is not _KEEP:
            if after is None:
                sent.pop(topic, None)
            else:
                self._remember(topic, after)
        return plan, chained

    def _remember(self, topic: str, sent: UpdateId) -> None:
        """Note `sent` as the last update of `topic` this stream wrote; at most
        `REMEMBERED_TOPICS` topics (the first noted is forgotten: its next update goes whole),
        so that a `*` stream over many topics holds a bounded memory, not one id a topic."""
        remembered = self._sent
        if len(remembered) >= REMEMBERED_TOPICS and topic not in remembered:
            del remembered[next(iter(remembered))]
        remembered[topic] = sent

    def _parts(self, run: Run, parts: list[bytes]) -> None:
        plan, chained = self._take(run)
        cursor = self._cursor
        if cursor is None:
            block = plan.block(chained)
            if block:
                parts.append(block)
            return
        first = plan.first
        for n, item in enumerate(plan.items):
            parts.append(cursor.advance(item.update.id))
            parts.append(_pick(item, n != first or chained))

    def block(self, run: Run) -> bytes:
        parts: list[bytes] = []
        self._parts(run, parts)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def blocks(self, runs: Sequence[Run]) -> list[bytes]:
        parts: list[bytes] = []
        for run in runs:
            self._parts(run, parts)
        return parts

    def message(self, update: Update, with_id: bool = True) -> bytes:
        """One update whole (a paced stream's, a replay's), remembered as sent."""
        message = self._whole.message(update, with_id)
        if message:
            if update.is_update:
                self._remember(update.topic, update.id)
            elif update.is_deletion:
                self._sent.pop(update.topic, None)
        return message

    def wire(self, run: Run) -> bytes:
        """What one send of `run` puts on the connection; called once per run per stream (the
        hub's writer never shares it with the next stream: this object is this stream's)."""
        if self._cursor is None:
            plan, chained = self._take(run)
            return plan.chunk(chained) if self.chunked else plan.block(chained)
        block = self.block(run)
        return http_chunk(block) if self.chunked and block else block


class DeltaCursorRendering(DeltaRendering):
    """A `?delta=` stream whose bytes are its own (`per_stream`): over several partitions (its
    `id:` lines are), or compressed (see `rendering_for_stream`)."""

    __slots__ = ()

    per_stream = True


def rendering_for_stream(
    projection: Projection | None,
    *,
    chunked: bool,
    cursor: Cursor | None,
    own_bytes: bool = False,
) -> DeltaRendering:
    """The rendering of one `?delta=` stream (`cursor`: its cursor when it writes one).

    `own_bytes`: the stream is compressed (`pushsvc.deliver.compression`). Two delta streams
    of one shape may write a run differently (one takes its patch, one whose base it lacks
    its first update whole), so its rendering says its bytes are its own (`per_stream`):
    its compression then takes a shared segment only when the segment's bytes are its own
    (the same object, for streams that take the same form of a run), else leaves the shared
    sequence until a reset point."""
    if cursor is None and not own_bytes:
        return DeltaRendering(projection, chunked=chunked, cursor=None)
    return DeltaCursorRendering(projection, chunked=chunked, cursor=cursor)
