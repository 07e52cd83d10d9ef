"""A shard's event log as its aggregators read it: entries, the applied position, ticks, trim.

An entry is one POST's batch of one topic (`k=e`), one round of idle ticks (`k=t`), idle
topics forgotten (`k=f`), or a topic deleted (`k=d`, `DELETE /topics/{t}`); only the lease
holder appends ticks and forget entries. Entries are applied in
log order; "applied up to" is written by the publish script together with the updates (see
`RedisBroker.publish_updates`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson
import redis

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys, time_key
from pushsvc.broker.redis.script_replies import ForgetReply, StateReply
from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.redis.wire import decode_events, hash_fields, head, unavailable
from pushsvc.broker.shared_log import FIRST, FORGET_SCAN, Entry, LogState
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.updates import UpdateId


def _entry(raw_id: bytes, fields: Mapping[bytes, bytes]) -> Entry:
    entry_id = raw_id.decode()
    kind = fields.get(b"k")
    number = fields.get(b"n")
    n = None if number is None else int(number)
    if kind == b"t":
        ticks = {str(t): int(c) for t, c in orjson.loads(fields[b"v"]).items()}
        return Entry(entry_id, ticks=ticks, n=n)
    if kind == b"f":
        return Entry(entry_id, forgotten=[str(t) for t in orjson.loads(fields[b"v"])], n=n)
    if kind == b"d":
        return Entry(entry_id, deleted=fields[b"t"].decode(), n=n)
    return Entry(entry_id, fields[b"t"].decode(), decode_events(fields[b"v"]), n=n)


class RedisEventLog:
    """One shard's log on Redis, for that shard's aggregators (`shared_log.EventLog`). Not
    greenlet-safe: one runner uses it.

    Given a URL it has a connection of its own, so that reads that block (`read` with
    `block_ms`) never hold up the lease or the publishing. Given a client (the broker's pool,
    shared by every partition a process holds), `close` leaves it open, and nothing should
    block on it: a process waits for new entries of all its partitions at once
    (`log_wait.py`).
    """

    def __init__(
        self,
        url: str | redis.Redis,
        keys: Keys,
        shard: tuple[int, int],
        *,
        socket_timeout: float,
    ):
        self.keys = keys
        self.shard = shard
        self._part = part = keys.shard(shard)
        self._log = part.log
        self._owned = isinstance(url, str)
        # A blocked XREAD must outlive the socket timeout it is given.
        self._client = (
            single_client(url, socket_timeout=socket_timeout) if isinstance(url, str) else url
        )
        self._state = Script(self._client, "read_state")
        self._ticks = Script(self._client, "append_ticks")
        self._forget = Script(self._client, "forget_topics")
        self._save_checkpoints = Script(self._client, "save_checkpoints")

    def state(self) -> LogState:
        with unavailable("read_state"):
            keys = [self._part.applied, self._part.latest]
            reply = StateReply.decode(self._state(keys=keys))
            seconds, micros = self._client.time()  # the clock the ids were written on
        now_us = int(seconds) * 1_000_000 + int(micros)
        heads = {topic: head(packed) for topic, packed in reply.latest.items()}
        clocks = {topic: h.clock_us for topic, h in heads.items()}
        ages = {topic: now_us - UpdateId.issued(h.id).ms * 1000 for topic, h in heads.items()}
        return LogState(reply.applied_id or FIRST, reply.applied_entries, clocks, ages)

    def applied(self) -> str:
        """The last entry the active aggregator applied (FIRST for none)."""
        with unavailable("applied"):
            value = self._client.hget(self._part.applied, "id")
        return cast(bytes, value).decode() if value else FIRST

    def read(self, after: str, *, count: int, block_ms: int | None = None) -> list[Entry]:
        """Entries after `after`, oldest first; with `block_ms`, wait that long for one."""
        with unavailable("read"):
            reply: Any = self._client.xread({self._log: after}, count=count, block=block_ms)
        if not reply:
            return []
        return [_entry(raw_id, fields) for raw_id, fields in reply[0][1]]

    def upto(self, after: str, last: str, *, count: int) -> list[Entry]:
        """Entries after `after` up to `last` included (rebuilding), at most `count`."""
        start = "-" if after == FIRST else f"({after}"
        with unavailable("read"):
            raw: Any = self._client.xrange(self._log, min=start, max=last, count=count)
        return [_entry(raw_id, fields) for raw_id, fields in raw]

    def append_ticks(self, fence: str, ticks: Mapping[str, int], after: str) -> str | None:
        """Log a round of idle ticks proposed from the log applied up to `after`; None when a
        ticked topic was deleted after it (nothing logged). Fenced unless `fence` is the
        lease's token."""
        part = self._part
        keys = [self._log, part.clocks, part.logged, part.lease, part.deleted]
        args: list[str | bytes] = [fence, orjson.dumps(dict(ticks)), after]
        for topic, clock in ticks.items():
            args += [topic, time_key(clock)]
        with unavailable("append_ticks"):
            entry_id = self._ticks(keys=keys, args=args)
        return cast(bytes, entry_id).decode() if entry_id else None

    def forget(self, fence: str, after: str, clocks: Mapping[str, int]) -> list[str]:
        """Forget idle topics: those of `clocks` (topic -> the clock the caller saw) for which
        nothing was logged after entry `after`, the last one the caller applied. They leave
        the topic clocks and `latest`, and one entry in the log (applied like any other)
        drops their windows; the topics forgotten. Nothing when more than `FORGET_SCAN`
        entries follow `after`. Fenced unless `fence` is the lease's token."""
        part = self._part
        keys = [
            self._log,
            part.clocks,
            part.latest,
            part.logged,
            part.lease,
            part.forgotten,
            part.checkpoints,
            part.names,
        ]
        args: list[str | int] = [fence, after, FORGET_SCAN, part.groups(""), part.checkpoint("")]
        for topic, clock in clocks.items():
            args += [topic, time_key(clock)]
            keys += [part.groups(topic), part.checkpoint(topic)]
        with unavailable("forget_topics"):
            reply = ForgetReply.decode(self._forget(keys=keys, args=args))
        return reply.forgotten

    def save_checkpoints(self, fence: str, checkpoints: Sequence[Checkpoint]) -> int:
        """Replace these topics' checkpoints, each unless a newer one is saved; how many were
        written. Fenced unless `fence` is the lease's token."""
        args: list[str | int | bytes] = [fence, self._part.checkpoint("")]
        for checkpoint in checkpoints:
            fields = checkpoint.fields()
            args += [checkpoint.topic, *checkpoint.position, len(fields)]
            for name, value in fields.items():
                args += [name, value]
        keys = [self._part.lease, self._part.checkpoints]
        keys += [self._part.checkpoint(c.topic) for c in checkpoints]
        with unavailable("save_checkpoints"):
            return cast(int, self._save_checkpoints(keys=keys, args=args))

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint saved for the shard's topics."""
        with unavailable("checkpoints"):
            topics = cast(set[bytes], self._client.smembers(self._part.checkpoints))
            pipe = self._client.pipeline(transaction=True)
            for topic in sorted(topics):
                pipe.hgetall(self._part.checkpoint(topic.decode()))
            saved = pipe.execute()
        return [Checkpoint.of_fields(hash_fields(fields)) for fields in saved if fields]

    def announce_rules(self, digest: str) -> None:
        """Record the digest of the rules this shard's (active) aggregator computes with."""
        with unavailable("announce_rules"):
            self._client.set(self._part.rules, digest)

    def trim(self, before: str) -> None:
        """Forget the entries before `before` (no aggregator needs them to rebuild)."""
        with unavailable("trim"):
            self._client.xtrim(self._log, minid=before, approximate=False)

    def close(self) -> None:
        if self._owned:
            self._client.close()
