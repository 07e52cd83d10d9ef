"""Where the Redis broker keeps things, and how it writes times so Lua compares them exactly.

Topics map to `partitions` partitions (`pushsvc.core.partitions`). Every key of partition `i`
starts with `{prefix}{{tag}}:`, where `tag` is the partition's hash tag
(`pushsvc.broker.redis.slots`): every key of one partition hashes to one Redis Cluster slot,
so every script touches one slot, and the same layout serves one Redis, Sentinel and Cluster.
Under `{prefix}{{tag}}:` (written `P:` below):

    P:log               stream  the partition's event log: k=e (t=topic, v=events), k=t
                                (v=ticks), k=f (v=topics forgotten) or k=d (t=topic
                                deleted); what a POST appends before its 202 (an
                                entry per `ENTRY_EVENTS` events of its batch)
    P:logged            counter entries ever appended to that log
    P:applied           hash    id (the last entry applied) and n (entries applied), written
                                atomically with the updates they produced
    P:lease             string  the token of the partition's active aggregator
    P:lease:taken       string  the token it was last taken under (kept when the lease
                                expires: a holder that finds the lease free again knows
                                whether another held it meanwhile)
    P:clocks            hash    topic -> T, the largest event time or tick clock logged; its
                                fields are the partition's topics kept (`--max-topics`)
    P:forgotten         counter idle topics forgotten (`--topic-ttl`), for /metrics
    P:deleted           hash    topic -> the log entry of its newest deletion (`DELETE
                                /topics/{t}`): a round of idle ticks proposed before it is
                                not logged (it would bring the deleted clock back)
    P:u:{topic}         channel runs of updates, `<id> <clock_us> <body>` per line
    P:all               channel on a Redis Cluster: every run, after its topic and a newline
    P:wake              channel on a Redis Cluster: an empty message after each append
    P:history           stream  the newest `history` updates (more while `P:holds` names
                                older ones), at most `history_bytes`
                                of bodies whatever holds them: t=topic, c=clock_us, b=body,
                                k=kind, p=the topic's previous entry, g=the history's
                                previous entry (once trimmed: the newest trimmed id), n=its
                                number (one more than the entry before it), o=the bytes of
                                bodies appended to the epoch's history before this one
    P:history:start     string  the `o` of the history's oldest entry (what it holds is the
                                newest entry's `o` and body past it)
    P:latest            hash    topic -> `<id> <clock_us> <body>` of its latest update
    P:names             zset    latest's topics, score 0, written with it: listings read a
                                page of names by ZRANGE BYLEX, not the whole hash
    P:groups:{topic}    hash    a grouping topic's live groups: group id -> `<epoch> <JSON>`
    P:alerts            hash    alert instance -> its latest change, while active (the
                                instances of the partition's topics)
    P:alert_keys        zset    alerts' instance keys, score 0, written with it: /alerts
                                reads a page of keys by ZRANGE BYLEX
    P:alerts_head       string  `<epoch>:<stream id>` of the partition's newest alert change
    P:alert_changes     stream  the partition's alert changes (c=clock_us, b=body) under their
                                ids in `history`, kept the longest series retention (by id, i.e.
                                Redis's clock) whatever `history` keeps, trimmed as they come
    P:alert_changes:trimmed  string  stream id of the newest alert change trimmed from it
    P:epoch             string  the epoch of the history (ids are `{epoch}:{stream id}`; the
                                epoch names its partition, `pushsvc.core.updates`)
    P:trimmed           string  stream id of the newest update trimmed from the history
    P:holds             hash    reader -> `<epoch or *> <stream id> <until ms>`: the history
                                is kept after that id for the reader, until then
                                (`SessionKeeper.hold_history`, the sessionizer)
    P:idem:{topic}/{key} string the digest and answer of the POST that logged a batch with
                                this Idempotency-Key; expires after the window
    P:idem_order        zset    the partition's live idempotency keys' names, scored by when
                                each expires (ms): what bounds their number (the soonest
                                to expire are deleted early past the bound); expiring with
                                the longest-lived of them
    P:series:{res}:{topic}[|{group id}]  stream  closed buckets of one series tier: id
                                `<bucket start ms>-0`, p=packed point; trimmed to the tier's
                                retention, expiring that long after its newest point
    P:corrected:{res}:{topic}[|{group id}]  zset  the tier's corrected points (a late event
                                amended a published bucket): scored by the stream id's ms,
                                `<revision, 8 hex digits><packed point>`, laid over the
                                stream's on a read; kept and trimmed as the stream is
    P:serieskeys:{topic} set    the topic's series keys (of every tier, its groups' too), what
                                a deletion drops; expiring with the longest-kept of them
    P:checkpoint:{topic} hash   the topic's durable state at a log position
    P:checkpoints       set     the partition's topics that have a checkpoint
    P:rules             string  the digest of the rules its active aggregator computes with
    P:derived           hash    derived topic -> T, the newest boundary its deriver evaluated
                                (idle ticks move the topic's clock no further than that
                                lets the next boundary in)
    P:sessions          hash    session topic -> its sessionizer's state: the cursor it read
                                its sources to and the sessions open then (`[[session]]`)
    P:fence:{name}      string  the token of lease `name`'s holder (the bridge), whose appends
                                the append script fences
    P:presence          set     the web processes with presence entries here (a directory)
    P:presence:{proc}   hash    topic -> `[streams, [subjects]]` of web process `proc`'s
                                streams of the partition's topics, expiring
    P:presence:{proc}:patterns  hash  pattern watch -> the same, of `proc`'s pattern streams
                                (in every partition), expiring
    P:msubs             set     (first partition only) the web processes with Mercure
                                subscription entries (a directory)
    P:msubs:{proc}      hash    (first partition only) subscription path -> its document,
                                of `proc`'s active Mercure subscriptions, expiring

Outside the partitions, each key alone in its slot:

    {prefix}partitions  string  the partition count the data is laid out for (fixed for the
                                life of the data: a process with another count stops)
    {prefix}ingest:{topic} channel  producers on Redis (PUBLISH, not sharded)
    {prefix}{bridge}:lease[:taken]  the Redis bridge's lease
    {prefix}{derive}:lease[:taken]  the lease of the process that computes `[[derive]]` rules
    {prefix}{session}:lease[:taken]  the lease of the process that assembles `[[session]]` rules
    {prefix}bridged     hash    the bridge's counts
    {prefix}admitting   string  held while a new topic is counted and admitted
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from pushsvc.broker.redis.slots import partition_tags
from pushsvc.core.partitions import DEFAULT_PARTITIONS, partition_of

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
    """The stream id of the point whose bucket starts at `t_us` (a whole ms); as a range's
    bound, any time (one before year 1 bounds from the first point).

    A stream id is above `0-0`, which XADD refuses: the bucket that starts at
    0001-01-01T00:00:00Z (every tier's first: year 1 starts on a whole day) takes `0-1`, so
    that an event in it closes into a point like any other, rather than failing the publish
    script that carries it."""
    ms = -(-t_us // 1000) + _SERIES_OFFSET_MS
    return f"{ms}-0" if ms > 0 else "0-1"


def series_time(stream_id: bytes) -> int:
    """The bucket start (µs) of a point's stream id."""
    return (int(stream_id.partition(b"-")[0]) - _SERIES_OFFSET_MS) * 1000


def topic_of_channel(channel: bytes) -> str:
    """The topic of an updates channel (`PartitionKeys.updates_channel` + topic); ValueError
    for another channel. A prefix holds no brace, so the first `}:u:` ends the tag."""
    _, found, topic = channel.partition(b"}:u:")
    if not found:
        raise ValueError(f"not an updates channel: {channel[:64]!r}")
    return topic.decode()


def covering_channel(channel: bytes) -> bytes | None:
    """The partition's channel of every update (`PartitionKeys.all_updates_channel`) that also
    carries `channel`'s messages, for a topic's updates channel; else None."""
    head, found, _ = channel.partition(b"}:u:")
    return head + b"}:all" if found else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


#: Keys of the layout before partitions (one history, one clock hash for every topic): a
#: Redis holding any of them holds data this version cannot read.
UNPARTITIONED = ("history", "clocks", "epoch", "latest")


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The names of one partition: every one carries the partition's hash tag."""

    index: int
    base: str
    """`{prefix}{{tag}}:`, what every name of the partition starts with."""

    @property
    def log(self) -> str:
        return f"{self.base}log"

    @property
    def logged(self) -> str:
        return f"{self.base}logged"

    @property
    def applied(self) -> str:
        return f"{self.base}applied"

    @property
    def lease(self) -> str:
        return f"{self.base}lease"

    @property
    def clocks(self) -> str:
        return f"{self.base}clocks"

    @property
    def forgotten(self) -> str:
        return f"{self.base}forgotten"

    @property
    def deleted(self) -> str:
        """A hash: topic -> the log entry of its newest deletion."""
        return f"{self.base}deleted"

    @property
    def history(self) -> str:
        return f"{self.base}history"

    @property
    def history_start(self) -> str:
        """A string: the byte offset at which the history's oldest entry starts (`o`)."""
        return f"{self.base}history:start"

    @property
    def latest(self) -> str:
        return f"{self.base}latest"

    @property
    def alert_keys(self) -> str:
        """A sorted set: the instance keys of `alerts`, score 0 (ordered by key)."""
        return f"{self.base}alert_keys"

    @property
    def names(self) -> str:
        """A sorted set: the topics of `latest`, score 0 (ordered by name)."""
        return f"{self.base}names"

    @property
    def epoch(self) -> str:
        return f"{self.base}epoch"

    @property
    def trimmed(self) -> str:
        return f"{self.base}trimmed"

    @property
    def holds(self) -> str:
        """A hash: reader -> its hold on the history (`publish_updates.lua` reads it)."""
        return f"{self.base}holds"

    @property
    def alerts(self) -> str:
        """A hash: alert instance key -> its latest change while pending or firing."""
        return f"{self.base}alerts"

    @property
    def alerts_head(self) -> str:
        return f"{self.base}alerts_head"

    @property
    def alert_changes(self) -> str:
        """A stream: the partition's alert changes, kept for their own retention."""
        return f"{self.base}alert_changes"

    @property
    def alert_changes_trimmed(self) -> str:
        return f"{self.base}alert_changes:trimmed"

    @property
    def checkpoints(self) -> str:
        """A set: the partition's topics that have a checkpoint (what a rebuild reads)."""
        return f"{self.base}checkpoints"

    @property
    def rules(self) -> str:
        """The digest of the rules the partition's active aggregator computes with."""
        return f"{self.base}rules"

    @property
    def derived(self) -> str:
        """A hash: derived topic -> the newest boundary its deriver evaluated (`time_key`)."""
        return f"{self.base}derived"

    @property
    def sessions(self) -> str:
        """A hash: session topic -> its sessionizer's state (`pushsvc.aggregate.sessionize`)."""
        return f"{self.base}sessions"

    @property
    def updates_channel(self) -> bytes:
        """The channel prefix: a topic's updates go to this plus the topic name."""
        return f"{self.base}u:".encode()

    @property
    def wake_channel(self) -> bytes:
        """On a Redis Cluster: an empty message after each append, to wake the partition's
        aggregator (`wake_waiter.py`)."""
        return f"{self.base}wake".encode()

    @property
    def all_updates_channel(self) -> bytes:
        """On a Redis Cluster, where there are no pattern subscriptions: every update of the
        partition, each run prefixed with its topic and a newline (`prefix.*` streams)."""
        return f"{self.base}all".encode()

    def groups(self, topic: str) -> str:
        """A hash of a grouping topic's live groups: group id → `<epoch> <group JSON>`."""
        return f"{self.base}groups:{topic}"

    def idempotency(self, topic: str, key: str) -> str:
        # A topic has no `/`, so the first one ends it.
        return f"{self.base}idem:{topic}/{key}"

    @property
    def idempotency_order(self) -> str:
        """A sorted set: the names of the partition's idempotency keys by expiry (ms)."""
        return f"{self.base}idem_order"

    def series(self, resolution: str, topic: str, group_id: str = "") -> str:
        """A stream: the points of one tier of a topic, or of one of its groups (a topic name
        holds no `|`)."""
        key = f"{self.base}series:{resolution}:{topic}"
        return f"{key}|{group_id}" if group_id else key

    def corrected(self, resolution: str, topic: str, group_id: str = "") -> str:
        """A sorted set beside a tier's stream (`series`): its corrected points, scored by
        their stream id's milliseconds, each the revision (8 hex digits) then the stored form.
        A stream entry cannot be replaced in place (XADD takes ids above the top only), so a
        read lays these over the stream's."""
        key = f"{self.base}corrected:{resolution}:{topic}"
        return f"{key}|{group_id}" if group_id else key

    def series_keys(self, topic: str) -> str:
        """A set: the names of every series stream of `topic` and its groups (`series`)."""
        return f"{self.base}serieskeys:{topic}"

    def fence(self, name: str) -> str:
        """The token of the holder of lease `name` (the Redis bridge's), copied into every
        partition when it takes the lease, so that its appends are fenced within one slot."""
        return f"{self.base}fence:{name}"

    def checkpoint(self, topic: str) -> str:
        """A hash: the topic's durable state at a log position (`core/checkpoint.py`)."""
        return f"{self.base}checkpoint:{topic}"

    @property
    def presence(self) -> str:
        """A set: the web processes with presence entries in the partition (a directory)."""
        return f"{self.base}presence"

    def presence_names(self, proc: str) -> str:
        """A hash: topic -> `[streams, [subjects]]` of web process `proc`'s streams of the
        partition's topics named outright (`pushsvc.broker.redis.presence`), expiring."""
        return f"{self.base}presence:{proc}"

    def presence_patterns(self, proc: str) -> str:
        """A hash: pattern watch -> `[streams, [subjects]]` of `proc`'s pattern streams, the
        same in every partition, expiring."""
        return f"{self.base}presence:{proc}:patterns"

    @property
    def mercure_subscribers(self) -> str:
        """A set: the web processes with Mercure subscription entries (a directory; kept in
        the first partition only)."""
        return f"{self.base}msubs"

    def mercure_subscriptions(self, proc: str) -> str:
        """A hash: subscription path -> its document, of web process `proc`'s active Mercure
        subscriptions (`pushsvc.broker.redis.mercure_subscriptions`), expiring."""
        return f"{self.base}msubs:{proc}"


@dataclass(frozen=True, slots=True)
class Keys:
    """The names under one prefix, for `partitions` partitions."""

    prefix: str
    partitions: int = DEFAULT_PARTITIONS
    _each: tuple[PartitionKeys, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            # Redis Cluster hashes the first {…} of a key: a tag in the prefix would put every
            # partition in the prefix's one slot.
            raise ValueError(
                f"the key prefix {self.prefix!r} holds a brace; pushsvc puts each partition's "
                "hash tag in its keys itself: use a prefix without {}"
            )
        tags = partition_tags(self.partitions)
        each = tuple(PartitionKeys(i, f"{self.prefix}{{{tag}}}:") for i, tag in enumerate(tags))
        object.__setattr__(self, "_each", each)

    def partition(self, index: int) -> PartitionKeys:
        return self._each[index]

    def of(self, topic: str) -> PartitionKeys:
        """The keys of `topic`'s partition."""
        return self._each[partition_of(topic, self.partitions)]

    def __iter__(self) -> Iterator[PartitionKeys]:
        return iter(self._each)

    def shard(self, shard: tuple[int, int]) -> PartitionKeys:
        """The keys of partition `shard[0]`; `shard[1]` must be this layout's count."""
        if shard[1] != self.partitions:
            raise ValueError(f"shard {shard} of a layout of {self.partitions} partitions")
        return self._each[shard[0]]

    def updates_pattern(self, topic_prefix: str) -> bytes:
        """The pattern of every topic starting with `topic_prefix` ('' for all), in every
        partition."""
        return f"{glob_escape(self.prefix)}{{*}}:u:{glob_escape(topic_prefix)}*".encode()

    @property
    def layout(self) -> str:
        """The partition count the data is laid out for."""
        return f"{self.prefix}partitions"

    def unpartitioned(self) -> list[str]:
        """Keys that only the layout before partitions wrote."""
        return [f"{self.prefix}{name}" for name in UNPARTITIONED]

    @property
    def admitting(self) -> str:
        """The lock under which a new topic is counted and admitted (`--max-topics`)."""
        return f"{self.prefix}admitting"

    @property
    def ingest_channel(self) -> bytes:
        """Producers on Redis publish a topic's events to this plus the topic name."""
        return f"{self.prefix}ingest:".encode()

    @property
    def bridge_lease(self) -> str:
        # Its own tag: the lease script also touches `…:taken`, which must share its slot.
        return f"{self.prefix}{{bridge}}:lease"

    @property
    def bridge_connection(self) -> str:
        """The name (CLIENT SETNAME) of the bridge's pub/sub connection on a Redis Cluster,
        where `pushsvc publish --redis-url` looks for it to PUBLISH on its node."""
        return f"pushsvc-bridge-{self.prefix}"

    @property
    def derive_lease(self) -> str:
        """The lease of the one process that computes derived metrics (`[[derive]]`), under a
        tag of its own like the bridge's."""
        return f"{self.prefix}{{derive}}:lease"

    @property
    def session_lease(self) -> str:
        """The lease of the one process that assembles sessions (`[[session]]`), under a tag
        of its own like the deriver's."""
        return f"{self.prefix}{{session}}:lease"

    @property
    def bridged(self) -> str:
        """A hash: `events` appended by the bridge, `rejected:{reason}` messages refused."""
        return f"{self.prefix}bridged"

    @property
    def aggregators(self) -> str:
        """A sorted set: the live `pushsvc aggregate` processes (their member ids), each scored
        by when it expires (ms, Redis's clock) unless it renews; they share the partitions."""
        return f"{self.prefix}aggregators"
