"""A run rendered for streams: made once per rendering, shared by every stream that asks alike."""

from __future__ import annotations

from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import encode_update
from pushsvc.core.updates import Kind, Run, Update, UpdateId, snapshot_message
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import rendering_for, run_of
from pushsvc.deliver.stream_socket import http_chunk

MEAN = Projection(None, ("mean",), precision=3)


def _update(n: int) -> Update:
    body = b'{"topic":"a","windows":{"1m":{"count":%d,"mean":%d.98765}}}' % (n, n)
    return Update.numbered("a", UpdateId("e", 0, n), n, body)


def _run(*numbers: int) -> Run:
    return run_of([_update(n) for n in numbers])


def test_equal_renderings_are_one_object() -> None:
    same = Projection(None, ("mean",), 3)
    assert rendering_for(MEAN, chunked=True) is rendering_for(same, chunked=True)
    assert rendering_for(MEAN, chunked=True) is not rendering_for(MEAN, chunked=False)
    assert rendering_for(None, chunked=True) is not rendering_for(MEAN, chunked=True)


def test_a_whole_run_is_its_own_block_and_needs_no_cache() -> None:
    run = _run(1, 2)
    whole = rendering_for(None, chunked=False)
    assert whole.block(run) is run.block
    assert whole.wire(run) is run.block
    assert whole.blocks([run, run]) == [run.block, run.block]
    assert run.renderings is None


def test_a_projected_block_is_made_once_and_shared() -> None:
    run = _run(1, 2)
    projected = rendering_for(MEAN, chunked=False)
    block = projected.block(run)
    assert block == b"".join(
        encode_update(
            u.id.text,
            b'{"id":"%b","topic":"a","windows":{"1m":{"mean":%d.99}}}'
            % (u.id.text.encode(), u.id.seq),
        )
        for u in run.updates
    )
    # Another stream with an equal projection, chunked or not, gets the very same bytes.
    assert rendering_for(Projection(None, ("mean",), 3), chunked=True).block(run) is block
    assert projected.wire(run) is block


def test_a_chunk_is_framed_once_per_rendering_and_kept_beside_the_block() -> None:
    run = _run(7)
    whole = rendering_for(None, chunked=True)
    chunk = whole.wire(run)
    assert chunk == b"%x\r\n%b\r\n" % (len(run.block), run.block)
    assert whole.wire(run) is chunk
    projected = rendering_for(MEAN, chunked=True)
    projected_chunk = projected.wire(run)
    block = projected.block(run)
    assert projected_chunk == b"%x\r\n%b\r\n" % (len(block), block)
    assert projected.wire(run) is projected_chunk
    # The whole run's chunk, the projection's block and its chunk: nothing else.
    assert run.renderings is not None and len(run.renderings) == 3


def test_runs_do_not_share_their_renderings() -> None:
    first, second = _run(1), _run(2)
    projected = rendering_for(MEAN, chunked=True)
    assert projected.wire(first) != projected.wire(second)
    assert projected.block(second).count(b"2.99") == 1


# ---------------------------------------------- one owner: project, then encode; points left out


def _point(n: int, resolution: str = "1s") -> Update:
    body = b'{"resolution":"%b","ts":%d,"count":1}' % (resolution.encode(), n)
    return Update.numbered("a", UpdateId("e", 0, n), n, body, Kind.POINT)


def test_a_stream_without_a_projection_gets_every_message_but_points() -> None:
    whole = rendering_for(None, chunked=False)
    update, point = _update(1), _point(2)
    assert point.is_point
    assert whole.message(update) is update.sse
    assert whole.message(point) == b""
    assert whole.replay([update, point, _update(3)]) == update.sse + _update(3).sse


def test_a_live_run_leaves_out_what_a_replay_leaves_out() -> None:
    # `run_of` joins a run's whole block at dispatch; it must agree with the rendering's rule.
    updates = [_update(1), _point(2), _update(3), _point(4)]
    whole = rendering_for(None, chunked=False)
    assert run_of(updates).block == whole.replay(updates)
    assert run_of([_point(5)]).block == whole.replay([_point(5)]) == b""
    projected = rendering_for(MEAN, chunked=False)
    assert projected.block(run_of(updates)) == projected.replay(updates)


def test_a_projected_stream_gets_the_points_of_the_tiers_it_names() -> None:
    point, other = _point(2, "1s"), _point(3, "1m")
    series = rendering_for(Projection(None, None, series=("1s",)), chunked=False)
    assert series.message(point) == encode_update(point.id.text, point.data, "point")
    assert series.message(other) == b""
    assert rendering_for(MEAN, chunked=False).message(point) == b""


def test_a_message_held_back_goes_without_its_id() -> None:
    update = _update(4)
    whole = rendering_for(None, chunked=False)
    assert whole.message(update, with_id=False) == b"event: stats\ndata: " + update.data + b"\n\n"
    projected = rendering_for(MEAN, chunked=False)
    with_id = projected.message(update)
    assert with_id.startswith(b"id: " + update.id.text.encode() + b"\n")
    assert projected.message(update, with_id=False) == with_id.partition(b"\n")[2]


def test_a_snapshot_is_projected_as_the_stream_asks() -> None:
    body = b'{"topic":"a","ts":7.0,"windows":{"1m":{"count":7,"mean":7.98765}}}'
    latest = {"a": Update.numbered("a", UpdateId("e", 0, 7), 7, body)}
    cursor = Cursor([UpdateId("e", 0, 7)])
    whole = rendering_for(None, chunked=False).snapshot(latest, {}, gap=True, cursor=cursor)
    assert whole == snapshot_message(latest, gap=True, id="e:0-7", groups={})
    projected = rendering_for(MEAN, chunked=False).snapshot(latest, {}, gap=False, cursor=cursor)
    assert b'"windows":{"1m":{"mean":7.99}}' in projected and b'"count"' not in projected


def test_a_run_joins_its_frames_once() -> None:
    updates = [_update(1), _update(2)]
    run = run_of(updates)
    assert run.block == updates[0].sse + updates[1].sse
    assert run.last_id == updates[1].id
    assert run_of(updates[:1]).block is updates[0].sse


def test_every_stream_gets_a_deletion_whole_whatever_it_projects_or_filters() -> None:
    body = b'{"gap":true,"topics":{},"deleted":["t"]}'
    deletion = Update.numbered("t", UpdateId("ab", 0, 9), 9, body, Kind.DELETION)
    expected = encode_update("ab:0-9", b'{"id":"ab:0-9",' + body[1:], "snapshot")
    assert deletion.sse == expected
    projected = Projection.parse("1m", "mean", known_windows=["1m"], group=["station:grill"])
    for projection in (None, projected):
        assert rendering_for(projection, chunked=False).message(deletion) == expected


def test_a_cursor_takes_no_part_for_a_run_the_stream_writes_nothing_of() -> None:
    """A stream over several partitions writes its cursor as `id:`. A run it writes nothing
    of (points, which a stream without a projection leaves out; a group filter) must not add
    its partition to the cursor: an empty part made a malformed id (`,1…`) that no resume
    could read."""
    from pushsvc.core.updates import Kind
    from pushsvc.deliver.rendering import rendering_for_stream

    later = UpdateId("100000000", 0, 5)  # partition 1
    stream = rendering_for_stream(None, chunked=False, cursor=Cursor([later]))
    point = Update.numbered("p", UpdateId("00000000", 0, 7), 7, b'{"topic":"p"}', Kind.POINT)
    assert stream.block(run_of([point])) == b""
    update = Update.numbered("a", UpdateId("100000000", 0, 6), 6, b'{"topic":"a"}')
    written = stream.block(run_of([update]))
    assert written.startswith(b"id: 100000000:0-6\n")
    assert list(stream.cursor.ids) == [update.id]  # type: ignore[attr-defined]


def test_a_run_only_a_messages_stream_takes_never_encodes_the_whole_update() -> None:
    body = (
        b'{"topic":"u1","event":{"ts":1.0,"tags":{},"type":"shipped","data":{"order":4711}},'
        b'"windows":{"1m":{"count":0}}}'
    )
    update = Update.numbered("u1", UpdateId("e", 0, 1), 1, body)
    run = run_of([update])
    messages = rendering_for(Projection(None, None, messages=True), chunked=True)
    assert messages.wire(run) == http_chunk(
        encode_update(update.id.text, b'{"order":4711}', "shipped")
    )
    # Nobody took the run whole: the update (its history's and its topic's latest) holds no
    # encoding of itself, and the run no block.
    assert update._sse is None
    assert run._block is None
    assert run.block == update.sse
