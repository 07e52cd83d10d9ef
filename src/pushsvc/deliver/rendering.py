"""What a stream writes: the one owner of "project an update, then encode it", of what a
stream without a projection leaves out, and of a run's rendering cache (`Run.renderings`).

A stream renders updates whole or through its projection (`?windows=&stats=&precision=&group=
&series=`, `pushsvc.deliver.projection`, which decides what a projection keeps of an update).
Every path a stream writes goes through a `Rendering`: a live run (`block`, `blocks`, and `wire`
for the hub, writing an idle stream's socket itself, `pushsvc.deliver.hub`), a paced update
(`message`, with or without its `id:`), a replay (`replay`) and a snapshot (`snapshot`).

A stream without a projection gets every message but points (closed series buckets): a stream
gets points only when it asks for their tier (`?series=`, through a projection). `message`
applies that rule, and `replay` is built on it; a live run's whole block is `Run.block`, joined
by the same rule once per run, for every stream alike, when the first stream that takes it
whole asks for it (none at all where only projected streams, as messages streams, take it).

The cache, `Run.renderings` (None until first used), is read and written here only. Its keys:

* `"block " + projection.key` — the run's SSE block under that projection (a whole run's block
  is `Run.block` itself and is not cached);
* `"chunk " + projection.key`, and `"chunk *"` for a whole run — that block framed as one
  HTTP/1.1 chunk, for the hub's direct sends of a single run.

A second cache, `Run.unnumbered` (None until first used), holds under `projection.key` (`"*"`
for a whole run) each update's message without its `id:` (b"" for one the stream leaves out):
what a stream that writes its cursor as `id:` sends after its own `id:` line.

Ids. A stream whose topics all live in one partition writes each update's own id as `id:`:
its bytes are the ones above, shared. A stream over several partitions writes its cursor
(`pushsvc.core.cursor`) as `id:`, advanced by each update it writes: its `CursorRendering`
is its own (`rendering_for_stream`), and only its `id:` lines are; each message after them
is the shared `unnumbered` bytes, sent after them without a copy where pushsvc writes the
socket (`StreamSocket.try_send` takes the parts as they are).

Its lifetime is the run's: a run lives while a client's queue or `ready` list, or a stream
writing it, holds it — a few milliseconds for most — and nothing is evicted before. It holds
at most one entry for the whole run and two per projection that its streams asked for.
Streams that ask alike get the same bytes object, made by the first of them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import encode_message, encode_update, id_line
from pushsvc.core.updates import Run, Update, UpdateId, snapshot_message, snapshot_pages
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.stream_socket import http_chunk


def run_of(updates: list[Update]) -> Run:
    """The run of these updates (one topic's, in id order); its `block`, as a stream without a
    projection writes it (every message but points), is joined once at its first use."""
    return Run(updates)


class Rendering:
    """How one stream's runs become bytes: whole or projected (`projection`), and framed as
    HTTP/1.1 chunks or not (`chunked`) where pushsvc writes the response itself. Get one with
    `rendering_for`: equal renderings are one object, so the hub's writer sees by identity that
    the next stream takes the bytes it just sent."""

    __slots__ = ("_block_key", "_chunk_key", "_key", "chunked", "projection")

    per_stream = False
    """Whether this rendering is one stream's own (a `CursorRendering`): its bytes are for
    that stream only, so the hub never shares them with the next stream."""

    def __init__(self, projection: Projection | None, *, chunked: bool) -> None:
        self.projection = projection
        self.chunked = chunked
        key = "*" if projection is None else projection.key
        self._key = key
        self._block_key = f"block {key}"
        self._chunk_key = f"chunk {key}"

    @property
    def key(self) -> str:
        """What streams rendering alike share: renderings whose bytes differ have different
        keys (a stream's shared compression context is by it, `pushsvc.deliver.compression`)."""
        return self._key

    def own(self, data: bytes) -> bytes:
        """Bytes of this stream's own that are not a run (a heartbeat, a paced stream's
        updates), as the stream writes them: as they are, but where a stream encodes what it
        sends (`pushsvc.deliver.compression.CompressedRendering`)."""
        return data

    def block(self, run: Run) -> bytes:
        """The run's SSE block for this stream (its frames, projected if it asks); empty when
        a group filter leaves nothing of it."""
        projection = self.projection
        if projection is None:
            return run.block
        cache = run.renderings
        if cache is None:
            cache = run.renderings = {}
        block = cache.get(self._block_key)
        if block is None:
            message = self.message
            block = cache[self._block_key] = b"".join([message(u) for u in run.updates])
        return block

    def blocks(self, runs: Sequence[Run]) -> list[bytes]:
        """`block` of each run, in order, leaving out empty ones (nothing to write: an empty
        HTTP/1.1 chunk would end the response)."""
        if self.projection is None:
            return [run.block for run in runs if run.block]  # empty: a run of points only
        return [block for run in runs if (block := self.block(run))]

    def message(self, update: Update, with_id: bool = True) -> bytes:
        """One update as this stream writes it; empty when the stream leaves it out (a point
        on a stream without its tier, or an update a group filter leaves nothing of).
        `with_id=False` leaves out its `id:` (a paced stream's update held back behind newer
        ones: the client's Last-Event-ID must never move backwards)."""
        projection = self.projection
        if projection is None:
            if update.is_point:
                return b""  # points go to the streams that ask for their tier
            if with_id:
                return update.sse  # encoded once, for every stream
            data = update.data
        elif projection.messages:
            message = projection.message_of(update)
            if message is None:
                return b""
            event, data = message
            if projection.mercure is not None:
                return projection.mercure.render(event, data)  # with its own `id:`
            if with_id:
                return encode_update(update.id.text, data, event)
            return encode_message(data, event=event)
        else:
            projected = projection.data(update)
            if projected is None:
                return b""
            data = projected
        if with_id:
            return encode_update(update.id.text, data, update.event)
        return encode_message(data, event=update.event)

    def unnumbered(self, run: Run) -> list[bytes]:
        """Each update of the run as this stream writes it but without its `id:` (b"" for
        one it leaves out), made once per projection and shared (`Run.unnumbered`)."""
        cache = run.unnumbered
        if cache is None:
            cache = run.unnumbered = {}
        messages = cache.get(self._key)
        if messages is None:
            if self.projection is None:
                messages = [b"" if u.is_point else u.unnumbered for u in run.updates]
            else:
                message = self.message
                messages = [message(u, False) for u in run.updates]
            cache[self._key] = messages
        return messages

    def replay(self, updates: Sequence[Update]) -> bytes:
        """The updates after a client's Last-Event-ID, as this stream writes them."""
        message = self.message
        return b"".join([message(u) for u in updates])

    def replay_pages(self, updates: Sequence[Update], page_size: int) -> Iterator[bytes]:
        """`replay` in pages of whole messages, each about `page_size` bytes (one message
        more) and made only when the one before was taken."""
        message = self.message
        parts: list[bytes] = []
        size = 0
        for update in updates:
            data = message(update)
            if data:
                parts.append(data)
                size += len(data)
                if size >= page_size:
                    yield b"".join(parts)
                    parts, size = [], 0
        if parts:
            yield b"".join(parts)

    def snapshot(
        self,
        latest: Mapping[str, Update],
        groups: Mapping[str, list[bytes]],
        *,
        gap: bool,
        cursor: Cursor,
        named: Iterable[str] = (),
    ) -> bytes:
        """The `snapshot` message of these topics' latest updates and their live groups (each
        group's JSON), projected as this stream asks; its `id:` is `cursor`, the stream's
        once it has them (`EARLIEST` when empty: `pushsvc.core.cursor`). `named`: what a
        messages stream's gap names besides the topics of `latest` (`Snapshot.named`)."""
        projection = self.projection
        if projection is not None and projection.messages:
            return messages_head(_named(projection, latest, named), gap=gap, cursor=cursor)
        decoded = {topic: [orjson.loads(group) for group in kept] for topic, kept in groups.items()}
        if projection is None:
            return snapshot_message(latest, gap=gap, id=cursor.id_text, groups=decoded)
        return snapshot_message(
            latest,
            gap=gap,
            id=cursor.id_text,
            windows_of=projection.windows_of,
            groups={topic: projection.groups_of(kept) for topic, kept in decoded.items()},
        )

    def snapshot_pages(
        self,
        latest: Mapping[str, Update],
        groups: Mapping[str, list[bytes]],
        *,
        gap: bool,
        cursor: Cursor,
        page_size: int,
        named: Iterable[str] = (),
    ) -> Iterator[bytes]:
        """`snapshot` in pages of about `page_size` bytes (`snapshot_pages`): joined, its
        bytes exactly; each topic's groups decoded as its entry is made."""
        projection = self.projection
        if projection is not None and projection.messages:
            head = messages_head(_named(projection, latest, named), gap=gap, cursor=cursor)
            return iter((head,))

        def groups_of(topic: str) -> list[Any] | None:
            kept = groups.get(topic)
            if kept is None:
                return None
            decoded = [orjson.loads(group) for group in kept]
            return decoded if projection is None else projection.groups_of(decoded)

        return snapshot_pages(
            latest,
            gap=gap,
            id=cursor.id_text,
            page_size=page_size,
            windows_of=None if projection is None else projection.windows_of,
            groups_of=groups_of,
        )

    def wire(self, run: Run) -> bytes:
        """What one send of `run` puts on this stream's connection: its block, framed as an
        HTTP/1.1 chunk when the response is chunked; empty when there is nothing to send."""
        if not self.chunked:
            return self.block(run)
        cache = run.renderings
        if cache is None:
            cache = run.renderings = {}
        data = cache.get(self._chunk_key)
        if data is None:
            block = self.block(run)
            data = cache[self._chunk_key] = http_chunk(block) if block else b""
        return data


@functools.lru_cache(maxsize=256)
def rendering_for(projection: Projection | None, *, chunked: bool) -> Rendering:
    """The one `Rendering` for this projection and framing (kept for the few projections in
    use; past that a fresh, equal one, which still shares the cached bytes)."""
    return Rendering(projection, chunked=chunked)


class CursorRendering(Rendering):
    """One stream's rendering when it reads several partitions: each message's `id:` is the
    stream's cursor, advanced by that update; the rest of the message is the shared
    `unnumbered` bytes of its rendering alike. Made per stream by `rendering_for_stream`; the
    stream's writes (its own and the hub's, in turns) go through it, in the order they are
    written, so `cursor` is where its client is once they are out.

    The cursor is kept as its parts' text in partition order, each replaced in place as the
    stream advances: a run (one topic's, so one partition's) costs the join of the parts before
    and after its own, once, and one concatenation per update."""

    __slots__ = ("_at", "_cursor_after", "_ids", "_texts")

    per_stream = True

    def __init__(self, projection: Projection | None, *, chunked: bool, cursor: Cursor) -> None:
        super().__init__(projection, chunked=chunked)
        # A Mercure message carries the update's own `id:`, which its subscriber's code reads
        # as the event's `lastEventId`: the cursor follows it as an `id:` block of its own
        # (an `id:` and a blank line: no event, only the id the client reconnects with), so a
        # reconnection resumes from the cursor, exactly, across partitions.
        self._cursor_after = projection is not None and projection.mercure is not None
        self._ids: list[UpdateId] = list(cursor.ids)
        self._texts: list[str] = [i.text for i in self._ids]
        self._at: dict[int, int] = {i.partition: n for n, i in enumerate(self._ids)}

    @property
    def cursor(self) -> Cursor:
        """Where the stream is: the cursor of what it has written."""
        return Cursor(self._ids)

    def _place(self, partition: int) -> int:
        """The index of `partition`'s part, made (empty) when the cursor had none."""
        at = self._at.get(partition)
        if at is None:
            partitions = sorted([*self._at, partition])
            at = partitions.index(partition)
            self._ids.insert(at, UpdateId("0", 0, 0))  # replaced before it is read
            self._texts.insert(at, "")
            self._at = {p: n for n, p in enumerate(partitions)}
        return at

    def _around(self, at: int) -> tuple[str, str]:
        """The cursor's text before and after the part at `at`, with their commas."""
        texts = self._texts
        head = ",".join(texts[:at]) + "," if at else ""
        tail = "," + ",".join(texts[at + 1 :]) if at + 1 < len(texts) else ""
        return head, tail

    def _parts(self, run: Run, parts: list[bytes]) -> None:
        """Append the run's `id:` lines and shared messages to `parts`; advance the cursor."""
        messages = self.unnumbered(run)
        if not any(messages):
            return  # nothing written (points, a group filter): no part for its partition yet
        updates = run.updates
        at = self._place(updates[0].id.partition)  # a run is one topic's: one partition's
        head, tail = self._around(at)
        last = None
        after = self._cursor_after
        for update, message in zip(updates, messages, strict=True):
            if message:
                last = update.id
                line = id_line(head + last.text + tail)
                if after:
                    parts.append(message)
                    parts.append(line + b"\n")
                else:
                    parts.append(line)
                    parts.append(message)
        if last is not None:
            self._ids[at] = last
            self._texts[at] = last.text

    def block(self, run: Run) -> bytes:
        parts: list[bytes] = []
        self._parts(run, parts)
        return b"".join(parts)

    def blocks(self, runs: Sequence[Run]) -> list[bytes]:
        """The runs' `id:` lines and shared messages, in order, as separate parts (written
        without joining where pushsvc writes the socket)."""
        parts: list[bytes] = []
        for run in runs:
            self._parts(run, parts)
        return parts

    def message(self, update: Update, with_id: bool = True) -> bytes:
        if self.projection is None:
            message = b"" if update.is_point else update.unnumbered
        else:
            message = super().message(update, False)
        if not message or not with_id:
            return message
        if self._cursor_after:
            return message + self.advance(update.id) + b"\n"
        return self.advance(update.id) + message

    def advance(self, update_id: UpdateId) -> bytes:
        """The `id:` line of the stream's cursor advanced to `update_id`, which the stream
        writes next (a message of its own follows the line)."""
        at = self._place(update_id.partition)
        head, tail = self._around(at)
        self._ids[at] = update_id
        self._texts[at] = update_id.text
        return id_line(head + update_id.text + tail)

    def wire(self, run: Run) -> bytes:
        block = self.block(run)
        return http_chunk(block) if self.chunked and block else block


GAP_EVENT = "gap"
"""What a messages stream sends where its history cannot cover a client's `Last-Event-ID`."""


def messages_head(topics: Iterable[str], *, gap: bool, cursor: Cursor) -> bytes:
    """What a messages stream sends in place of a snapshot: no statistics. Resuming where the
    history cannot cover the client (`gap`), an `event: gap` naming the topics (and patterns)
    whose messages may be lost, with the stream's cursor as `id:`; else the cursor alone, an
    `id:` with no data, which sets an `EventSource`'s `lastEventId` and fires no event, so
    that a client that reconnects before its first message resumes from where it started
    (`EARLIEST` while its topics have published nothing)."""
    if gap:
        data = orjson.dumps({"topics": sorted(set(topics))})
        return encode_message(data, event=GAP_EVENT, id=cursor.id_text)
    return id_line(cursor.id_text) + b"\n"


def _named(
    projection: Projection, latest: Mapping[str, Update], named: Iterable[str]
) -> Iterable[str]:
    """The topics a messages stream's gap may name (those of `latest`, and `named`): none on
    a Mercure stream, whose pushsvc topics name the IRIs of every update, private ones too,
    and mean nothing to its client."""
    return () if projection.mercure is not None else [*latest, *named]


def rendering_for_stream(
    projection: Projection | None, *, chunked: bool, cursor: Cursor | None
) -> Rendering:
    """The rendering of one stream: shared (`rendering_for`) when it writes each update's own
    id (`cursor` None), else its own `CursorRendering` starting at `cursor`."""
    if cursor is None:
        return rendering_for(projection, chunked=chunked)
    return CursorRendering(projection, chunked=chunked, cursor=cursor)
