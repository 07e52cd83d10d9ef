"""Update ids: the canonical form round-trips, anything else a client sends is rejected."""

from __future__ import annotations

import pytest

from pushsvc.ids import format_id, id_key, new_epoch, parse_id

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
    assert format_id(epoch, ms, seq) == text
    assert parse_id(text) == (epoch, ms, seq)


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
    assert parse_id(text) is None


def test_parse_id_rejects_non_strings() -> None:
    assert parse_id(None) is None  # type: ignore[arg-type]
    assert parse_id(b"ab12cd34:1-1") is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("epoch", "ms", "seq"),
    [("", 1, 1), ("AB", 1, 1), ("a:b", 1, 1), ("a b", 1, 1), ("a", -1, 0), ("a", 0, U64 + 1)],
)
def test_format_id_refuses_what_parse_id_would_reject(epoch: str, ms: int, seq: int) -> None:
    with pytest.raises(ValueError):
        format_id(epoch, ms, seq)


def test_id_key_orders_like_stream_ids_not_like_strings() -> None:
    # As strings "e:9-0" > "e:10-0" and "e:1-10" < "e:1-9"; as ids the opposite.
    ids = ["e:1-9", "e:1-10", "e:9-0", "e:10-0", "e:10-1"]
    assert sorted(ids, key=id_key) == ids
    assert sorted(reversed(ids), key=id_key) == ids
    assert sorted(ids) != ids


def test_id_key_raises_on_malformed_id() -> None:
    with pytest.raises(ValueError):
        id_key("not an id")


def test_new_epoch_is_a_short_hex_token_usable_in_ids() -> None:
    epochs = {new_epoch() for _ in range(50)}
    assert len(epochs) == 50
    for epoch in epochs:
        assert 1 <= len(epoch) <= 16
        assert parse_id(format_id(epoch, 1, 2)) == (epoch, 1, 2)
