"""Where the Redis broker keeps things, and how it writes times so Lua compares them exactly.

Every key and channel is under the configured prefix (default `pushsvc:`); a shard is
`i/N` (`--shard`), and every process of a deployment must agree on N:

    {prefix}log:{i}/{N}       stream  the shard's event log: k=e (t=topic, v=events),
                                      k=t (v=ticks) or k=f (v=topics forgotten); what a
                                      POST appends before its 202
    {prefix}logged:{i}/{N}    counter entries ever appended to that log
    {prefix}applied:{i}/{N}   hash    id (the last entry applied) and n (entries applied),
                                      written atomically with the updates they produced
    {prefix}lease:{i}/{N}     string  the token of the shard's active aggregator
    {prefix}lease:{i}/{N}:taken  string  the token it was last taken under (kept when the
                                      lease expires: a holder that finds the lease free
                                      again knows whether another held it meanwhile);
                                      `lease:bridge` and `lease:derive` have one too
    {prefix}clocks            hash    topic -> T, the largest event time or tick clock logged;
                                      its fields are the topics kept (`--max-topics`)
    {prefix}forgotten         counter idle topics forgotten (`--topic-ttl`), for /metrics
    {prefix}updates:{topic}   channel runs of updates, `<id> <clock_us> <body>` per line
    {prefix}history           stream  the newest `history` updates: t=topic, c=clock_us, b=body
    {prefix}latest            hash    topic -> `<id> <clock_us> <body>` of its latest update
    {prefix}alerts            hash    alert instance -> its latest change, while active
    {prefix}alerts_head       string  `<epoch>:<stream id>` of the newest alert change in the
                                      history, where the chain of `_alerts` starts
    {prefix}epoch             string  the epoch of the history (ids are `{epoch}:{stream id}`)
    {prefix}trimmed           string  stream id of the newest update trimmed from the history
    {prefix}idem:{topic}/{key} string the digest and answer of the POST that logged a batch
    {prefix}series:{res}:{topic}[|{group id}]  stream  closed buckets of one series tier:
                              id `<bucket start ms>-0`, p=packed point; trimmed to the tier's
                              retention, expiring that long after its newest point
                                      with this Idempotency-Key; expires after the window
                                      (a topic has no `/`, so the first one ends it)

For Redis Cluster every key must share a slot: use a prefix with a hash tag, `{pushsvc}:`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pushsvc.core.partitions import partition_of

# Event times are -2**62 < t < 2**62 µs (years 1..9999 are ±2.6e17); shifted by 2**62 and
# written with 19 digits, string order is integer order, which Lua (doubles) cannot give
# beyond 2**53 (before 1685 or after 2255).
_TIME_OFFSET = 1 << 62
_TIME_DIGITS = 19


def time_key(us: int) -> str:
    """A time (µs) as a fixed-width decimal string whose string order is numeric order."""
    return f"{us + _TIME_OFFSET:0{_TIME_DIGITS}d}"


def time_of_key(key: bytes | str) -> int:
    return int(key) - _TIME_OFFSET


# A series point's stream id is its bucket's start in ms from 0001-01-01 (stream ids are
# unsigned; event times go back to year 1).
_SERIES_OFFSET_MS = 62_135_596_800_000


def series_id(t_us: int) -> str:
    """The stream id of the point whose bucket starts at `t_us` (a whole ms)."""
    return f"{-(-t_us // 1000) + _SERIES_OFFSET_MS}-0"


def series_time(stream_id: bytes) -> int:
    """The bucket start (µs) of a point's stream id."""
    return (int(stream_id.partition(b"-")[0]) - _SERIES_OFFSET_MS) * 1000


def shard_of(topic: str, count: int) -> int:
    """The shard (0..count-1) that owns `topic`: a topic's shard is its partition, by the one
    hash `pushsvc.core.partitions` owns."""
    return partition_of(topic, count)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True, slots=True)
class Keys:
    """The names under one prefix."""

    prefix: str

    @property
    def clocks(self) -> str:
        return f"{self.prefix}clocks"

    @property
    def forgotten(self) -> str:
        return f"{self.prefix}forgotten"

    @property
    def history(self) -> str:
        return f"{self.prefix}history"

    @property
    def latest(self) -> str:
        return f"{self.prefix}latest"

    def groups(self, topic: str) -> str:
        """A hash of a grouping topic's live groups: group id → `<epoch> <group JSON>`."""
        return f"{self.prefix}groups:{topic}"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    @property
    def trimmed(self) -> str:
        return f"{self.prefix}trimmed"

    @property
    def updates_channel(self) -> bytes:
        """The channel prefix: a topic's updates go to this plus the topic name."""
        return f"{self.prefix}updates:".encode()

    def updates_pattern(self, topic_prefix: str) -> bytes:
        """The pattern of every topic starting with `topic_prefix` ('' for all)."""
        return f"{glob_escape(self.prefix)}updates:{glob_escape(topic_prefix)}*".encode()

    def idempotency(self, topic: str, key: str) -> str:
        return f"{self.prefix}idem:{topic}/{key}"

    def log(self, shard: tuple[int, int]) -> str:
        return f"{self.prefix}log:{shard[0]}/{shard[1]}"

    def logged(self, shard: tuple[int, int]) -> str:
        return f"{self.prefix}logged:{shard[0]}/{shard[1]}"

    def applied(self, shard: tuple[int, int]) -> str:
        return f"{self.prefix}applied:{shard[0]}/{shard[1]}"

    @property
    def alerts(self) -> str:
        """A hash: alert instance key -> its latest change while pending or firing."""
        return f"{self.prefix}alerts"

    @property
    def alerts_head(self) -> str:
        return f"{self.prefix}alerts_head"

    def series(self, resolution: str, topic: str, group_id: str = "") -> str:
        """A stream: the points of one tier of a topic, or of one of its groups (a topic name
        holds no `|`)."""
        key = f"{self.prefix}series:{resolution}:{topic}"
        return f"{key}|{group_id}" if group_id else key

    def checkpoint(self, topic: str) -> str:
        """A hash: the topic's durable state at a log position (`core/checkpoint.py`)."""
        return f"{self.prefix}checkpoint:{topic}"

    def checkpoints(self, shard: tuple[int, int]) -> str:
        """A set: the shard's topics that have a checkpoint (what a rebuild reads)."""
        return f"{self.prefix}checkpoints:{shard[0]}/{shard[1]}"

    def rules(self, shard: tuple[int, int]) -> str:
        """The digest of the rules the shard's active aggregator computes with."""
        return f"{self.prefix}rules:{shard[0]}/{shard[1]}"

    def lease(self, shard: tuple[int, int]) -> str:
        return f"{self.prefix}lease:{shard[0]}/{shard[1]}"

    @property
    def ingest_channel(self) -> bytes:
        """Producers on Redis publish a topic's events to this plus the topic name."""
        return f"{self.prefix}ingest:".encode()

    @property
    def bridge_lease(self) -> str:
        return f"{self.prefix}lease:bridge"

    @property
    def derive_lease(self) -> str:
        """The lease of the one process that computes derived metrics (`[[derive]]`)."""
        return f"{self.prefix}lease:derive"

    @property
    def bridged(self) -> str:
        """A hash: `events` appended by the bridge, `rejected:{reason}` messages refused."""
        return f"{self.prefix}bridged"
