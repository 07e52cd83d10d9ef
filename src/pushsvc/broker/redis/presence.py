"""Presence on Redis: every web process publishes its tally (`pushsvc.core.presence`) in
entries that expire, and a read adds up the entries still there. A process that dies (kill -9,
a lost host) stops refreshing its entries: its streams leave within `EXPIRY_US`.

Keys, in each partition `P:` (`pushsvc.broker.redis.keys`), so that a topic's presence is read
from one Redis Cluster slot, its partition's:

    P:presence             set   ids of the processes with entries in this partition (a
                                 directory; a member whose entries expired counts nothing and
                                 is dropped by the next sweep)
    P:presence:{proc}      hash  topic -> `[streams, [subjects]]` (JSON) of process `proc`'s
                                 streams of the partition's topics named outright
    P:presence:{proc}:patterns  hash  pattern watch -> `[streams, [subjects]]`: the process's
                                 pattern streams, the same in every partition (a pattern
                                 covers topics of every partition)

Each expires `EXPIRY_US` after its last refresh. A process writes only what changed
since its last flush, once a `refresh` (at most a second, a third of the expiry), and in the
same pipeline pushes every entry's expiry forward: PEXPIRE answers 0 for an entry that is gone
(it expired while the process was paused, or Redis restarted empty), and the next flush writes
that partition's entries whole again. Subjects are written only when the operator keeps them
(`--presence-subs`): off, the list is empty.

A read of topics groups them by partition: one pipeline asks each partition's directory, a
second one each listed process's count of each topic (`HMGET`) and its pattern watches
(`HGETALL` of one partition's copy: small, one entry per distinct pattern a page asks with).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Collection
from typing import Any

import orjson
import redis

from pushsvc.broker.redis.connect import pooled_client
from pushsvc.broker.redis.keys import Keys, PartitionKeys
from pushsvc.broker.redis.wire import unavailable
from pushsvc.core.presence import (
    NOBODY,
    Presence,
    PresenceRegistry,
    Stop,
    Tally,
    combine,
    pattern_matcher,
)
from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

EXPIRY_US = 5_000_000
"""How long a web process's entries outlive its last refresh: how soon the streams of a killed
process stop counting. Fixed, not a setting: a process refreshes every second (a third of
this, when shorter), so 5 s lets four refreshes go missing (a Redis failover, a long pause)
before live streams would leave, while a dead process's streams leave within seconds."""

_CACHED_TOPICS = 10_000
"""Topics whose last read `read` keeps at most (`read_cache_s`)."""

_SWEEP_EVERY = 10
"""Flushes between two sweeps of the directories (members whose entries are all gone)."""


def process_id() -> str:
    """This process's name in the directories: unique per start (a restarted process is a new
    one; its old entries expire)."""
    return f"{os.getpid():x}-{secrets.token_hex(6)}"


def directory(part: PartitionKeys) -> str:
    return part.presence


def names_entry(part: PartitionKeys, proc: str) -> str:
    return part.presence_names(proc)


def patterns_entry(part: PartitionKeys, proc: str) -> str:
    return part.presence_patterns(proc)


def _value(tally: Tally, key: str) -> bytes:
    count, subs = tally.entry(key)
    return orjson.dumps([count, subs])


def _parse(value: bytes | None) -> tuple[int, list[str]]:
    """An entry's `[streams, [subjects]]`; (0, []) for a missing or foreign one."""
    if not value:
        return 0, []
    try:
        count, subs = orjson.loads(value)
        if isinstance(count, int) and isinstance(subs, list):
            return count, [s for s in subs if isinstance(s, str)]
    except (orjson.JSONDecodeError, ValueError, TypeError):
        pass
    return 0, []


class RedisPresence:
    """Every web process's streams (see the module docstring); `run` publishes this process's,
    `read` adds up every live process's."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        registry: PresenceRegistry,
        *,
        expiry_us: int = EXPIRY_US,
        proc: str | None = None,
        client: redis.Redis | None = None,
        read_cache_s: float | None = None,
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.proc = proc or process_id()
        self.expiry_ms = max(1, expiry_us // 1000)
        self.refresh_s = min(1.0, expiry_us / 3_000_000)
        self._client = client or pooled_client(url, max_connections=4, socket_timeout=5.0)
        self._whole: set[int] = set(range(keys.partitions))
        """Partitions whose entries are written whole at the next flush (at the start: a
        process id is new, nothing is there)."""
        self._mine: dict[int, set[str]] = {}
        """This process's topics named outright, by partition (kept from the changes)."""
        self._present: set[str] = set()
        """The entries the last flush left in Redis."""
        self._flushes = 0
        self.flush_failures = 0
        self.read_cache_s = self.refresh_s / 2 if read_cache_s is None else read_cache_s
        """How long a topic's presence read is answered again without Redis: every process
        writes once a `refresh_s`, so nothing fresher is there to read; many callers asking
        for one topic (dashboards) cost Redis at most a read or two per second and process."""
        self._cache: dict[str, tuple[float, Presence]] = {}

    # Publishing this process's tally.

    def run(self, stop: Stop) -> None:
        """Flush every `refresh_s` until `stop`; then remove this process's entries (a clean
        stop: its streams leave at once, not at the expiry)."""
        try:
            while not stop.wait(self.refresh_s):
                self.flush_logged()
        finally:
            self.remove()

    def flush_logged(self) -> None:
        try:
            self.flush()
        except BrokerUnavailable:
            self.flush_failures += 1  # unavailable() logged it; the next flush writes whole
        except Exception:
            self.flush_failures += 1
            log.exception("publishing presence failed")

    def flush(self) -> None:
        """Write what changed since the last flush and push every entry's expiry forward."""
        registry = self.registry
        names, patterns = registry.names, registry.patterns
        changed_by_part: dict[int, set[str]] = {}
        for name in names.take_changed():
            i = self.keys.of(name).index
            changed_by_part.setdefault(i, set()).add(name)
            if name in names.counts:
                self._mine.setdefault(i, set()).add(name)
            elif i in self._mine:
                self._mine[i].discard(name)
        changed_patterns = patterns.take_changed()
        whole, self._whole = self._whole, set()
        checked: list[tuple[int, int]] = []
        """(partition, the position in the pipeline of a PEXPIRE of an entry that was there)"""
        present: set[str] = set()
        try:
            with unavailable("presence flush"), self._client.pipeline(transaction=False) as pipe:
                for part in self.keys:
                    i = part.index
                    names_key = names_entry(part, self.proc)
                    patterns_key = patterns_entry(part, self.proc)
                    mine = self._mine.get(i) or set()
                    if i in whole:
                        # One key a command: a Redis Cluster pipeline takes no multi-key DEL.
                        pipe.delete(names_key)
                        pipe.delete(patterns_key)
                        self._write(pipe, names_key, names, mine)
                        self._write(pipe, patterns_key, patterns, patterns.counts)
                    else:
                        # Before writing: a PEXPIRE of 0 says an entry written before is gone
                        # (it expired while this process was held up, or Redis lost it), and
                        # writing only the changes would leave the rest missing.
                        for key in (names_key, patterns_key):
                            if key in self._present:
                                checked.append((i, len(pipe)))
                                pipe.pexpire(key, self.expiry_ms)
                        self._write(pipe, names_key, names, changed_by_part.get(i, ()))
                        self._write(pipe, patterns_key, patterns, changed_patterns)
                    for key, held in ((names_key, mine), (patterns_key, patterns.counts)):
                        if held:
                            pipe.pexpire(key, self.expiry_ms)
                            present.add(key)
                    if mine or patterns.counts:
                        pipe.sadd(directory(part), self.proc)
                        pipe.pexpire(directory(part), self.expiry_ms)
                replies = pipe.execute() if len(pipe) else []
            self._present = present
            self._whole.update(i for i, at in checked if not replies[at])
            self._flushes += 1
            if self._flushes % _SWEEP_EVERY == 0:
                with unavailable("presence sweep"):
                    self._sweep()
        except BaseException:
            # What this flush was to write is written whole by the next one.
            self._whole.update(range(self.keys.partitions))
            raise

    @staticmethod
    def _write(pipe: Any, key: str, tally: Tally, keys: Collection[str]) -> None:
        if not keys:
            return
        gone = [k for k in keys if k not in tally.counts]
        kept = {k: _value(tally, k) for k in keys if k in tally.counts}
        if gone:
            pipe.hdel(key, *gone)
        if kept:
            pipe.hset(key, mapping=kept)

    def _sweep(self) -> None:
        """Drop from the directories the processes none of whose entries is left (dead ones);
        a live one dropped meanwhile adds itself back at its next flush."""
        with self._client.pipeline(transaction=False) as pipe:
            for part in self.keys:
                pipe.smembers(directory(part))
            members: list[set[bytes]] = pipe.execute()
        with self._client.pipeline(transaction=False) as pipe:
            asked = []
            for part, procs in zip(self.keys, members, strict=True):
                for raw in procs:
                    proc = raw.decode()
                    pipe.exists(names_entry(part, proc))
                    pipe.exists(patterns_entry(part, proc))
                    asked.append((part, proc))
            found = pipe.execute() if asked else []
        alive = [a or b for a, b in zip(found[::2], found[1::2], strict=True)]
        dead = [(part, proc) for (part, proc), n in zip(asked, alive, strict=True) if not n]
        if dead:
            with self._client.pipeline(transaction=False) as pipe:
                for part, proc in dead:
                    pipe.srem(directory(part), proc)
                pipe.execute()

    def remove(self) -> None:
        """Take this process's entries out now (it stops)."""
        try:
            with unavailable("presence removal"), self._client.pipeline(transaction=False) as pipe:
                for part in self.keys:
                    pipe.delete(names_entry(part, self.proc))
                    pipe.delete(patterns_entry(part, self.proc))
                    pipe.srem(directory(part), self.proc)
                pipe.execute()
        except BrokerUnavailable:
            pass  # they expire

    # Reading every process's.

    def read(self, topics: Collection[str]) -> dict[str, Presence]:
        if not topics:
            return {}
        now = time.monotonic()
        cache = self._cache
        known: dict[str, Presence] = {}
        for topic in topics:
            cached = cache.get(topic)
            if cached is not None and cached[0] > now:
                known[topic] = cached[1]
        if len(known) == len(topics):
            return known
        read = self._read([t for t in topics if t not in known])
        if self.read_cache_s > 0:
            if len(cache) > _CACHED_TOPICS:
                cache.clear()  # a crawl over many topics: start again rather than grow
            until = now + self.read_cache_s
            for topic, presence in read.items():
                cache[topic] = (until, presence)
        return known | read

    def _read(self, topics: Collection[str]) -> dict[str, Presence]:
        by_part: dict[int, list[str]] = {}
        for topic in topics:
            by_part.setdefault(self.keys.of(topic).index, []).append(topic)
        parts = [self.keys.partition(i) for i in by_part]
        with unavailable("presence read"):
            with self._client.pipeline(transaction=False) as pipe:
                for part in parts:
                    pipe.smembers(directory(part))
                directories: list[set[bytes]] = pipe.execute()
            asked: list[tuple[str, list[str] | None]] = []
            with self._client.pipeline(transaction=False) as pipe:
                for part, procs in zip(parts, directories, strict=True):
                    wanted = by_part[part.index]
                    for raw in sorted(procs):
                        proc = raw.decode()
                        pipe.hmget(names_entry(part, proc), wanted)
                        asked.append((proc, wanted))
                        pipe.hgetall(patterns_entry(part, proc))
                        asked.append((proc, None))
                replies = pipe.execute() if asked else []
        found: dict[str, list[tuple[int, list[str]]]] = {topic: [] for topic in topics}
        # A process's pattern watches are the same in every partition: counted once each.
        watches: dict[str, dict[bytes, bytes]] = {}
        for (proc, of_names), reply in zip(asked, replies, strict=True):
            if of_names is None:
                watches.setdefault(proc, reply)
                continue
            for name, value in zip(of_names, reply, strict=True):
                found[name].append(_parse(value))
        for entries in watches.values():
            for raw_key, value in entries.items():
                matches = pattern_matcher(raw_key.decode(errors="replace"))
                parsed = _parse(value)
                for topic in topics:
                    if matches(topic):
                        found[topic].append(parsed)
        return {topic: combine(found[topic]) if found[topic] else NOBODY for topic in topics}

    def close(self) -> None:
        self._client.close()
