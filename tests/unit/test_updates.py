"""The update format: ids (the canonical form round-trips, anything else a client sends is
rejected, ids compare as values), drafts numbered into updates, runs, snapshots."""

from __future__ import annotations

import itertools

import orjson
import pytest

from pushsvc.core.updates import (
    Update,
    UpdateId,
    draft,
    new_epoch,
    snapshot_message,
)

U64 = 2**64 - 1


@pytest.mark.parametrize(
    ("epoch", "ms", "seq", "text"),
    [
        ("0", 0, 0, "0:0-0"),
        ("ab12cd34", 1763700000123, 7, "ab12cd34:1763700000123-7"),
        ("ffffffffffffffff", U64, U64, f"ffffffffffffffff:{U64}-{U64}"),
    ],
)
def test_format_and_parse_round_trip(epoch: str, ms: int, seq: int, text: str) -> None:
    assert str(UpdateId(epoch, ms, seq)) == text
    assert UpdateId.parse(text) == UpdateId(epoch, ms, seq)
    assert UpdateId.issued(text) == UpdateId(epoch, ms, seq)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ab12cd34",
        "ab12cd34:",
        "ab12cd34:1",
        "ab12cd34:1-",
        "ab12cd34:-1",
        ":1-1",
        "AB12CD34:1-1",  # our epochs are lowercase; one spelling per id
        "xyz:1-1",
        "ab12cd34:01-1",  # leading zero
        "ab12cd34:1-01",
        "ab12cd34:+1-1",
        "ab12cd34:1-1 ",
        " ab12cd34:1-1",
        "ab12cd34:1-1\n",
        "ab12cd34:1-1\r",
        "ab12cd34:1-1\x00",
        "ab12cd34:1-1\ndata: injected",
        "ab12cd34:1-1-1",
        "ab12cd34:1.5-1",
        "ab12cd34:\u0661-1",  # a non-ASCII digit
        "12345678901234567:1-1",  # epoch too long
        f"ab12cd34:{U64 + 1}-0",
        f"ab12cd34:0-{U64 + 1}",
        "ab12cd34:" + "1" * 1000 + "-1",
    ],
)
def test_malformed_ids_parse_to_none(text: str) -> None:
    assert UpdateId.parse(text) is None
    # The broker's fast path for ids its own script wrote refuses the same texts.
    with pytest.raises(ValueError):
        UpdateId.issued(text)


def test_parse_rejects_non_strings() -> None:
    assert UpdateId.parse(None) is None
    assert UpdateId.parse(b"ab12cd34:1-1") is None


@pytest.mark.parametrize(
    ("epoch", "ms", "seq"),
    [("", 1, 1), ("AB", 1, 1), ("a:b", 1, 1), ("a b", 1, 1), ("a", -1, 0), ("a", 0, U64 + 1)],
)
def test_constructing_refuses_what_parse_would_reject(epoch: str, ms: int, seq: int) -> None:
    with pytest.raises(ValueError):
        UpdateId(epoch, ms, seq)


def test_ids_order_like_stream_ids_not_like_strings() -> None:
    # As strings "e:9-0" > "e:10-0" and "e:1-10" < "e:1-9"; as ids the opposite.
    texts = ["e:1-9", "e:1-10", "e:9-0", "e:10-0", "e:10-1"]
    ids = [UpdateId.parse(t) or pytest.fail(t) for t in texts]
    for earlier, later in itertools.pairwise(ids):
        assert later.is_after(earlier) and not earlier.is_after(later)
    assert not ids[0].is_after(ids[0])
    assert sorted(texts) != texts


def test_an_id_of_another_epoch_counts_as_newer_both_ways() -> None:
    # A history reset (Redis restarted empty) starts a new epoch after the old one.
    old, new = UpdateId("aaaa", 9, 9), UpdateId("bbbb", 1, 1)
    assert new.is_after(old) and old.is_after(new)


def test_stream_ids_from_redis_become_ids_of_the_epoch() -> None:
    assert UpdateId.of_stream_id("ab", b"1763700000123-7") == UpdateId("ab", 1763700000123, 7)
    assert UpdateId.of_stream_id("ab", "5-0").position == (5, 0)


def test_new_epoch_is_a_short_hex_token_usable_in_ids() -> None:
    epochs = {new_epoch() for _ in range(50)}
    assert len(epochs) == 50
    for epoch in epochs:
        assert 1 <= len(epoch) <= 16
        assert UpdateId.parse(str(UpdateId(epoch, 1, 2))) == UpdateId(epoch, 1, 2)


@pytest.mark.parametrize(
    ("epoch", "partition"),
    [
        ("0", 0),  # short epochs (tests, old data) are partition 0's
        ("ab12cd34", 0),  # today's 8-hex epochs are partition 0's
        ("1ab12cd34", 1),
        ("fab12cd34", 15),
        ("3ffab12cd34", 1023),
        ("ffffffffffffffff", 0xFFFFFFFF),  # an id, but of no partition we have (cursor refuses)
    ],
)
def test_an_ids_partition_is_its_epochs_hex_digits_before_the_last_eight(
    epoch: str, partition: int
) -> None:
    assert UpdateId(epoch, 1, 2).partition == partition


@pytest.mark.parametrize("partition", [0, 1, 9, 10, 255, 256, 1023])
def test_a_partitions_epoch_names_it_in_hex_without_leading_zeros(partition: int) -> None:
    epoch = new_epoch(partition)
    prefix = "" if partition == 0 else format(partition, "x")
    assert epoch.startswith(prefix) and len(epoch) == len(prefix) + 8
    assert UpdateId(epoch, 0, 0).partition == partition
    assert UpdateId.parse(f"{epoch}:1-2") == UpdateId(epoch, 1, 2)


@pytest.mark.parametrize("partition", [-1, 1024])
def test_there_is_no_epoch_of_a_partition_out_of_range(partition: int) -> None:
    with pytest.raises(ValueError, match="partition"):
        new_epoch(partition)


def test_a_numbered_draft_is_the_body_with_the_id_as_first_member() -> None:
    d = draft("orders", 1_500_000, "event", {"value": 2.0, "ts": 1.5, "tags": {}}, {"1s": {}})
    update = Update.of(d, UpdateId("ab", 0, 3))
    fields = orjson.loads(update.data)
    assert list(fields) == ["id", "topic", "ts", "reason", "event", "windows"]
    assert fields == {
        "id": "ab:0-3",
        "topic": "orders",
        "ts": 1.5,
        "reason": "event",
        "event": {"value": 2.0, "ts": 1.5, "tags": {}},
        "windows": {"1s": {}},
    }
    assert update.fields == fields and update.windows == {"1s": {}}
    assert update.sse == b"id: ab:0-3\nevent: stats\ndata: " + update.data + b"\n\n"
    assert update.unnumbered == b"event: stats\ndata: " + update.data + b"\n\n"


def _update(topic: str, seq: int, windows: dict[str, object] | None = None) -> Update:
    d = draft(topic, seq * 1_000_000, "event", None, windows or {"1s": {"count": seq}})
    return Update.of(d, UpdateId("ab", 0, seq))


def test_a_snapshot_carries_each_topics_windows_and_the_id_it_is_given() -> None:
    latest = {"b": _update("b", 5), "a": _update("a", 7)}
    message = snapshot_message(latest, gap=True, id="ab:0-7")
    head, _, data = message.partition(b"data: ")
    assert head == b"id: ab:0-7\nevent: snapshot\n"
    assert orjson.loads(data) == {
        "gap": True,
        "topics": {
            "a": {"id": "ab:0-7", "ts": 7.0, "windows": {"1s": {"count": 7}}},
            "b": {"id": "ab:0-5", "ts": 5.0, "windows": {"1s": {"count": 5}}},
        },
    }


def test_an_empty_snapshot_has_no_id() -> None:
    expected = b'event: snapshot\ndata: {"gap":false,"topics":{}}\n\n'
    assert snapshot_message({}, gap=False, id=None) == expected
    assert snapshot_message({}, gap=False, id="") == expected
