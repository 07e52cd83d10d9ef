"""What the Lua scripts (`broker/lua/*.lua`) answer, decoded where the answer arrives.

Each multi-part reply becomes a NamedTuple with named fields, and each set of codes an enum
that mirrors the script's named locals (change both together): nothing past this module
reads a script reply by index. Single-value replies (`append_ticks`' entry id, the lease
scripts' codes) are decoded where they are read.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from pushsvc.broker.redis.keys import time_of_key


class AppendCode(IntEnum):
    """The first element of `append_events.lua`'s reply (its LATE, LOGGED, ... locals)."""

    LATE = 0
    LOGGED = 1
    NEW_TOPIC = 2
    REPLAYED = 3
    KEY_REUSED = 4
    SPLIT = 5


class AppendReply(NamedTuple):
    """`append_events.lua`'s reply: its code and what that code carries (None otherwise)."""

    code: AppendCode
    entry_id: str | None = None
    """LOGGED: the log entry the batch became."""
    late_index: int | None = None
    """LATE: the batch's plain event past the grace that refuses it."""
    topic_clock_us: int | None = None
    """LATE: the topic clock T it was late against; SPLIT: the clock before the batch (None
    for a new topic)."""
    past: tuple[int, ...] = ()
    """SPLIT: the indices of the batch's events past the grace, as the script judged."""
    replayed_events: int | None = None
    """REPLAYED: the events the request that first used the key logged."""
    evicted: int = 0
    """LOGGED: the idempotency keys deleted before their window ended to keep the partition
    within its bound."""

    @classmethod
    def decode(cls, raw: Any) -> AppendReply:
        code = AppendCode(raw[0])
        if code is AppendCode.LOGGED:
            return cls(code, raw[1].decode(), evicted=int(raw[2]))
        if code is AppendCode.LATE:
            return cls(code, late_index=int(raw[1]), topic_clock_us=time_of_key(raw[2]))
        if code is AppendCode.REPLAYED:
            return cls(code, replayed_events=int(raw[1]))
        if code is AppendCode.SPLIT:
            past = tuple(int(i) for i in raw[1].split(b",")) if raw[1] else ()
            return cls(code, topic_clock_us=time_of_key(raw[2]) if raw[2] else None, past=past)
        return cls(code)


class PublishReply(NamedTuple):
    """`publish_updates.lua`'s reply: the history's epoch and one stream id per draft, in
    draft order."""

    epoch: str
    stream_ids: list[bytes]

    @classmethod
    def decode(cls, raw: Any) -> PublishReply:
        epoch, stream_ids = raw
        return cls(epoch.decode(), stream_ids)


class StateReply(NamedTuple):
    """`read_state.lua`'s reply: the last log entry applied (None for none), how many entries
    that was, and the packed latest update of every topic."""

    applied_id: str | None
    applied_entries: int
    latest: dict[str, bytes]

    @classmethod
    def decode(cls, raw: Any) -> StateReply:
        applied_id, applied_entries, flat = raw
        latest = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        return cls(applied_id.decode() if applied_id else None, int(applied_entries or 0), latest)


class ForgetReply(NamedTuple):
    """`forget_topics.lua`'s reply: the forget entry logged (None when nothing was
    forgotten) and the topics forgotten."""

    entry_id: str | None
    forgotten: list[str]

    @classmethod
    def decode(cls, raw: Any) -> ForgetReply:
        entry_id, forgotten = raw
        return cls(entry_id.decode() if entry_id else None, [t.decode() for t in forgotten])


class WalkStop(StrEnum):
    """Why `topic_history.lua` stopped walking a topic's chain (its END, MORE, SCAN locals)."""

    END = "end"
    """The topic's first update kept, a trimmed one, or one older than wanted."""
    MORE = "more"
    """The most entries asked for were returned: walk on from `resume_from`."""
    SCAN = "scan"
    """`resume_from` was written before entries named their previous one: scan on."""


class HistoryEntry(NamedTuple):
    """One update as the history stream keeps it."""

    stream_id: bytes
    clock_us: int
    body: bytes


class WalkReply(NamedTuple):
    """`topic_history.lua`'s reply: the history's epoch and newest stream id (None for no
    history), why the walk stopped and where to go on from, and the entries, newest first."""

    epoch: str | None
    head: bytes | None
    stop: WalkStop
    resume_from: str | None
    entries: list[HistoryEntry]

    @classmethod
    def decode(cls, raw: Any) -> WalkReply:
        epoch, head, stop, resume_from, *flat = raw
        entries = [
            HistoryEntry(stream_id, int(clock_us), body)
            for stream_id, clock_us, body in zip(*[iter(flat)] * 3, strict=True)
        ]
        return cls(
            epoch.decode() if epoch else None,
            head,
            WalkStop(stop.decode()),
            resume_from.decode() if resume_from else None,
            entries,
        )
