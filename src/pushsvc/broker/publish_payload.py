"""The publish step's one input: a partition's batch of drafts as one payload, its every field
named, built once for every backend.

`build_payload` turns what an aggregator hands `Broker.publish_updates` (its batch, with the
log position it covers and its lease's token: deletions and alert changes travel in it too)
into a `PublishPayload`. The memory broker's `Store.publish` applies that payload as it is;
the Redis broker sends it to `publish_updates.lua` as one JSON document (`encode_payload`,
read there with `cjson` by the same names), with the names of the keys and channels it
writes under (`ScriptNames`). Both implement one operation (read `publish_updates.lua`'s
header for it), so they differ only where memory and Redis do (how ids are made), which
`tests/integration/test_publish_contract.py` holds them to.

JSON, not msgpack: the project depends on orjson and not on msgpack, and Redis has `cjson`
in every version we serve. A clock is a decimal string there (Lua numbers are doubles, printed
with 14 digits, and a clock in µs has 16), and a point's packed form is hex (JSON strings
carry text; the packed point is bytes). The drafts' bodies travel beside the document, one
argument each in draft order (ARGV[1 + place]): escaped into JSON and decoded by cjson, they
cost Redis a fifth more CPU per update (docs/scaling.md), and a body is the one
field of a draft that the script never reads, only stores and sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, NotRequired, TypedDict

import orjson

from pushsvc.broker.base import Applied
from pushsvc.core.updates import Kind, UpdateDraft

SERIES_TTL_MARGIN_MS = 60_000
"""A tier's stream outlives its retention by this much after its newest point."""


@dataclass(frozen=True, slots=True)
class PublishPayload:
    """One partition's batch, as every backend applies it."""

    drafts: Sequence[UpdateDraft]
    """In publish order; each says its kind (`UpdateDraft.kind`)."""
    lease_token: str
    """Refused (Fenced) unless the shard's lease is this token's."""
    applied_id: str
    """The last log entry the drafts cover: the partition's "applied up to" after them."""
    applied_entries: int
    """How many log entries that was."""
    applied_after: str
    """The entry the caller last saw published: refused (PublishedAlready) when the log is
    recorded as applied past it."""


def build_payload(drafts: Sequence[UpdateDraft], *, applied: Applied, fence: str) -> PublishPayload:
    """The payload of `Broker.publish_updates(drafts, applied=..., fence=...)`: an
    aggregator's batch, which goes to its shard's partition whole."""
    return PublishPayload(drafts, fence, applied.entry_id, applied.entries, applied.after)


def point_ttl_ms(draft: UpdateDraft) -> int:
    """How long a point's tier stream is kept after this point: its retention on the topic
    clock, and a margin, also once its topic is gone."""
    write = draft.series
    assert write is not None, "a point's draft"
    return (draft.clock_us - write.keep_from_us) // 1000 + SERIES_TTL_MARGIN_MS


class ScriptNames(NamedTuple):
    """What `publish_updates.lua` needs besides the payload: a partition's names and the
    broker's settings (`RedisBroker`, per partition)."""

    epoch_candidate: str
    """The epoch a history that is gone starts again under."""
    history_len: int
    history_bytes: int
    """The most bytes of bodies the history holds (besides `history_len` updates)."""
    alert_retention_ms: int
    channel_prefix: str
    """Of a topic's updates channel."""
    partition_channel: str
    """'' on one Redis; on a Cluster the channel that also carries every run, after its
    topic and a newline (no pattern subscriptions there)."""
    publish_command: str
    """PUBLISH, or SPUBLISH on a Redis Cluster."""
    groups_prefix: str
    """Of a topic's hash of live groups."""
    series_keys_prefix: str
    """Of a topic's set of series keys (what its deletion drops)."""
    checkpoint_prefix: str
    """Of a topic's checkpoint."""


class PointJSON(TypedDict):
    key: str
    """The tier's stream."""
    id: str
    """The point's stream id there (its bucket's start)."""
    min_id: str
    """The oldest bucket start the tier keeps."""
    ttl_ms: int
    packed: str
    """The point's stored form (`pushsvc.rules.point`), hex."""
    revision: NotRequired[int]
    """A correction's (above 0; absent for a bucket's first point)."""
    corrected: str
    """The tier's sorted set of points kept beside the stream (`PartitionKeys.corrected`)."""
    score: str
    """Its stream id's milliseconds, and the oldest kept's (`min_score`)."""
    min_score: str


class InstanceJSON(TypedDict):
    key: str
    json: str
    """While pending or firing; '' once resolved (it leaves the active instances)."""


class DraftJSON(TypedDict):
    topic: str
    clock: str
    kind: str
    """`Kind`'s letter. The body is no field: see the module's doc."""
    groups: NotRequired[list[tuple[str, str]]]
    """Group id and JSON of each group the draft carries (its topic's live groups)."""
    forgotten: NotRequired[list[str]]
    """Ids of the groups that left the live set."""
    point: NotRequired[PointJSON]
    instance: NotRequired[InstanceJSON]


class PayloadJSON(TypedDict):
    """`publish_updates.lua`'s ARGV[1], field by field: `ScriptNames`' fields, the payload's,
    and `drafts`."""

    epoch_candidate: str
    history_len: int
    history_bytes: int
    alert_retention_ms: int
    channel_prefix: str
    partition_channel: str
    publish_command: str
    groups_prefix: str
    series_keys_prefix: str
    checkpoint_prefix: str
    lease_token: str
    applied_id: str
    applied_entries: int
    applied_after: str
    drafts: list[DraftJSON]


SeriesKey = Callable[[str, str, str], str]
"""A tier's stream: (resolution, topic, group id) -> its key (`PartitionKeys.series`)."""
SeriesId = Callable[[int], str]
"""A bucket start (µs) -> its stream id (`pushsvc.broker.redis.keys.series_id`)."""


def encode_payload(
    payload: PublishPayload,
    names: ScriptNames,
    *,
    series_key: SeriesKey,
    series_id: SeriesId,
    corrected_key: SeriesKey | None = None,
) -> list[bytes]:
    """`publish_updates.lua`'s ARGV: the document (`PayloadJSON`, `payload_document`), then
    each draft's body."""
    document = payload_document(
        payload, names, series_key=series_key, series_id=series_id, corrected_key=corrected_key
    )
    return encoded_args(document, payload)


def encoded_args(document: PayloadJSON, payload: PublishPayload) -> list[bytes]:
    """`publish_updates.lua`'s ARGV from its document: it, then each draft's body."""
    return [orjson.dumps(document), *(d.body for d in payload.drafts)]


def payload_document(
    payload: PublishPayload,
    names: ScriptNames,
    *,
    series_key: SeriesKey,
    series_id: SeriesId,
    corrected_key: SeriesKey | None = None,
) -> PayloadJSON:
    """`publish_updates.lua`'s ARGV[1] (`PayloadJSON`). `corrected_key`: a tier's sorted set
    of corrections (`PartitionKeys.corrected`; without it, the stream's key and
    `|corrected`)."""
    drafts: list[DraftJSON] = []
    for d in payload.drafts:
        # Groups are JSON text that orjson wrote (UTF-8), carried as strings.
        entry: DraftJSON = {
            "topic": d.topic,
            "clock": str(d.clock_us),
            "kind": d.kind.value,
        }
        if d.groups:
            entry["groups"] = [(gid, group.decode()) for gid, group in d.groups]
        if d.forgotten:
            entry["forgotten"] = list(d.forgotten)
        if (write := d.series) is not None:
            stream_id, min_id = series_id(write.t_us), series_id(write.keep_from_us)
            key = series_key(write.resolution, d.topic, write.group_id)
            entry["point"] = {
                "key": key,
                "id": stream_id,
                "min_id": min_id,
                "ttl_ms": point_ttl_ms(d),
                "packed": write.packed.hex(),
                # Where it goes if the stream's top is at or above it (`publish_updates.lua`).
                "corrected": key + "|corrected"
                if corrected_key is None
                else corrected_key(write.resolution, d.topic, write.group_id),
                "score": stream_id.partition("-")[0],
                "min_score": min_id.partition("-")[0],
            }
            if write.revision:
                entry["point"]["revision"] = write.revision
        if d.instance is not None:
            entry["instance"] = {"key": d.instance[0], "json": d.instance[1].decode()}
        drafts.append(entry)
    document: PayloadJSON = {
        "epoch_candidate": names.epoch_candidate,
        "history_len": names.history_len,
        "history_bytes": names.history_bytes,
        "alert_retention_ms": names.alert_retention_ms,
        "channel_prefix": names.channel_prefix,
        "partition_channel": names.partition_channel,
        "publish_command": names.publish_command,
        "groups_prefix": names.groups_prefix,
        "series_keys_prefix": names.series_keys_prefix,
        "checkpoint_prefix": names.checkpoint_prefix,
        "lease_token": payload.lease_token,
        "applied_id": payload.applied_id,
        "applied_entries": payload.applied_entries,
        "applied_after": payload.applied_after,
        "drafts": drafts,
    }
    return document


def named_keys(document: PayloadJSON) -> list[str]:
    """The keys `publish_updates.lua` names from `document` rather than from its KEYS: each
    point's stream and its corrections, and the set of series keys, groups and checkpoint of
    each topic that a draft adds a point to, keeps groups of or deletes; each once, in the
    order the drafts first name it. With the partition's fixed keys and the series keys a
    deleted topic's set names, they are every key the script touches, which the caller
    declares (see `PublishScript`)."""
    keys: dict[str, None] = {}
    for draft in document["drafts"]:
        topic = draft["topic"]
        if (point := draft.get("point")) is not None:
            keys[point["key"]] = None
            keys[point["corrected"]] = None
            keys[document["series_keys_prefix"] + topic] = None
        deletion = draft["kind"] == Kind.DELETION.value
        if deletion or "groups" in draft or "forgotten" in draft:
            keys[document["groups_prefix"] + topic] = None
        if deletion:
            keys[document["series_keys_prefix"] + topic] = None
            keys[document["checkpoint_prefix"] + topic] = None
    return list(keys)
