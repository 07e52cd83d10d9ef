"""The update format's one owner: ids, drafts, updates, runs and snapshots.

An update is what subscribers receive: one line of JSON,

    {"id":"<id>","topic":"<topic>","ts":<clock s>,"reason":"event"|"tick",
     "event":{…}|null,"windows":{…}}

The aggregator builds a *draft* (everything but the id, see `draft`); the broker numbers
it and the draft becomes an `Update` (`Update.of`), the only place the id is spliced into
the JSON. Everything else — the brokers' wire and storage formats, the hub, the streams —
carries these bytes as they are and never builds or edits update JSON.

Other messages share the updates' id sequence, history and delivery: a closed series bucket
(`point_draft`, SSE `event: point`, data `{"id","resolution","topic","group"?,"point"}`), and
an alert's state change on the reserved topic `_alerts` (`alert_draft`, `event: alert`), and
a topic's deletion (`deletion_draft`, `event: snapshot`, data `{"id","gap":true,"topics":{},
"deleted":[topic]}`: the `"gap": true` snapshot its streams get where `DELETE /topics/{t}`
forgot it). A message says its kind (`Kind`) in a field of its own: the draft's `kind`, the
publish payload's, a history entry's `k`, a pub/sub message's first word for any kind but an
update (`pushsvc.broker.redis.wire`). Its JSON is the browser's and is never read for it.

Update ids are `{epoch}:{ms}-{seq}`. The epoch is a short random hex token naming one
history; it changes when the history is reset (a new memory broker, Redis restarted
empty), so an id from a lost history is recognisably foreign instead of silently pointing
somewhere else. Each partition of the topics (`pushsvc.core.partitions`) has a history of its
own, and its epochs name it: `{partition in hex, no leading zeros, none for 0}{8 random hex}`,
so partition 0's epochs are plain 8-hex tokens and `UpdateId.partition` reads the partition
back from any id. A stream's position over several partitions is a
`pushsvc.core.cursor.Cursor`. `{ms}-{seq}` is a Redis stream id: two unsigned 64-bit
integers, compared as a pair. Ids are parsed once, where they enter (from a broker, or a client's
`Last-Event-ID`), into an `UpdateId` that is compared as a value.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import orjson

from pushsvc.core.event import US_PER_S
from pushsvc.core.partitions import MAX_PARTITIONS
from pushsvc.core.sse import (
    ALERT_EVENT,
    POINT_EVENT,
    SNAPSHOT_EVENT,
    UPDATE_EVENT,
    encode_message,
    encode_update,
    escape_line_ends,
)

_U64 = 2**64 - 1
_EPOCH = re.compile(r"[0-9a-f]{1,16}")


@functools.lru_cache(maxsize=64)
def _is_epoch(text: str) -> bool:
    # Every update carries its epoch and a deployment has one or two at a time: check once.
    return _EPOCH.fullmatch(text) is not None


# Canonical decimal only (no sign, no leading zeros), so one id has one spelling.
_ID = re.compile(r"([0-9a-f]{1,16}):(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")
_MAX_ID_LEN = 16 + 1 + 20 + 1 + 20


_EPOCH_TOKEN_LEN = 8
"""The random part of an epoch: its last 8 hex digits; what comes before names the partition."""


def new_epoch(partition: int = 0) -> str:
    """A fresh epoch token of `partition`'s history: the partition in lowercase hex (none for
    partition 0, no leading zeros), then 8 random hex digits."""
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"a partition is between 0 and {MAX_PARTITIONS - 1}, not {partition}")
    token = secrets.token_hex(_EPOCH_TOKEN_LEN // 2)
    return f"{partition:x}{token}" if partition else token


def epoch_partition(epoch: str) -> int:
    """The partition an epoch names: its hex digits before the last 8 (0 when there are none).
    Not checked against the partition count: see `pushsvc.core.cursor`."""
    return int(epoch[:-_EPOCH_TOKEN_LEN], 16) if len(epoch) > _EPOCH_TOKEN_LEN else 0


@dataclass(frozen=True, slots=True)
class UpdateId:
    """A parsed update id. Ids of one epoch are strictly increasing in emission order; ids of
    different epochs are not comparable (see `is_after`). `str(id)` is the canonical form,
    which holds no CR, LF, NUL, space or comma, so it is safe as an SSE `id:` field and as a
    part of a cursor's. `partition`: the partition whose history issued it (its epoch's)."""

    epoch: str
    ms: int
    seq: int
    text: str = field(init=False, repr=False, compare=False)
    partition: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_epoch(self.epoch):
            raise ValueError(f"epoch must be 1-16 lowercase hex digits, got {self.epoch!r}")
        if not (0 <= self.ms <= _U64 and 0 <= self.seq <= _U64):
            raise ValueError(
                f"ms and seq must be unsigned 64-bit integers, got {self.ms}-{self.seq}"
            )
        object.__setattr__(self, "text", f"{self.epoch}:{self.ms}-{self.seq}")
        object.__setattr__(self, "partition", epoch_partition(self.epoch))

    @classmethod
    def parse(cls, text: object) -> UpdateId | None:
        """The id, or None when `text` is not an id we could have issued (clients send these)."""
        if not isinstance(text, str) or len(text) > _MAX_ID_LEN:
            return None
        match = _ID.fullmatch(text)
        if match is None:
            return None
        ms, seq = int(match.group(2)), int(match.group(3))
        if ms > _U64 or seq > _U64:
            return None
        return cls(match.group(1), ms, seq)

    @classmethod
    def issued(cls, text: str) -> UpdateId:
        """An id the publish script wrote (`epoch:ms-seq`), on the hot path of every update a
        process receives: split, not matched. Raises ValueError when it is not one."""
        epoch, _, position = text.partition(":")
        ms, _, seq = position.partition("-")
        update_id = cls(epoch, int(ms), int(seq))
        if update_id.text != text:
            raise ValueError(f"not an update id: {text[:64]!r}")
        return update_id

    @classmethod
    def of_stream_id(cls, epoch: str, stream_id: bytes | str) -> UpdateId:
        """From a Redis stream id `ms-seq`, which Redis wrote (trusted)."""
        text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        ms, _, seq = text.partition("-")
        return cls(epoch, int(ms), int(seq))

    @property
    def position(self) -> tuple[int, int]:
        """`(ms, seq)`: the order of ids within one epoch."""
        return self.ms, self.seq

    def is_after(self, other: UpdateId) -> bool:
        """Whether this update comes after `other`. An id of another epoch comes from a
        history reset after `other` was issued, so it counts as newer."""
        return self.epoch != other.epoch or (self.ms, self.seq) > (other.ms, other.seq)

    def __str__(self) -> str:
        return self.text


class Kind(Enum):
    """What a message is. The value is its stored form: one letter, in a history entry's `k`
    field, the publish payload's `kind` and a pub/sub message's first word
    (`publish_updates.lua` names the same letters). `event` is its SSE event name."""

    UPDATE = "u"
    """A topic's statistics: what a topic's latest is."""
    POINT = "p"
    """A closed series bucket (`point_draft`)."""
    ALERT = "a"
    """An alert instance's state change (`alert_draft`)."""
    DELETION = "d"
    """A topic's deletion (`deletion_draft`): its streams' `"gap": true` snapshot."""

    @property
    def event(self) -> str:
        return _EVENT_OF[self]

    @classmethod
    def stored(cls, code: bytes | None, body: bytes) -> Kind:
        """The kind a history entry's `k` names (KeyError for another letter). An entry
        without one was written before kinds were stored, when a kind was its body's first
        member: read so (a history kept across the upgrade reads whole), and only there.
        Drop that branch once no such history can be kept (it is trimmed within `history`
        updates of the upgrade)."""
        if code is not None:
            return _KIND_OF_CODE[code]
        for start, kind in _UNMARKED:
            if body.startswith(start):
                return kind
        return Kind.UPDATE


_EVENT_OF = {
    Kind.UPDATE: UPDATE_EVENT,
    Kind.POINT: POINT_EVENT,
    Kind.ALERT: ALERT_EVENT,
    Kind.DELETION: SNAPSHOT_EVENT,
}
_KIND_OF_CODE = {kind.value.encode(): kind for kind in Kind}
_KIND_OF_EVENT = {event: kind for kind, event in _EVENT_OF.items()}
# How a message's body started, by kind, in the history entries written before `k` was.
_UNMARKED = ((b'{"resolution"', Kind.POINT), (b'{"alert"', Kind.ALERT), (b'{"gap"', Kind.DELETION))


@dataclass(slots=True)
class GroupPart:
    """One group's statistics in an update (`"group"`, or an item of a tick's `"groups"`):
    its key (tag → value, None for a tag the event lacks) and its windows. `id` names the
    group (its key's values as a JSON list). Not to be changed once made (not frozen: one
    is made per grouped event, and a frozen dataclass's `__init__` costs several times as
    much; measured: docs/performance.md, 'Small costs behind the code's shape')."""

    id: str
    key: Mapping[str, str | None]
    windows: Mapping[str, object]

    def json(self) -> bytes:
        return orjson.dumps({"key": self.key, "windows": self.windows})


@dataclass(slots=True)
class UpdateDraft:
    """An update as the aggregator produced it, before the broker gave it an id; not to be
    changed once made (not frozen: one is made per event, and a frozen dataclass's
    `__init__` costs more per draft; measured: docs/performance.md, 'Small costs behind the
    code's shape').

    `body` is one line of JSON, an object whose first member is `"topic"`. A grouping topic's
    draft also lists, for the broker to keep as each group's latest, the groups it carries
    (`groups`: id and the group's JSON, as in the body) and the groups it forgets
    (`forgotten`: ids).
    """

    topic: str
    clock_us: int
    body: bytes
    groups: tuple[tuple[str, bytes], ...] = ()
    forgotten: tuple[str, ...] = ()
    series: SeriesWrite | None = None
    """A point's draft (`point_draft`): where the broker keeps the point besides the history."""
    instance: tuple[str, bytes] | None = None
    """An alert's draft (`alert_draft`): the instance's key and its JSON while it is pending or
    firing (b"" once resolved), for the broker's list of active instances."""
    kind: Kind = Kind.UPDATE
    """What the message is, said by whoever made the draft (the helpers below)."""

    @property
    def deletes(self) -> bool:
        """Whether this is a topic's deletion (`deletion_draft`)."""
        return self.kind is Kind.DELETION

    def flagged(self, name: str) -> UpdateDraft:
        """This draft, its update also saying `"<name>": true` (`pushsvc.aggregate.aggregator`'s
        marked messages)."""
        body = self.body[:-1] + b',"' + name.encode() + b'":true}'
        return UpdateDraft(self.topic, self.clock_us, body, self.groups, self.forgotten)

    def forgetting(self, groups: Sequence[tuple[str, Mapping[str, str | None]]]) -> UpdateDraft:
        """This draft, also telling that these groups (id, key) left the live set."""
        keys = orjson.dumps([key for _, key in groups])
        body = self.body[:-1] + b',"forgotten":' + keys + b"}"
        return UpdateDraft(
            self.topic,
            self.clock_us,
            body,
            self.groups,
            self.forgotten + tuple(gid for gid, _ in groups),
        )


class SeriesWrite(NamedTuple):
    """Where a closed bucket is kept: the tier (`resolution`, its label) of the topic or of
    one of its groups (`group_id`, '' for the topic's own), the bucket's start, the point's
    stored form (`pushsvc.rules.point`), and the oldest bucket start the tier still keeps
    (retention, on the topic clock), and its revision."""

    resolution: str
    group_id: str
    t_us: int
    packed: bytes
    keep_from_us: int
    revision: int = 0
    """0 the first time the bucket is published; each correction of it one more. A series
    replaces a point it holds by one of a higher revision and leaves out any other."""


ALERT_BODY = b'{"alert"'
"""How an alert's body starts (`alert_draft` checks what it is given)."""


def deletion_draft(topic: str, clock_us: int) -> UpdateDraft:
    """The message that `topic` was deleted (`DELETE /topics/{topic}`), published at
    `clock_us` (the deleted topic's clock): a `"gap": true` snapshot in which the topic is
    absent and named under `"deleted"`. Everything of the topic published before it is gone:
    the broker drops the topic's latest update, groups and series with it, and its history
    reads start after it; the topic's next update starts it afresh."""
    body = orjson.dumps({"gap": True, "topics": {}, "deleted": [topic]})
    return UpdateDraft(topic, clock_us, body, kind=Kind.DELETION)


def alert_draft(topic: str, clock_us: int, body: bytes, key: str, active: bool) -> UpdateDraft:
    """An alert instance's state change (`body`: `{"alert", ...}`), published on `topic` (the
    reserved `_alerts`) at the clock of the evaluation that changed it. `key` names the
    instance; `active`: pending or firing after this change (the broker lists it)."""
    if not body.startswith(ALERT_BODY):
        raise ValueError('an alert\'s body starts with its "alert" member')
    return UpdateDraft(
        topic, clock_us, body, instance=(key, body if active else b""), kind=Kind.ALERT
    )


def point_draft(
    topic: str,
    clock_us: int,
    series: SeriesWrite,
    point: Mapping[str, object],
    group_key: Mapping[str, str | None] | None = None,
) -> UpdateDraft:
    """The message of a closed bucket (`point`, its JSON fields), published at `clock_us`
    (the clock that closed it) right after the update that closed it; `"correction": true`
    when it amends the point published before for that bucket (`series.revision` above 0)."""
    fields: dict[str, object] = {"resolution": series.resolution, "topic": topic}
    if group_key is not None:
        fields["group"] = group_key
    fields["point"] = point
    if series.revision:
        fields["correction"] = True
    return UpdateDraft(topic, clock_us, orjson.dumps(fields), series=series, kind=Kind.POINT)


FORECAST_TIER = "forecast:"
"""A forecast is kept as the only entry of a series named this and its tier's label."""


def forecast_write(resolution: str, group_id: str, t_us: int, state: bytes) -> SeriesWrite:
    """Where a forecast made after the bucket starting at `t_us` is kept: the latest of its
    tier's forecasts (`keep_from_us` is its own start: older ones are trimmed). What is kept
    is the forecaster's state (`BucketForecaster.to_bytes`: the model's numbers), not its
    points: `GET /topics/{topic}/forecast` makes them from it on read, so a series keeps a
    few numbers (its season's or range's), not a horizon of thousands of points."""
    return SeriesWrite(FORECAST_TIER + resolution, group_id, t_us, state, t_us)


def forecast_draft(
    topic: str,
    clock_us: int,
    series: SeriesWrite,
    forecast: Mapping[str, object],
    group_key: Mapping[str, str | None] | None = None,
) -> UpdateDraft:
    """The message of a forecast (`pushsvc.series.forecasting`) made as its tier's bucket
    closed at `clock_us`, published right after that bucket's point; `series` is its
    `forecast_write`. A point message in kind
    (kept once per bucket, as points are: exactly once through a failover), read by the
    streams that ask for it (`?forecast=`), never by `?series=`."""
    fields: dict[str, object] = {"resolution": forecast["resolution"], "topic": topic}
    if group_key is not None:
        fields["group"] = group_key
    fields["forecast"] = forecast
    return UpdateDraft(topic, clock_us, orjson.dumps(fields), series=series, kind=Kind.POINT)


def draft(
    topic: str,
    clock_us: int,
    reason: str,
    event: Mapping[str, object] | None,
    windows: Mapping[str, object],
    *,
    group: GroupPart | None = None,
    groups: Sequence[GroupPart] | None = None,
    late: bool = False,
) -> UpdateDraft:
    """The draft of one update: the topic's statistics after an event or a tick, with the
    event's group (`group`) or the groups a tick changed (`groups`) for a grouping topic.
    `late`: the event is behind the topic's clock (applied in place); the update says
    `"late": true`, an update on time has no such key."""
    if group is not None:
        # Every event of a grouping topic: its group's JSON once, kept for the broker and
        # spliced into the body as it is. One display: a sixth key added to a five-key dict
        # would resize it, per event.
        encoded = group.json()
        grouped: dict[str, object] = {
            "topic": topic,
            "ts": clock_us / US_PER_S,
            "reason": reason,
            "event": event,
            "windows": windows,
            "group": orjson.Fragment(encoded),
        }
        if late:
            grouped["late"] = True
        body = orjson.dumps(grouped)
        return UpdateDraft(topic, clock_us, body, ((group.id, encoded),))
    fields: dict[str, object] = {
        "topic": topic,
        "ts": clock_us / US_PER_S,
        "reason": reason,
        "event": event,
        "windows": windows,
    }
    if late:
        fields["late"] = True
    if groups is None:
        return UpdateDraft(topic, clock_us, orjson.dumps(fields))
    texts = [part.json() for part in groups]
    fields["groups"] = [orjson.Fragment(text) for text in texts]
    kept = tuple((part.id, text) for part, text in zip(groups, texts, strict=True))
    return UpdateDraft(topic, clock_us, orjson.dumps(fields), kept)


@dataclass(slots=True)
class Update:
    """An update with its id: what the history keeps and subscribers receive.

    `data` is the JSON line. `sse` (its SSE message), `unnumbered` (that message without its
    `id:`) and `fields` (its JSON parsed) are made on first use and kept, so each is computed
    at most once per update per process, whatever the number of subscribers.
    """

    topic: str
    id: UpdateId
    clock_us: int
    data: bytes
    event: str = UPDATE_EVENT
    """The SSE event name: `stats` for an update, `point` for a closed series bucket."""
    _sse: bytes | None = field(default=None, repr=False, compare=False)
    _unnumbered: bytes | None = field(default=None, repr=False, compare=False)
    _fields: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    holds_message: bool | None = field(default=None, repr=False, compare=False)
    """Whether its event is a message (None: not looked at yet). Set on first use by
    `pushsvc.deliver.projection.Projection.holds_message`, its one owner, so that a message's
    JSON is parsed once per process to tell, not once per stream that replays it."""

    @classmethod
    def of(cls, draft: UpdateDraft, update_id: UpdateId) -> Update:
        return cls.numbered(draft.topic, update_id, draft.clock_us, draft.body, draft.kind)

    @classmethod
    def numbered(
        cls,
        topic: str,
        update_id: UpdateId,
        clock_us: int,
        body: bytes,
        kind: Kind = Kind.UPDATE,
    ) -> Update:
        """The message from a draft's parts: the id becomes the JSON object's first member;
        `kind` (stored beside the body, never read from it) names its SSE event."""
        data = b'{"id":"' + update_id.text.encode() + b'",' + body[1:]
        if kind is Kind.UPDATE:
            return cls(topic, update_id, clock_us, data)
        return cls(topic, update_id, clock_us, data, _EVENT_OF[kind])

    @property
    def kind(self) -> Kind:
        return _KIND_OF_EVENT[self.event]

    @property
    def sse(self) -> bytes:
        """The SSE message of this update (`event: stats`) or point (`event: point`)."""
        message = self._sse
        if message is None:
            message = self._sse = encode_update(self.id.text, self.data, self.event)
        return message

    @property
    def unnumbered(self) -> bytes:
        """The SSE message without its `id:` line, made on first use and kept: what a stream
        that writes an id of its own (a cursor) puts after its `id:` line, shared by every
        such stream."""
        message = self._unnumbered
        if message is None:
            message = self._unnumbered = encode_message(self.data, event=self.event)
        return message

    @property
    def is_point(self) -> bool:
        return self.event is POINT_EVENT

    @property
    def is_deletion(self) -> bool:
        """The topic's deletion (`deletion_draft`): its streams' `"gap": true` snapshot."""
        return self.event is SNAPSHOT_EVENT

    @property
    def is_update(self) -> bool:
        """A topic's statistics (not a point nor an alert): what a topic's latest is."""
        return self.event is UPDATE_EVENT

    @property
    def fields(self) -> dict[str, Any]:
        """The update's JSON, parsed (for projections and snapshots); do not mutate."""
        parsed = self._fields
        if parsed is None:
            parsed = self._fields = orjson.loads(self.data)
        return parsed

    @property
    def windows(self) -> dict[str, Any]:
        windows: dict[str, Any] = self.fields["windows"]
        return windows


@dataclass(slots=True)
class Run:
    """Consecutive updates of one topic, in id order (a batch POST), shared by every client
    that gets them. `block` is their frames joined once, as a stream without a projection
    writes them (every message but points), made at its first use: a run only projected
    streams take (a channel's messages stream, the commonest at fan-out 1) never encodes the
    whole update, nor keeps that encoding on the update its history holds. A `block` given
    is taken as it is (`pushsvc.deliver.rendering.run_of` gives none)."""

    updates: list[Update]
    _block: bytes | None = None
    received_us: int = 0
    """When this process's hub received it (monotonic µs): delivery latency counts from here."""
    renderings: dict[str, bytes] | None = None
    """The run as other streams write it (projected, framed as a chunk), made once and
    shared. Owned by `pushsvc.deliver.rendering`, which alone reads and writes it and
    documents its keys and lifetime."""
    unnumbered: dict[str, list[bytes]] | None = None
    """Each update's message without its `id:` as streams that write ids of their own (a
    cursor) render it, by projection; owned by `pushsvc.deliver.rendering` like
    `renderings`."""

    @property
    def block(self) -> bytes:
        block = self._block
        if block is None:
            updates = self.updates
            if len(updates) == 1:
                only = updates[0]
                block = b"" if only.event is POINT_EVENT else only.sse
            else:
                block = b"".join([u.sse for u in updates if u.event is not POINT_EVENT])
            self._block = block
        return block

    @property
    def topic(self) -> str:
        return self.updates[0].topic

    @property
    def last_id(self) -> UpdateId:
        return self.updates[-1].id


WindowsFilter = Callable[[dict[str, Any]], dict[str, Any]]


def snapshot_message(
    latest: Mapping[str, Update],
    *,
    gap: bool,
    id: str | None,
    windows_of: WindowsFilter | None = None,
    groups: Mapping[str, list[dict[str, Any]]] | None = None,
) -> bytes:
    """The `snapshot` SSE message of these topics' latest updates, with the live groups of
    the grouping topics (`groups`, as they should be sent).

    Its `id:` is `id`: the stream's cursor once it has these updates
    (`pushsvc.core.cursor.Cursor.newest` of their ids, for a stream that had nothing), so a
    client resuming from it loses nothing; None (no `id:`) when it has nothing yet.
    """
    topics: dict[str, object] = {}
    for topic, update in sorted(latest.items()):
        topics[topic] = _snapshot_entry(update, windows_of, groups.get(topic) if groups else None)
    data = orjson.dumps({"gap": gap, "topics": topics})
    return encode_message(data, event=SNAPSHOT_EVENT, id=id or None)


def _snapshot_entry(
    update: Update, windows_of: WindowsFilter | None, groups: list[dict[str, Any]] | None
) -> dict[str, object]:
    windows = update.windows if windows_of is None else windows_of(update.windows)
    entry: dict[str, object] = {"id": update.id.text, "ts": update.fields["ts"], "windows": windows}
    if groups is not None:
        entry["groups"] = groups
    return entry


def snapshot_pages(
    latest: Mapping[str, Update],
    *,
    gap: bool,
    id: str | None,
    page_size: int,
    windows_of: WindowsFilter | None = None,
    groups_of: Callable[[str], list[dict[str, Any]] | None] | None = None,
) -> Iterator[bytes]:
    """`snapshot_message` in pages of about `page_size` bytes (the last may be smaller), each
    made only when the one before was taken: joined, they are its bytes exactly. The message
    is one JSON object on one `data:` line, so the pages split that line; a snapshot of
    thousands of topics is never whole in memory. `groups_of`: a topic's live groups, asked
    as its entry is made (None: it carries none)."""
    head = encode_message(b"\0", event=SNAPSHOT_EVENT, id=id or None)
    head = head[: head.index(b"\0")]  # everything before the data
    parts = [head, b'{"gap":', b"true" if gap else b"false", b',"topics":{']
    size = sum(len(p) for p in parts)
    first = True
    for topic, update in sorted(latest.items()):
        groups = groups_of(topic) if groups_of is not None else None
        entry = (
            orjson.dumps(topic) + b":" + orjson.dumps(_snapshot_entry(update, windows_of, groups))
        )
        entry = escape_line_ends(entry)  # as encode_message would: this splices the data line
        if not first:
            parts.append(b",")
            size += 1
        first = False
        parts.append(entry)
        size += len(entry)
        if size >= page_size:
            yield b"".join(parts)
            parts, size = [], 0
    parts.append(b"}}\n\n")
    yield b"".join(parts)
