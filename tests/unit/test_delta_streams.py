"""Delta streams (`?delta=positional`) at the rendering level: whatever a client reconstructs
from a delta stream equals, message by message and id by id, what a plain stream of the same
topics and projection sends for the same runs — under conflation (the real conflating
queue), joins mid-way, a resume on a fresh connection, a topic's deletion, a new epoch and
multi-topic streams; never a patch against what the stream did not receive (a client holds
only what it received on its connection, and a patch against anything else would not
reconstruct the update, or would have no base at all); and the patches are made once per
update per projection, however many streams write them.

Hypothesis draws the updates (layouts changing, nulls, -0.0, ints beside floats, ticks,
groups), the projections and each stream's disturbances. The server side is pushsvc's own
rendering, queue and `run_of`; the client side is pushsvc's own `Reconstruction`."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.client.delta import Reconstruction
from pushsvc.client.errors import MissingBase
from pushsvc.core import delta_patch
from pushsvc.core.cursor import Cursor
from pushsvc.core.updates import (
    GroupPart,
    Run,
    Update,
    UpdateId,
    deletion_draft,
    draft,
)
from pushsvc.deliver import delta
from pushsvc.deliver.compression import CompressedRendering
from pushsvc.deliver.conflating_queue import ConflatingQueue
from pushsvc.deliver.delta import DELTA_EVENT, DeltaBook, DeltaRendering
from pushsvc.deliver.pacer import Paced
from pushsvc.deliver.projection import GroupFilter, Projection
from pushsvc.deliver.rendering import rendering_for_stream, run_of
from pushsvc.deliver.shared_deflate import SharedDeflates
from pushsvc.deliver.stream_socket import http_chunk

TOPICS = ("a", "b", "c")

values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1]),
    st.integers(-5, 5),
    st.none(),
)
window = st.fixed_dictionaries({"count": st.integers(0, 3), "mean": values, "var": values})
windows = st.fixed_dictionaries({"10s": window, "1m": window})


@st.composite
def update_bodies(draw: st.DrawFn, topic: str, clock_us: int) -> Any:
    """The draft of one update of `topic`: an event or a tick, grouped or not, or its
    deletion."""
    kind = draw(st.sampled_from(["event", "event", "tick", "grouped", "groups", "deleted"]))
    if kind == "deleted":
        return deletion_draft(topic, clock_us)
    event = None
    if kind != "tick":
        tags = draw(st.dictionaries(st.sampled_from(["st", "1"]), st.sampled_from("xy")))
        event = {"value": draw(values), "ts": clock_us / 1e6, "tags": tags}
    ws = draw(windows)
    if kind == "grouped":
        key = {"st": draw(st.sampled_from("xy"))}
        part = GroupPart(orjson.dumps(list(key.values())).decode(), key, draw(windows))
        return draft(topic, clock_us, "event", event, ws, group=part)
    if kind == "groups":
        parts = [GroupPart('["x"]', {"st": "x"}, draw(windows))]
        return draft(topic, clock_us, "tick", None, ws, groups=parts)
    return draft(topic, clock_us, "tick" if event is None else "event", event, ws)


@st.composite
def update_logs(draw: st.DrawFn) -> list[Update]:
    """Updates in id order over a few topics, the epoch changing once perhaps (a history
    reset: a restart without --data-dir)."""
    count = draw(st.integers(1, 40))
    reset_at = draw(st.integers(0, count + 1))
    updates = []
    for n in range(count):
        topic = draw(st.sampled_from(TOPICS))
        epoch = "aaaaaaaa" if n < reset_at else "bbbbbbbb"
        if topic == "b":
            epoch = "1" + epoch  # another partition: a stream of several writes its cursor
        body = draw(update_bodies(topic, 1_000_000 * (n + 1)))
        updates.append(Update.of(body, UpdateId(epoch, 1000 + n, 0)))
    return updates


projections = st.sampled_from(
    [
        None,
        Projection(("1m",), None),
        Projection(None, ("mean", "var"), precision=3),
        Projection(None, None, group=GroupFilter((("st", "x"),))),
    ]
)


def runs_of(updates: list[Update]) -> Iterator[Run]:
    """The runs the hub would make: consecutive updates of one topic."""
    start = 0
    while start < len(updates):
        end = start + 1
        while end < len(updates) and updates[end].topic == updates[start].topic:
            end += 1
        yield run_of(updates[start:end])
        start = end


def messages(data: bytes) -> list[tuple[str, str | None, str]]:
    """(event, id, data) of each message of an SSE byte stream."""
    out = []
    for block in data.decode().split("\n\n"):
        event, message_id, lines = "message", None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                message_id = line[4:]
            elif line.startswith("data: "):
                lines.append(line[6:])
        if lines:
            out.append((event, message_id, "\n".join(lines)))
    return out


def reconstructed(data: bytes, client: Reconstruction) -> list[tuple[str, str | None, Any]]:
    """What pushsvc's client hands on of a delta stream's bytes."""
    out = []
    for event, message_id, text in messages(data):
        if event == DELTA_EVENT:
            out.append(("stats", message_id, orjson.loads(client.patch(text))))
            continue
        if event == "stats":
            client.update(text)
        elif event == "snapshot":
            client.snapshot(text)
        out.append((event, message_id, orjson.loads(text)))
    return out


def plain(data: bytes) -> list[tuple[str, str | None, Any]]:
    return [(e, i, orjson.loads(t)) for e, i, t in messages(data)]


@st.composite
def stream_plans(draw: st.DrawFn, count: int) -> dict[str, Any]:
    """One stream's life: its projection, when it joins, how its queue drains (a small
    capacity conflates), and where its connection drops and resumes."""
    projection = draw(projections)
    return {
        "projection": projection,
        "join": draw(st.integers(0, count)),
        "capacity": draw(st.integers(1, 4)),
        "drains": set(draw(st.lists(st.integers(0, count), max_size=count))),
        "resumes": set(draw(st.lists(st.integers(0, count), max_size=3))),
        # A stream over several partitions (its cursor as `id:`). Not with a group filter: a
        # plain `CursorRendering` then writes a cursor with an empty part (",1aaaaaaaa:…")
        # after a run the filter left nothing of, which the delta rendering does not.
        "cursor": draw(st.booleans()) if projection is None or projection.group is None else False,
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_a_client_reconstructs_is_what_a_plain_stream_sends(data: st.DataObject) -> None:
    updates = data.draw(update_logs())
    runs = list(runs_of(updates))
    plans = data.draw(st.lists(stream_plans(len(runs)), min_size=1, max_size=4))
    book = DeltaBook()
    patches = 0
    for plan in plans:
        projection = plan["projection"]
        queue = ConflatingQueue(plan["capacity"])
        cursor = Cursor() if plan["cursor"] else None
        whole = rendering_for_stream(projection, chunked=False, cursor=cursor)
        rendering = delta.rendering_for_stream(projection, chunked=False, cursor=cursor)
        client = Reconstruction()
        sent_plain, sent_delta = [], []
        for n, run in enumerate(runs):
            if n < plan["join"]:
                continue
            if n in plan["resumes"]:
                # The connection dropped: a new stream, and a client that starts afresh.
                drained = queue.drain()
                sent_plain.append(whole.blocks(drained))
                sent_delta.append(_with_book(rendering, drained, book))
                # Resumed: both renderings afresh (their cursors too: equal ids still).
                fresh = Cursor() if plan["cursor"] else None
                whole = rendering_for_stream(projection, chunked=False, cursor=fresh)
                rendering = delta.rendering_for_stream(projection, chunked=False, cursor=fresh)
                sent_delta.append([b"\0reset"])
            queue.put(run)
            if n in plan["drains"] or n == len(runs) - 1:
                drained = queue.drain()
                sent_plain.append(whole.blocks(drained))
                sent_delta.append(_with_book(rendering, drained, book))
        expected = plain(b"".join(b"".join(parts) for parts in sent_plain))
        got: list[tuple[str, str | None, Any]] = []
        for parts in sent_delta:
            if parts == [b"\0reset"]:
                client.reset()
                continue
            block = b"".join(parts)
            patches += block.count(b"event: stats-delta\n")
            got += reconstructed(block, client)
        assert got == expected


def _with_book(rendering: DeltaRendering, runs: list[Run], book: DeltaBook) -> list[bytes]:
    """`rendering.blocks(runs)`, the runs' plans made with the chains in `book` (each example
    is a process of its own)."""
    for run in runs:
        key = "*" if rendering.projection is None else rendering.projection.key
        delta.plan_of(run, key, rendering.projection, book)
    return rendering.blocks(runs)


def _update(topic: str, n: int, mean: float, epoch: str = "aaaaaaaa") -> Update:
    body = draft(topic, n * 1_000_000, "event", {"value": mean, "ts": n, "tags": {}},
                 {"1m": {"count": n, "mean": mean}})  # fmt: skip
    return Update.of(body, UpdateId(epoch, n, 0))


def test_steady_streams_get_patches_made_once_per_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    diffs = []
    real = delta_patch.diff
    monkeypatch.setattr(delta_patch, "diff", lambda *a: diffs.append(a) or real(*a))
    monkeypatch.setattr(delta, "BOOK", DeltaBook())
    streams = [DeltaRendering(None, chunked=False, cursor=None) for _ in range(50)]
    for n in range(1, 11):
        run = run_of([_update("orders", n, n * 1.5)])
        blocks = {b"".join(s.blocks([run])) for s in streams}
        assert len(blocks) == 1  # every stream the same bytes
        (block,) = blocks
        assert (b"event: stats-delta\n" in block) == (n > 1)
    assert len(diffs) == 9  # once per update after the first, not once per stream


def test_a_patch_carries_the_id_the_whole_update_would_and_is_smaller() -> None:
    book = DeltaBook()
    stream = DeltaRendering(None, chunked=False, cursor=None)
    first, second = _update("orders", 1, 2.0), _update("orders", 2, 3.25)
    assert stream.blocks([_plan(run_of([first]), book)]) == [first.sse]
    (block,) = stream.blocks([_plan(run_of([second]), book)])
    assert block.startswith(f"id: {second.id.text}\nevent: stats-delta\ndata: ".encode())
    assert len(block) < len(second.sse)
    ((event, _, text),) = messages(block)
    assert event == "stats-delta"
    assert orjson.loads(text) == ["orders", 0, second.id.text, 2, 2.0, 4,
                                  {"value": 3.25, "ts": 2, "tags": {}}, 5, 2, 6, 3.25]  # fmt: skip


def _plan(run: Run, book: DeltaBook) -> Run:
    delta.plan_of(run, "*", None, book)
    return run


def test_a_stream_that_missed_the_base_gets_the_update_whole() -> None:
    """A slow reader whose queue conflated, a stream that joined after the base, a stream
    that was sent another topic in between: only the last keeps the patch."""
    book = DeltaBook()
    one, two = _update("orders", 1, 1.0), _update("orders", 3, 2.0)
    other = _update("other", 2, 9.0)
    had_it = DeltaRendering(None, chunked=False, cursor=None)
    joined = DeltaRendering(None, chunked=False, cursor=None)
    had_it.blocks([_plan(run_of([one]), book)])
    had_it.blocks([_plan(run_of([other]), book)])
    run = _plan(run_of([two]), book)
    assert b"stats-delta" in b"".join(had_it.blocks([run]))
    assert b"".join(joined.blocks([run])) == two.sse


def test_a_new_epoch_never_chains_onto_the_old_one() -> None:
    book = DeltaBook()
    stream = DeltaRendering(None, chunked=False, cursor=None)
    stream.blocks([_plan(run_of([_update("orders", 5, 1.0)]), book)])
    after_reset = _update("orders", 1, 2.0, epoch="bbbbbbbb")
    assert stream.blocks([_plan(run_of([after_reset]), book)]) == [after_reset.sse]


def test_after_a_deletion_the_topic_starts_whole() -> None:
    book = DeltaBook()
    stream = DeltaRendering(None, chunked=False, cursor=None)
    deletion = Update.of(deletion_draft("orders", 2_000_000), UpdateId("aaaaaaaa", 2, 0))
    again = _update("orders", 3, 1.0)
    blocks = stream.blocks(
        [_plan(run_of([_update("orders", 1, 1.0)]), book), _plan(run_of([deletion, again]), book)]
    )
    assert blocks[-1] == deletion.sse + again.sse


def test_a_patch_without_its_base_is_refused_by_the_client() -> None:
    client = Reconstruction()
    with pytest.raises(MissingBase):
        client.patch('["orders",0,"aaaaaaaa:2-0"]')
    client.update(orjson.dumps({"id": "aaaaaaaa:1-0", "topic": "orders"}).decode())
    with pytest.raises(MissingBase):
        client.patch('["orders",7,1.0]')  # no leaf 7: never a made-up member
    assert orjson.loads(client.patch('["orders",0,"aaaaaaaa:2-0"]')) == {
        "id": "aaaaaaaa:2-0",
        "topic": "orders",
    }


@settings(max_examples=300, deadline=None)
@given(base=st.dictionaries(st.sampled_from(["x", "y", "event", "key"]), values), new=values)
def test_apply_undoes_diff(base: dict[str, Any], new: Any) -> None:
    fields = {"topic": "t", "windows": {"1m": {"mean": new, **base}}, **base}
    changed = {"topic": "t", "windows": {"1m": {"mean": 1.5, **base}}, **base}
    patch = delta_patch.diff("t", delta_patch.leaves(changed), delta_patch.leaves(fields))
    assert patch is not None
    rebuilt = delta_patch.apply(changed, orjson.loads(patch))
    assert orjson.dumps(rebuilt) == orjson.dumps(fields)


def test_the_hubs_send_is_the_plans_chunk_shared_by_every_stream() -> None:
    book = DeltaBook()
    streams = [DeltaRendering(None, chunked=True, cursor=None) for _ in range(3)]
    late = DeltaRendering(None, chunked=True, cursor=None)
    first = _plan(run_of([_update("orders", 1, 1.0)]), book)
    for stream in streams:
        stream.wire(first)
    second = _plan(run_of([_update("orders", 2, 2.0)]), book)
    sent = [stream.wire(second) for stream in streams]
    assert sent[0] is sent[1] is sent[2]  # made once, the same object for each
    (patch,) = messages(sent[0].split(b"\r\n", 1)[1])
    assert patch[0] == "stats-delta" and patch[1] == second.updates[0].id.text
    assert late.wire(second) == http_chunk(second.updates[0].sse)


def test_replays_and_paced_updates_go_whole() -> None:
    """What a stream writes through `message` (its replay, a paced stream's turns) is whole:
    a replay's client has no base, and a paced stream skips updates by design."""
    book = DeltaBook()
    updates = [_update("orders", n, n * 0.5) for n in range(1, 6)]
    for update in updates:
        _plan(run_of([update]), book)  # the chain has a patch for each
    stream = DeltaRendering(None, chunked=False, cursor=None)
    assert stream.replay(updates[:3]) == b"".join(u.sse for u in updates[:3])
    paced = Paced(10.0, stream.message)
    written = b"".join(paced.blocks([run_of(updates[3:])], now=100.0))
    assert b"stats-delta" not in written
    assert plain(written) == plain(updates[3].sse)  # the first due; the next one held


def test_a_compressed_stream_never_takes_a_segment_of_another_form() -> None:
    """Two gzip delta streams in one shared deflate context: the first to write a run makes
    its segment from its patch; the other lacks the patch's base, and sends its own whole
    update (stored), not the segment: a compressed delta rendering says its bytes are its
    own (`own_bytes`, as stream_response asks for every compressed one)."""
    book = DeltaBook()
    first, second = _update("orders", 1, 1.0), _update("orders", 2, 2.0)
    _plan(run_of([first]), book)
    run = _plan(run_of([second]), book)
    contexts = SharedDeflates(idle_reset_us=10**9)
    context = contexts.acquire(("orders", delta.delta_key("*"), True))
    inner = [
        delta.rendering_for_stream(None, chunked=False, cursor=None, own_bytes=True)
        for _ in range(2)
    ]
    inner[0].message(first)  # the early stream has the base
    early, late = (CompressedRendering(r, context) for r in inner)
    assert b"stats-delta" in zlib.decompressobj(-15).decompress(early.wire(run))
    got = zlib.decompressobj(-15).decompress(late.wire(run))
    assert plain(got) == plain(second.sse)


def test_a_stream_over_many_topics_remembers_a_bounded_number_and_sends_the_rest_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `*` delta stream remembers at most `REMEMBERED_TOPICS` topics' last updates: memory
    bounded whatever the topic count. A topic it forgot gets its next update whole (what the
    client reconstructs is still exact); one it remembers, a patch."""
    monkeypatch.setattr(delta, "REMEMBERED_TOPICS", 4)
    book = DeltaBook()
    stream = DeltaRendering(None, chunked=False, cursor=None)
    topics = [f"t{i}" for i in range(6)]
    for n, topic in enumerate(topics, start=1):
        stream.blocks([_plan(run_of([_update(topic, n, 1.0)]), book)])
    assert len(stream._sent) == 4
    forgotten = _update("t0", 10, 2.0)
    assert stream.blocks([_plan(run_of([forgotten]), book)]) == [forgotten.sse]
    kept = _update("t5", 11, 2.0)
    (block,) = stream.blocks([_plan(run_of([kept]), book)])
    assert b"event: stats-delta\n" in block
