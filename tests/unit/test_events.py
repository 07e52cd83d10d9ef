"""Producer input validation, timestamps, lateness and the echo (pushsvc.ingest)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.broker.redis.wire import decode_events, encode_events
from pushsvc.core.answers import error_of
from pushsvc.errors import (
    BadRequest,
    FutureEvent,
    InvalidEvent,
    LateEvent,
    LoneSurrogate,
    MalformedJson,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)
from pushsvc.http.api.error_replies import status_of
from pushsvc.ingest import (
    MAX_TS_US,
    MIN_EVENT_TS_US,
    MIN_TS_US,
    Event,
    InputLimits,
    check_lateness,
    event_json,
    parse_body,
    parse_rfc3339,
    seconds_to_us,
)
from pushsvc.ingest.event_shape import MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS
from pushsvc.ingest.input_limits import MAX_BATCH

NOW = 1_763_700_000_000_000
JSON = "application/json"
NDJSON = "application/x-ndjson"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(moment: datetime) -> int:
    """Reference conversion by datetime arithmetic."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def parse(body: bytes | str, content_type: str | None = JSON, **limits: int) -> list[Event]:
    if isinstance(body, str):
        body = body.encode()
    return parse_body(body, content_type, now_us=NOW, limits=InputLimits(**limits))


def rejected(body: bytes | str, content_type: str | None = JSON, **limits: int) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(body, content_type, **limits)
    return info.value


# ---------------------------------------------------------------- content types and sizes


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json; charset=utf-8; foo=bar",
    ],
)
def test_json_content_types(content_type: str) -> None:
    assert parse('{"value": 1}', content_type) == [Event(1.0, NOW)]


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson", "application/x-ndjson; charset=utf-8"]
)
def test_ndjson_content_types(content_type: str) -> None:
    assert parse('{"value": 1}\n', content_type) == [Event(1.0, NOW)]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json; charset=latin-1",
        "application/x-ndjson; charset=utf-16",
    ],
)
def test_other_content_types_are_415(content_type: str | None) -> None:
    error = rejected('{"value": 1}', content_type)
    assert isinstance(error, UnsupportedMediaType)
    assert status_of(error) == 415


def test_body_size_limit() -> None:
    body = b'{"value":1}'
    assert parse(body, max_body_bytes=len(body)) == [Event(1.0, NOW)]
    error = rejected(body, max_body_bytes=len(body) - 1)
    assert isinstance(error, PayloadTooLarge)
    assert status_of(error) == 413


@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_batch_length_limit(content_type: str) -> None:
    def batch(n: int) -> str:
        return (
            "[" + ",".join(['{"value":1}'] * n) + "]"
            if content_type == JSON
            else '{"value":1}\n' * n
        )

    assert len(parse(batch(MAX_BATCH), content_type)) == MAX_BATCH
    error = rejected(batch(MAX_BATCH + 1), content_type)
    assert isinstance(error, PayloadTooLarge)


@pytest.mark.parametrize("bad", [{"max_body_bytes": 0}, {"max_future_us": 0}])
def test_limits_are_validated(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        InputLimits(**bad)


# ---------------------------------------------------------------- bodies


def test_one_event_with_every_field() -> None:
    body = '{"value": 12.5, "ts": 1763700000.123, "tags": {"dish": "noodles"}}'
    assert parse(body) == [Event(12.5, 1_763_700_000_123_000, {"dish": "noodles"})]


def test_batch_in_order_and_missing_ts_is_now() -> None:
    body = '[{"value": 1}, {"value": -2.5, "ts": 1763699990}, {"value": 3}]'
    assert parse(body) == [Event(1.0, NOW), Event(-2.5, NOW - 10_000_000), Event(3.0, NOW)]


def test_ndjson_skips_blank_lines_and_accepts_crlf() -> None:
    body = '\n{"value": 1}\r\n\r\n  \n{"value": 2, "ts": 1763699995}\n'
    assert parse(body, NDJSON) == [Event(1.0, NOW), Event(2.0, NOW - 5_000_000)]


def test_values_are_floats() -> None:
    (event,) = parse('{"value": 7}')
    assert type(event.value) is float


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("0", 0.0),
        ("-0.0", -0.0),
        ("1e308", 1e308),
        ("5e-324", 5e-324),
        ("1e-400", 0.0),  # underflows to zero: still a finite number
        ("9223372036854775808", 9223372036854775808.0),  # beyond int64
        ("18446744073709551616", 18446744073709551616.0),  # beyond uint64
        ("-" + "9" * 300, -float("9" * 300)),
    ],
)
def test_numbers_at_the_edges_are_accepted(literal: str, value: float) -> None:
    (event,) = parse('{"value": ' + literal + "}")
    assert event.value == value
    assert math.copysign(1, event.value) == math.copysign(1, value)


@pytest.mark.parametrize(
    ("body", "content_type"), [("[]", JSON), ("", NDJSON), ("\n \r\n", NDJSON)]
)
def test_empty_batch_is_400(body: str, content_type: str) -> None:
    error = rejected(body, content_type)
    assert type(error) is BadRequest
    assert status_of(error) == 400


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"value": 1',
        b'{"value": 1,}',
        b"[1,]",
        b"{'value': 1}",
        b'\xef\xbb\xbf{"value": 1}',  # BOM
        b'{"value": 1, "tags": {"a": "\xff"}}',  # not UTF-8
        b'{"value": 1, "tags": {"a": "\\ud800"}}',  # lone surrogate
        b"[" * 100_000,  # deeper than any parser's recursion
        b'{"value": 1} {"value": 2}',
    ],
)
def test_malformed_json(body: bytes) -> None:
    error = rejected(body)
    assert isinstance(error, MalformedJson)
    assert status_of(error) == 400
    assert error_of(error).error.code == "malformed_json"
    assert error.index is None


def test_malformed_ndjson_line_names_line_and_index() -> None:
    body = b'{"value": 1}\n\n{"value": 2}\n{"value": \n{"value": 3}\n'
    error = rejected(body, NDJSON)
    assert isinstance(error, MalformedJson)
    assert error.index == 2
    assert "line 4" in error.message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("42", JSON), ('"x"', JSON), ("null", JSON), ("[1]", JSON), ("[[]]", JSON), ("[1]", NDJSON)],
)
def test_events_must_be_objects(body: str, content_type: str) -> None:
    error = rejected(body, content_type)
    assert isinstance(error, InvalidEvent)
    assert status_of(error) == 400


# ---------------------------------------------------------------- per-event validation

BAD_VALUES = [
    # (JSON value literal, a word the message must contain)
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("-Infinity", "-Infinity"),
    ("1e400", "large"),
    ("-1e400", "large"),
    ("9" * 400, "large"),
    ("9" * 5000, "large"),  # more digits than Python converts to int by default
    ('"12"', "string"),
    ("true", "boolean"),
    ("false", "boolean"),
    ("null", "null"),
    ("[1]", "array"),
    ('{"v": 1}', "object"),
]


@pytest.mark.parametrize(("literal", "word"), BAD_VALUES)
def test_bad_values_name_the_event(literal: str, word: str) -> None:
    batch = '[{"value": 1}, {"value": 2}, {"value": ' + literal + "}]"
    error = rejected(batch)
    assert isinstance(error, InvalidEvent)
    assert error.index == 2
    assert word in error.message
    assert msgspec.to_builtins(error_of(error)) == {
        "error": {"code": "invalid_event", "message": error.message, "index": 2}
    }


@pytest.mark.parametrize(("literal", "word"), BAD_VALUES)
def test_bad_values_in_ndjson_name_the_event(literal: str, word: str) -> None:
    body = '{"value": 1}\n\n{"value": ' + literal + "}\n"
    error = rejected(body, NDJSON)
    assert isinstance(error, InvalidEvent)
    assert error.index == 1
    assert word in error.message


def test_a_single_event_is_index_0() -> None:
    assert rejected('{"value": "x"}').index == 0


@pytest.mark.parametrize(
    "body",
    [
        '{"ts": 1}',
        "{}",
        '{"value": 1, "valu": 2}',
        '{"value": 1, "Value": 2}',
        '{"value": 1, "tags": {}, "extra": null}',
    ],
)
def test_missing_value_or_unknown_fields(body: str) -> None:
    assert isinstance(rejected(body), InvalidEvent)


def test_the_first_error_wins_and_nothing_is_returned() -> None:
    # Event 0 is invalid by type, event 2 by a literal only orjson refuses to parse.
    error = rejected('[{"value": "x"}, {"value": 1}, {"value": NaN}]')
    assert error.index == 0
    # Same in NDJSON, where a later line is not even JSON.
    error = rejected('{"value": 1}\n{"value": true}\n{"value": \n', NDJSON)
    assert isinstance(error, InvalidEvent)
    assert error.index == 1


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (r'"\ud800"', JSON),
        (r'{"k\udfff": 1}', JSON),
        (r'["ok", {"deep": ["a\udc00b"]}]', JSON),
        (r'"\ud800"', NDJSON),
    ],
)
def test_a_lone_surrogate_in_data_has_its_own_code(data: str, content_type: str) -> None:
    body = '{"value": 1}\n{"type": "t", "data": ' + data + "}\n"
    if content_type == JSON:
        body = "[" + body.replace("\n", ",", 1).strip() + "]"
    error = rejected(body, content_type)
    assert isinstance(error, LoneSurrogate) and error.index == 1
    assert msgspec.to_builtins(error_of(error))["error"]["code"] == "lone_surrogate"
    assert "surrogate" in error.message and "64 bits" not in error.message


def test_a_surrogate_pair_in_data_is_one_character() -> None:
    (event,) = parse_body(rb'{"data": "\ud83d\ude00"}', JSON, now_us=MIN_EVENT_TS_US)
    assert event.message is not None and json.loads(event.message.data) == "\U0001f600"


# ---------------------------------------------------------------- ts


@pytest.mark.parametrize(
    ("literal", "ts_us"),
    [
        ("1763700000.123", 1_763_700_000_123_000),
        ("1763700000", 1_763_700_000_000_000),
        ("1763700000.000001", 1_763_700_000_000_001),
        ("946684800", MIN_EVENT_TS_US),
        # 2**-7 s is exactly 7812.5 us: a tie, to even; 3 * 2**-7 s = 23437.5 us likewise.
        ("1763700000.0078125", 1_763_700_000_007_812),
        ("1763700000.0234375", 1_763_700_000_023_438),
        # The double nearest to this decimal is 1715838287025480.5088... us; `ts * 1e6` rounds
        # that product to ...480.5 first and would then give ...480.
        ("1715838287.0254805", 1_715_838_287_025_481),
        ("253402300799", MAX_TS_US - 999_999),
    ],
)
def test_numeric_ts(literal: str, ts_us: int) -> None:
    # The conversion over the whole range: no limit on how far ahead of NOW.
    (event,) = parse('{"value": 1, "ts": ' + literal + "}", max_future_us=MAX_TS_US)
    assert event.ts_us == ts_us


@given(st.floats(min_value=-6.2e10, max_value=2.5e11))
def test_seconds_to_us_rounds_the_exact_value_half_to_even(seconds: float) -> None:
    assert seconds_to_us(seconds) == round(Fraction(seconds) * 1_000_000)


@given(st.integers(min_value=0, max_value=2**32 * 1_000_000 - 1))
def test_microseconds_survive_float_seconds_until_2106(ts_us: int) -> None:
    # What updates echo (seconds as a double) posts back as the same microsecond.
    assert seconds_to_us(ts_us / 1_000_000) == ts_us
    assert seconds_to_us(float(f"{ts_us // 1_000_000}.{ts_us % 1_000_000:06d}")) == ts_us


RFC3339 = [
    ("2025-11-21T04:40:00Z", datetime(2025, 11, 21, 4, 40, tzinfo=UTC)),
    ("2025-11-21T04:40:00.123Z", datetime(2025, 11, 21, 4, 40, 0, 123000, tzinfo=UTC)),
    ("2025-11-21t04:40:00.123z", datetime(2025, 11, 21, 4, 40, 0, 123000, tzinfo=UTC)),
    ("2025-11-21 04:40:00.5Z", datetime(2025, 11, 21, 4, 40, 0, 500000, tzinfo=UTC)),
    ("2025-11-21T05:40:00+01:00", datetime(2025, 11, 21, 4, 40, tzinfo=UTC)),
    ("2025-11-20T23:10:00-05:30", datetime(2025, 11, 21, 4, 40, tzinfo=UTC)),
    ("2025-11-21T04:40:00-00:00", datetime(2025, 11, 21, 4, 40, tzinfo=UTC)),
    ("2025-11-21T04:40:00.000001Z", datetime(2025, 11, 21, 4, 40, 0, 1, tzinfo=UTC)),
    # More than six digits: rounded to the microsecond, half to even.
    ("2025-11-21T04:40:00.1234564Z", datetime(2025, 11, 21, 4, 40, 0, 123456, tzinfo=UTC)),
    ("2025-11-21T04:40:00.1234565Z", datetime(2025, 11, 21, 4, 40, 0, 123456, tzinfo=UTC)),
    ("2025-11-21T04:40:00.1234575Z", datetime(2025, 11, 21, 4, 40, 0, 123458, tzinfo=UTC)),
    ("2025-11-21T04:40:00.12345650001Z", datetime(2025, 11, 21, 4, 40, 0, 123457, tzinfo=UTC)),
    ("2025-11-21T04:40:00.9999995Z", datetime(2025, 11, 21, 4, 40, 1, tzinfo=UTC)),
    (
        "2025-11-21T04:40:00." + "1" * 5000 + "Z",
        datetime(2025, 11, 21, 4, 40, 0, 111111, tzinfo=UTC),
    ),
    ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
    ("2000-01-01T01:00:00+01:00", datetime(2000, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
]


@pytest.mark.parametrize(("text", "moment"), RFC3339)
def test_rfc3339_ts(text: str, moment: datetime) -> None:
    (event,) = parse(json.dumps({"value": 1, "ts": text}), max_future_us=MAX_TS_US)
    assert event.ts_us == _us(moment)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("1969-12-31T23:59:59.5Z", datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_reads_times_from_year_1(text: str, moment: datetime) -> None:
    """As a read's `since` takes them; an event refuses them (below)."""
    assert parse_rfc3339(text) == _us(moment)


@pytest.mark.parametrize(
    "literal",
    [
        "0",
        "0.0",
        "-1.5",
        "946684799.999999",  # a microsecond before 2000
        "86400",  # seconds since something else than the epoch
        "-62135596800",  # year 1
        '"0001-01-01T00:00:00Z"',  # .NET's DateTime.MinValue, Go's time.Time{}
        '"1999-12-31T23:59:59.999999Z"',
        '"2000-01-01T00:30:00+01:00"',
    ],
)
def test_an_event_time_before_2000_is_refused_as_a_time_left_unset(literal: str) -> None:
    error = rejected('[{"value": 1}, {"value": 1, "ts": ' + literal + "}]")
    assert isinstance(error, InvalidEvent)
    assert (error.index, status_of(error)) == (1, 400)
    assert error.message == (
        "ts must be 2000-01-01T00:00:00Z or later (epoch seconds; 0 or year 1 is usually a "
        "time left unset)"
    )


def test_milliseconds_are_refused_as_such() -> None:
    error = rejected('{"value": 1, "ts": 1763700000123}')
    assert isinstance(error, InvalidEvent)
    assert error.message == "ts must be before year 10000 (epoch seconds, not milliseconds)"


BAD_TS = [
    '"2025-11-21T04:40:00"',  # no time zone
    '"2025-11-21"',
    '"2025-11-21T04:40Z"',
    '"2025-11-21T04:40:00.Z"',
    '"20251121T044000Z"',
    '"2025-11-21T04:40:00+0100"',
    '"2025-11-21T04:40:00+01"',
    '"2025-02-29T00:00:00Z"',
    '"2025-13-01T00:00:00Z"',
    '"2025-11-21T24:00:00Z"',
    '"2025-11-21T04:60:00Z"',
    '"2016-12-31T23:59:60Z"',  # leap second
    '"2025-11-21T04:40:00+24:00"',
    '"2025-11-21T04:40:00+01:60"',
    '"0000-01-01T00:00:00Z"',
    '"0001-01-01T00:00:00+00:01"',  # before year 1 in UTC
    '"9999-12-31T23:59:59.9999995Z"',  # rounds into year 10000
    '"\\uff12025-11-21T04:40:00Z"',  # FULLWIDTH DIGIT TWO
    '"2025-11-21T04:40:00Z\\n"',
    '" 2025-11-21T04:40:00Z"',
    '"yesterday"',
    '""',
    "1763700000123",  # milliseconds
    "-1e20",
    "1e300",
    "NaN",
    "Infinity",
    "true",
    "null",
    "[1]",
    '{"s": 1}',
]


@pytest.mark.parametrize("literal", BAD_TS)
def test_bad_ts(literal: str) -> None:
    error = rejected('[{"value": 1}, {"value": 1, "ts": ' + literal + "}]")
    assert isinstance(error, InvalidEvent)
    assert error.index == 1
    assert "ts" in error.message


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
    ),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
def test_rfc3339_agrees_with_datetime(moment: datetime, offset_min: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_min)))
    assert parse_rfc3339(local.isoformat(timespec="microseconds")) == _us(moment)


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ('{"a": "b"}', {"a": "b"}),
        ('{"a": ""}', {"a": ""}),
        ("{}", None),
        ('{"k": "x\\n\\nevent: y"}', {"k": "x\n\nevent: y"}),
        ('{"a": "1", "a": "2"}', {"a": "2"}),
    ],
)
def test_tags(tags: str, expected: dict[str, str] | None) -> None:
    (event,) = parse('{"value": 1, "tags": ' + tags + "}")
    assert event.tags == expected


def test_tag_limits_are_inclusive() -> None:
    most = {f"t{i}": "v" * MAX_TAG_VALUE_LEN for i in range(MAX_TAGS - 1)}
    most["k" * MAX_TAG_KEY_LEN] = "\u00e9" * MAX_TAG_VALUE_LEN
    assert parse(json.dumps({"value": 1, "tags": most}))[0].tags == most
    for tags in (
        {f"t{i}": "v" for i in range(MAX_TAGS + 1)},
        {"k" * (MAX_TAG_KEY_LEN + 1): "1"},
        {"a": "\u00e9" * (MAX_TAG_VALUE_LEN + 1)},
        {"": "1"},
    ):
        error = rejected(json.dumps({"value": 1, "tags": tags}))
        assert isinstance(error, InvalidEvent), tags
        assert error.index == 0


@pytest.mark.parametrize(
    "tags",
    [
        "null",
        "[]",
        '"a"',
        "1",
        '{"a": 1}',
        '{"a": null}',
        '{"a": true}',
        '{"a": {"b": "c"}}',
        '{"a": ["b"]}',
    ],
)
def test_bad_tags(tags: str) -> None:
    error = rejected('{"value": 1, "tags": ' + tags + "}")
    assert isinstance(error, InvalidEvent)
    assert "tag" in error.message


# ---------------------------------------------------------------- lateness

LATENESS = [
    # (clock_us, event times, lateness_us, index of the late event or None)
    (None, [], 10, None),
    (None, [100], 10, None),
    (None, [100, 90], 10, None),  # exactly T - lateness is on time
    (None, [100, 89], 10, 1),
    (1000, [989], 10, 0),
    (1000, [990, 995, 2000], 10, None),
    (1000, [2000, 1990, 1989], 10, 2),  # the batch's own first event moved T
    (1000, [995, 991, 1005, 994], 10, 3),
    (1000, [1005, 999, 996], 10, None),
    (1000, [500], 0, 0),
    (1000, [1000, 1000], 0, None),
]


@pytest.mark.parametrize(("clock", "times", "lateness", "late"), LATENESS)
def test_check_lateness(
    clock: int | None, times: list[int], lateness: int, late: int | None
) -> None:
    events = [Event(1.0, ts) for ts in times]
    if late is None:
        check_lateness(clock, events, lateness)
        return
    with pytest.raises(LateEvent) as info:
        check_lateness(clock, events, lateness)
    assert info.value.index == late
    assert status_of(info.value) == 400


# ---------------------------------------------------------------- how far ahead


FIVE_MIN_US = 300_000_000


@pytest.mark.parametrize(
    "ts",
    [
        str((NOW + FIVE_MIN_US) / 1e6),
        '"' + (EPOCH + timedelta(microseconds=NOW + FIVE_MIN_US)).isoformat() + '"',
        '"'
        + (EPOCH + timedelta(microseconds=NOW + FIVE_MIN_US))
        .astimezone(timezone(timedelta(hours=-9, minutes=-30)))
        .isoformat()
        + '"',
    ],
)
def test_an_event_as_far_ahead_as_max_future_is_accepted(ts: str) -> None:
    body = '[{"value": 1}, {"value": 2, "ts": ' + ts + "}]"
    assert parse(body, max_future_us=FIVE_MIN_US)[1].ts_us == NOW + FIVE_MIN_US


@pytest.mark.parametrize(
    ("ts", "ahead"),
    [
        (str((NOW + FIVE_MIN_US + 1) / 1e6), "300"),
        ("99999999999", "9.82363e+10"),
        ('"9999-12-31T23:59:59Z"', "2.51639e+11"),
        (
            '"'
            + (EPOCH + timedelta(microseconds=NOW + 2 * FIVE_MIN_US))
            .astimezone(timezone(timedelta(hours=5, minutes=30)))
            .isoformat()
            + '"',
            "600",
        ),
    ],
)
@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_an_event_further_ahead_than_max_future_refuses_its_batch_naming_the_limit(
    ts: str, ahead: str, content_type: str
) -> None:
    events = ['{"value": 1}', '{"value": 2, "ts": ' + ts + "}", '{"value": 3}']
    body = "[" + ", ".join(events) + "]" if content_type == JSON else "\n".join(events)
    error = rejected(body, content_type, max_future_us=FIVE_MIN_US)
    assert isinstance(error, FutureEvent)
    assert (error.code, error.index, status_of(error)) == ("future_event", 1, 400)
    assert f"ts is {ahead}" in error.message
    assert "at most 5m is allowed (--max-future)" in error.message


def test_max_future_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_future_us"):
        InputLimits(max_future_us=0)


# ---------------------------------------------------------------- broker encoding and echo

finite = st.floats(allow_nan=False, allow_infinity=False)
tag_dicts = st.none() | st.dictionaries(
    st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4
)
events = st.builds(Event, finite, st.integers(min_value=MIN_TS_US, max_value=MAX_TS_US), tag_dicts)


@given(st.lists(events, max_size=20))
def test_the_event_logs_encoding_round_trips_every_event_exactly(batch: list[Event]) -> None:
    decoded = decode_events(encode_events(batch))
    # float.hex tells -0.0 from 0.0, which == does not.
    assert [(e.value.hex(), e.ts_us, e.tags) for e in decoded] == [
        (e.value.hex(), e.ts_us, e.tags) for e in batch
    ]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            Event(12.5, 1_763_700_000_123_000, {"dish": "noodles"}),
            {"value": 12.5, "ts": 1763700000.123, "tags": {"dish": "noodles"}},
        ),
        (Event(-1.0, 0), {"value": -1.0, "ts": 0.0, "tags": {}}),
        (Event(0.25, -1_500_000), {"value": 0.25, "ts": -1.5, "tags": {}}),
    ],
)
def test_event_json(event: Event, expected: dict[str, object]) -> None:
    assert event_json(event) == expected


@given(
    st.builds(
        Event,
        finite,
        st.integers(min_value=MIN_EVENT_TS_US, max_value=2**32 * 1_000_000 - 1),
        st.none()
        | st.dictionaries(
            st.text(min_size=1, max_size=8), st.text(max_size=8), min_size=1, max_size=4
        ),
    )
)
def test_echoed_event_posts_back_as_the_same_event(event: Event) -> None:
    (again,) = parse(orjson.dumps(event_json(event)), max_future_us=MAX_TS_US)
    assert again == event
