"""What a stream writes for a run, made once per process and shared by every stream that
writes alike: the one owner of a run's rendering cache (`Run.renderings`).

A stream renders a run whole (the run's own `block`, joined once by `Run.of`) or through its
projection (`?windows=&stats=&precision=`), and the hub, writing an idle stream's socket itself
(`pushsvc.deliver.hub`, the direct way), sends one run as one HTTP/1.1 chunk when the response
is chunked. Streams that ask alike get the same bytes object, made by the first of them.

A run may hold points (closed series buckets): the whole block leaves them out, a projection
keeps those of the tiers its stream asked for (`?series=`).

The cache, `Run.renderings` (None until first used), is read and written here only. Its keys:

* `"block " + projection.key` — the run's SSE block under that projection (a whole run's block
  is `Run.block` itself and is not cached);
* `"chunk " + projection.key`, and `"chunk *"` for a whole run — that block framed as one
  HTTP/1.1 chunk, for the hub's direct sends of a single run.

Its lifetime is the run's: a run lives while a client's queue or `ready` list, or a stream
writing it, holds it — a few milliseconds for most — and nothing is evicted before. It holds
at most one entry for the whole run and two per projection that its streams asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from pushsvc.core.sse import encode_update
from pushsvc.core.updates import Run
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.stream_socket import frame_chunk


class Rendering:
    """How one stream's runs become bytes: whole or projected (`projection`), and framed as
    HTTP/1.1 chunks or not (`chunked`) where pushsvc writes the response itself. Get one with
    `rendering_for`: equal renderings are one object, so the hub's writer sees by identity that
    the next stream takes the bytes it just sent."""

    __slots__ = ("_block_key", "_chunk_key", "chunked", "projection")

    def __init__(self, projection: Projection | None, *, chunked: bool) -> None:
        self.projection = projection
        self.chunked = chunked
        key = "*" if projection is None else projection.key
        self._block_key = f"block {key}"
        self._chunk_key = f"chunk {key}"

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
            block = cache[self._block_key] = b"".join(
                [
                    encode_update(u.id.text, data, u.event)
                    for u in run.updates
                    if (data := projection.data(u)) is not None
                ]
            )
        return block

    def blocks(self, runs: Sequence[Run]) -> list[bytes]:
        """`block` of each run, in order, leaving out empty ones (nothing to write: an empty
        HTTP/1.1 chunk would end the response)."""
        if self.projection is None:
            return [run.block for run in runs if run.block]  # empty: a run of points only
        return [block for run in runs if (block := self.block(run))]

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
            data = cache[self._chunk_key] = frame_chunk(block) if block else b""
        return data


@functools.lru_cache(maxsize=256)
def rendering_for(projection: Projection | None, *, chunked: bool) -> Rendering:
    """The one `Rendering` for this projection and framing (kept for the few projections in
    use; past that a fresh, equal one, which still shares the cached bytes)."""
    return Rendering(projection, chunked=chunked)
