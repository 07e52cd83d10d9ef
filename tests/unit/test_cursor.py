"""A stream's cursor (core/cursor): its text round-trips, anything we could not have issued is
refused, and `admits` / `advanced` agree with a model of a dict partition → (epoch, position)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.core.cursor import EARLIEST, MAX_CURSOR_LEN, Cursor
from pushsvc.core.updates import UpdateId

U64 = 2**64 - 1

partitions = st.integers(0, 1023)
tokens = st.text("0123456789abcdef", min_size=8, max_size=8)


@st.composite
def epochs(draw: st.DrawFn, partition: int | None = None) -> str:
    """An epoch as `new_epoch(partition)` makes one."""
    p = draw(partitions) if partition is None else partition
    return (format(p, "x") if p else "") + draw(tokens)


@st.composite
def ids(draw: st.DrawFn, partition: int | None = None) -> UpdateId:
    return UpdateId(draw(epochs(partition)), draw(st.integers(0, U64)), draw(st.integers(0, U64)))


@st.composite
def cursors(draw: st.DrawFn) -> dict[int, UpdateId]:
    chosen = draw(st.sets(partitions, max_size=12))
    return {p: draw(ids(p)) for p in chosen}


def _model_text(model: dict[int, UpdateId]) -> str:
    # The format, written out: each id's own text, in partition order, joined by commas.
    return ",".join(f"{i.epoch}:{i.ms}-{i.seq}" for _, i in sorted(model.items()))


@given(cursors())
def test_text_is_the_ids_in_partition_order_and_parses_back(model: dict[int, UpdateId]) -> None:
    cursor = Cursor(model.values())
    assert cursor.text == _model_text(model)
    assert dict(cursor) == model
    assert Cursor.parse(cursor.id_text) == cursor
    if model:
        assert cursor.id_text == cursor.text
    else:
        # The id of a stream that has nothing yet: a resume from it wants every update kept.
        assert cursor.id_text == EARLIEST
        assert Cursor.parse(cursor.text) is None


@given(ids(0))
def test_a_one_partition_cursor_is_its_ids_text(update_id: UpdateId) -> None:
    # Last-Event-IDs issued before partitions stay valid, and single-topic streams look as before.
    assert Cursor([update_id]).text == update_id.text
    assert Cursor.parse(update_id.text) == Cursor([update_id])


def test_the_largest_cursor_we_can_issue_parses() -> None:
    prefixes = [format(p, "x") if p else "" for p in range(1024)]
    longest = Cursor([UpdateId(prefix + "ffffffff", U64, U64) for prefix in prefixes])
    assert len(longest.text) <= MAX_CURSOR_LEN
    assert Cursor.parse(longest.text) == longest


@pytest.mark.parametrize(
    "text",
    [
        "",
        ",",
        "ab12cd34:1-2,",  # an empty part
        ",ab12cd34:1-2",
        "ab12cd34:1-2,,1ab12cd34:1-2",
        "ab12cd34:1-2, 1ab12cd34:1-2",  # a space
        "ab12cd34:1-2;1ab12cd34:1-2",
        "ab12cd34:1-2,ab12cd34:1-3",  # two ids of partition 0
        "ab12cd34:1-2,0ab12cd34:1-3",  # the same, one spelt with a leading zero
        "0ab12cd34:1-2",  # a partition spelt with a leading zero
        "400ab12cd34:1-2",  # partition 1024: past the last
        "ffffffffffffffff:1-2",  # an id, but of no partition
        "AB12CD34:1-2",
        "ab12cd34:01-2",
        "ab12cd34:18446744073709551616-0",  # past u64
        "ab12cd34:1-2\n",
        "x" * (MAX_CURSOR_LEN + 1),
        ",".join(["ab12cd34:1-2"] * 1025),
    ],
)
def test_text_we_could_not_have_issued_is_refused(text: str) -> None:
    assert Cursor.parse(text) is None


@given(cursors(), st.sampled_from([",", ",,", " ", "\n", "\0", ":", "-", "x"]), st.data())
def test_a_cursor_with_something_spliced_in_is_refused_or_another_cursor(
    model: dict[int, UpdateId], junk: str, data: st.DataObject
) -> None:
    text = Cursor(model.values()).text
    at = data.draw(st.integers(0, len(text)))
    mangled = text[:at] + junk + text[at:]
    parsed = Cursor.parse(mangled)
    # Never anything but a cursor whose text is exactly what was sent: one spelling each.
    assert parsed is None or parsed.text == mangled


def test_parse_refuses_what_is_not_text() -> None:
    assert Cursor.parse(None) is None
    assert Cursor.parse(b"ab12cd34:1-2") is None
    assert Cursor.parse(12) is None


def test_two_ids_of_one_partition_make_no_cursor() -> None:
    with pytest.raises(ValueError, match="partition 3"):
        Cursor([UpdateId("3ab12cd34", 1, 1), UpdateId("3ffffffff", 2, 2)])


def _model_admits(model: dict[int, UpdateId], update_id: UpdateId) -> bool:
    mine = model.get(update_id.partition)
    if mine is None:
        return True
    if mine.epoch != update_id.epoch:
        return True  # another epoch of the partition: a history reset after the cursor
    return (update_id.ms, update_id.seq) > (mine.ms, mine.seq)


@st.composite
def near_ids(draw: st.DrawFn, model: dict[int, UpdateId]) -> UpdateId:
    """An id often in a partition the cursor has, often of its epoch, near its position."""
    if model and draw(st.booleans()):
        mine = model[draw(st.sampled_from(sorted(model)))]
        epoch = mine.epoch if draw(st.booleans()) else draw(epochs(mine.partition))
        ms = max(0, min(U64, mine.ms + draw(st.integers(-1, 1))))
        seq = max(0, min(U64, mine.seq + draw(st.integers(-1, 1))))
        return UpdateId(epoch, ms, seq)
    return draw(ids())


@given(st.data())
def test_admits_and_advanced_agree_with_the_model(data: st.DataObject) -> None:
    model = data.draw(cursors())
    cursor = Cursor(model.values())
    for _ in range(20):
        update_id = data.draw(near_ids(model))
        assert cursor.admits(update_id) == _model_admits(model, update_id)
        if data.draw(st.booleans()):
            model = {**model, update_id.partition: update_id}
            cursor = cursor.advanced(update_id)
            assert dict(cursor) == model and cursor.text == _model_text(model)


@given(st.lists(ids(), max_size=30))
def test_newest_keeps_each_partitions_newest_id(given_ids: list[UpdateId]) -> None:
    # Ids of one epoch only here: across epochs "newest" has no order to go by.
    model: dict[int, UpdateId] = {}
    by_partition_epoch = {}
    for update_id in given_ids:
        epoch = by_partition_epoch.setdefault(update_id.partition, update_id.epoch)
        same = UpdateId(epoch, update_id.ms, update_id.seq)
        kept = model.get(same.partition)
        if kept is None or (same.ms, same.seq) > (kept.ms, kept.seq):
            model[same.partition] = same
    same_epoch = [UpdateId(by_partition_epoch[i.partition], i.ms, i.seq) for i in given_ids]
    assert dict(Cursor.newest(same_epoch)) == model


def test_without_forgets_partitions() -> None:
    cursor = Cursor([UpdateId("ab12cd34", 1, 1), UpdateId("1ab12cd34", 2, 2)])
    assert cursor.without({0}) == Cursor([UpdateId("1ab12cd34", 2, 2)])
    assert cursor.without({0, 1}).text == ""
    assert not cursor.without({0, 1})
