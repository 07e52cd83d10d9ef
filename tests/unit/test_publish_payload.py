"""The publish payload (`pushsvc.broker.publish_payload`): built and encoded without Redis."""

from __future__ import annotations

import orjson
import pytest

from pushsvc.broker.base import Applied
from pushsvc.broker.publish_payload import (
    SERIES_TTL_MARGIN_MS,
    PublishPayload,
    ScriptNames,
    build_payload,
    encode_payload,
    named_keys,
    payload_document,
)
from pushsvc.broker.redis.wire import unpack
from pushsvc.core.updates import (
    Kind,
    SeriesWrite,
    UpdateDraft,
    alert_draft,
    deletion_draft,
    point_draft,
)

S = 1_000_000
CLOCK = 1_763_700_000 * S + 123  # 16 digits: more than a Lua number prints
NAMES = ScriptNames(
    epoch_candidate="0badc0de",
    history_len=100,
    history_bytes=1 << 20,
    alert_retention_ms=3_600_000,
    channel_prefix="p:{0}:u:",
    partition_channel="",
    publish_command="PUBLISH",
    groups_prefix="p:{0}:groups:",
    series_keys_prefix="p:{0}:serieskeys:",
    checkpoint_prefix="p:{0}:checkpoint:",
)
APPLIED = Applied((0, 1), "2-0", 1, "1-0")
"""Where a batch comes from: what it says does not change how its drafts are encoded."""


def encoded(payload: PublishPayload) -> dict[str, object]:
    document, *bodies = encode_payload(
        payload,
        NAMES,
        series_key=lambda resolution, topic, group: f"series:{resolution}:{topic}|{group}",
        series_id=lambda t_us: f"{t_us // 1000}-0",
    )
    decoded: dict[str, object] = orjson.loads(document)
    assert bodies == [d.body for d in payload.drafts]  # beside the document, in draft order
    return decoded


def test_the_callers_lease_and_position_become_named_fields() -> None:
    payload = build_payload([], applied=Applied((0, 2), "9-0", 4, "5-0"), fence="tok")
    got = (
        payload.lease_token,
        payload.applied_id,
        payload.applied_entries,
        payload.applied_after,
    )
    assert got == ("tok", "9-0", 4, "5-0")
    document = encoded(payload)
    assert (
        document["lease_token"],
        document["applied_id"],
        document["applied_entries"],
        document["applied_after"],
    ) == got


def test_the_script_gets_the_names_and_settings_field_by_field() -> None:
    document = encoded(build_payload([], applied=APPLIED, fence="tok"))
    assert {k: v for k, v in document.items() if k in ScriptNames._fields} == NAMES._asdict()
    assert document["drafts"] == []


def test_an_update_says_its_kind_clock_body_and_groups() -> None:
    body = b'{"topic":"a","ts":1.5,"windows":{"1m":{"mean":0.30000000000000004}},"s":"\xc3\xa9\\n"}'
    draft = UpdateDraft("a", CLOCK, body, (("g1", b'{"key":{"k":"v"}}'),), ("g0",))
    (entry,) = encoded(build_payload([draft], applied=APPLIED, fence="tok"))["drafts"]  # type: ignore[misc]
    assert entry == {
        "topic": "a",
        "clock": str(CLOCK),  # a string: exact in Lua
        "kind": "u",
        "groups": [["g1", '{"key":{"k":"v"}}']],
        "forgotten": ["g0"],
    }


def test_a_point_carries_its_tier_ids_ttl_and_packed_bytes_as_hex() -> None:
    write = SeriesWrite("1s", "g", 10 * S, b"\x00\xff\x10", 4 * S)
    draft = point_draft("a", 12 * S, write, {"count": 1})
    (entry,) = encoded(build_payload([draft], applied=APPLIED, fence="tok"))["drafts"]  # type: ignore[misc]
    assert entry["kind"] == "p"
    assert entry["point"] == {
        "key": "series:1s:a|g",
        "id": "10000-0",
        "min_id": "4000-0",
        "ttl_ms": (12 - 4) * 1000 + SERIES_TTL_MARGIN_MS,
        "packed": "00ff10",
        "corrected": "series:1s:a|g|corrected",
        "score": "10000",
        "min_score": "4000",
    }
    corrected = SeriesWrite("1s", "g", 10 * S, b"\x00", 4 * S, revision=2)
    draft = point_draft("a", 12 * S, corrected, {"count": 1})
    (entry,) = encoded(build_payload([draft], applied=APPLIED, fence="tok"))["drafts"]  # type: ignore[misc]
    assert entry["point"]["revision"] == 2
    assert orjson.loads(draft.body)["correction"] is True


@pytest.mark.parametrize(("active", "json"), [(True, '{"alert":"k"}'), (False, "")])
def test_an_alert_change_names_its_instance(active: bool, json: str) -> None:
    draft = alert_draft("_alerts", CLOCK, b'{"alert":"k"}', "rule/k", active)
    (entry,) = encoded(build_payload([draft], applied=APPLIED, fence="tok"))["drafts"]  # type: ignore[misc]
    assert entry["kind"] == "a"
    assert entry["instance"] == {"key": "rule/k", "json": json}


def test_a_deletion_says_it_is_one_and_carries_nothing_else() -> None:
    (entry,) = encoded(build_payload([deletion_draft("a", CLOCK)], applied=APPLIED, fence="tok"))[
        "drafts"
    ]  # type: ignore[misc]
    assert entry["kind"] == "d"
    assert set(entry) == {"topic", "clock", "kind"}


def test_the_keys_named_from_the_payload_are_each_point_groups_and_deletion_ones_once() -> None:
    """What the caller declares beside the fixed keys (a Redis Cluster judges them all before
    the script runs): a point's stream and corrections and its topic's set of series keys; a
    topic's groups when a draft keeps or forgets some; a deleted topic's groups, set of
    series keys and checkpoint. Each once, in the order first named; a plain update none."""
    write = SeriesWrite("1s", "", 10 * S, b"\x00", 4 * S)
    drafts = [
        UpdateDraft("a", CLOCK, b"{}"),
        point_draft("a", CLOCK, write, {"count": 1}),
        point_draft("a", CLOCK, write._replace(revision=1), {"count": 2}),
        UpdateDraft("b", CLOCK, b"{}", forgotten=("g0",)),
        deletion_draft("c", CLOCK),
    ]
    payload = build_payload(drafts, applied=APPLIED, fence="tok")
    document = payload_document(
        payload,
        NAMES,
        series_key=lambda resolution, topic, group: f"series:{resolution}:{topic}|{group}",
        series_id=lambda t_us: f"{t_us // 1000}-0",
    )
    assert named_keys(document) == [
        "series:1s:a|",
        "series:1s:a||corrected",
        "p:{0}:serieskeys:a",
        "p:{0}:groups:b",
        "p:{0}:groups:c",
        "p:{0}:serieskeys:c",
        "p:{0}:checkpoint:c",
    ]


def test_every_kind_has_its_own_letter_and_event() -> None:
    assert len({kind.value for kind in Kind}) == len(Kind)
    assert [kind.event for kind in Kind] == ["stats", "point", "alert", "snapshot"]


@pytest.mark.parametrize(
    ("code", "body", "kind"),
    [
        (b"p", b'{"topic":"a"}', Kind.POINT),  # the field decides, never the body
        (b"u", b'{"resolution":"1s"}', Kind.UPDATE),
        (None, b'{"resolution":"1s"}', Kind.POINT),  # written before `k` existed
        (None, b'{"gap":true}', Kind.DELETION),
        (None, b'{"alert":"k"}', Kind.ALERT),
        (None, b'{"topic":"a"}', Kind.UPDATE),
    ],
)
def test_a_history_entrys_kind_is_its_k_field(code: bytes | None, body: bytes, kind: Kind) -> None:
    assert Kind.stored(code, body) is kind


@pytest.mark.parametrize(
    ("message", "event"),
    [
        (b'ab:1-0 5 {"topic":"a"}', "stats"),  # an update's: as `latest` holds it
        (b'p ab:1-0 5 {"topic":"a"}', "point"),
        (b'a ab:1-0 5 {"alert":"k"}', "alert"),
        (b'd ab:1-0 5 {"gap":true}', "snapshot"),
    ],
)
def test_a_message_says_its_kind_first_unless_it_is_an_update(message: bytes, event: str) -> None:
    update = unpack("a", message)
    assert (update.event, update.id.text, update.clock_us) == (event, "ab:1-0", 5)


def test_a_message_with_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not a kind"):
        unpack("a", b"u ab:1-0 5 {}")
