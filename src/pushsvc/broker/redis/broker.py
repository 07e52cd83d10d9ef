"""The Redis broker: any number of processes on any number of hosts share one Redis.

What lives where is in `keys.py`. A POST appends its batch to the event log of its topic's
shard with one script (`lua/append_events.lua`): the lateness rule is decided there,
atomically against the topic clock, and the 202 is given only once the batch is in the
log (and, with `min_replicas`, on that many replicas: `WAIT`). The shard's aggregator
(`pushsvc.aggregate.shard_runner`) applies the log and publishes updates with one script per batch
(`lua/publish_updates.lua`): numbering, history, latest, "applied up to" and PUBLISH
happen atomically, so ids are in delivery order across publishers and every logged event
yields exactly one update. The history is trimmed to exactly `history` entries
(`MAXLEN =`), and the script records the newest trimmed id itself (XINFO's
`max-deleted-entry-id` would need Redis 7; this also serves 6.2).

Each process has ONE pub/sub connection (`pubsub.py`), subscribed only to the topics its
local streams watch (`UpdatesFeed.watch`). Delivery over it is at most once: when it is
lost, the feed's `on_reset` runs and streams resume from the history.

Needs Redis >= 6.2 (exclusive XRANGE, `XTRIM MAXLEN =`, `XADD MINID`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.exceptions import ResponseError

from pushsvc.broker.base import (
    Appended,
    Applied,
    BridgeStats,
    HistoryPage,
    SeriesPage,
    ShardLag,
    TopicStats,
    UpdatesHandler,
)
from pushsvc.broker.lua import source
from pushsvc.broker.redis.connect import pooled_client, single_client
from pushsvc.broker.redis.feed import RedisUpdatesFeed
from pushsvc.broker.redis.history import HistoryReader
from pushsvc.broker.redis.keys import (
    Keys,
    series_id,
    series_time,
    shard_of,
    time_key,
    time_of_key,
)
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.lease_group import RedisLeaseGroup
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.broker.redis.log_wait import StreamsWaiter
from pushsvc.broker.redis.memory_policy import RedisMemory, read_memory
from pushsvc.broker.redis.pubsub import PubSubReader
from pushsvc.broker.redis.script_replies import AppendCode, AppendReply, PublishReply
from pushsvc.broker.redis.wire import (
    encode_events,
    stream_position,
    unavailable,
    unpack,
)
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency, key_reused
from pushsvc.core.lateness import check_lateness
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId, new_epoch
from pushsvc.errors import BrokerUnavailable, ReplicasUnconfirmed, RequestError, TooManyTopics

log = logging.getLogger(__name__)

# A tier's stream outlives its retention by this much after its newest point.
_SERIES_TTL_MARGIN_MS = 60_000


class RedisBroker:
    """Broker on a shared Redis (redis-py >= 5; works with and without gevent patching)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pushsvc:",
        history: int = 10_000,
        shards: int = 1,
        max_topics: int = 100_000,
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
        socket_timeout: float = 5.0,
        subscribe_timeout: float = 5.0,
        ping_interval: float = 15.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        if max_topics < 1:
            raise ValueError(f"max_topics must be at least 1, got {max_topics}")
        self.max_topics = max_topics
        self.url = url
        self.keys = Keys(prefix)
        self.shards = shards
        self._history = history
        self._min_replicas = min_replicas
        self._replica_timeout_ms = replica_timeout_ms
        self._client = pooled_client(
            url, max_connections=max_connections, socket_timeout=socket_timeout
        )
        self._append = self._client.register_script(source("append_events"))
        self._publish = self._client.register_script(source("publish_updates"))
        self._history_reader = HistoryReader(self._client, self.keys)
        self._reader_options = {
            "subscribe_timeout": subscribe_timeout,
            "ping_interval": ping_interval,
            "min_backoff": min_backoff,
            "max_backoff": max_backoff,
        }
        self._socket_timeout = socket_timeout
        self._feeds: list[RedisUpdatesFeed] = []
        self._closed = False

    # -- the shared log, for the aggregators ----------------------------------

    def event_log(self, shard: tuple[int, int]) -> RedisEventLog:
        """See `LogBroker.event_log`: on this broker's pool, shared by every partition of the
        process (nothing blocks on it: `log_waiter` waits for new entries)."""
        return RedisEventLog(self._client, self.keys, shard, socket_timeout=self._socket_timeout)

    def lease(self, shard: tuple[int, int], *, ttl_us: int) -> RedisLease:
        """See `LogBroker.lease`."""
        return RedisLease(self.url, self.keys.lease(shard), ttl_us=ttl_us)

    def log_waiter(self) -> StreamsWaiter:
        """See `LogBroker.log_waiter`: one connection, one XREAD over every log waited on."""
        return StreamsWaiter(self.url, self.keys, socket_timeout=self._socket_timeout)

    def lease_group(self, *, ttl_us: int) -> RedisLeaseGroup:
        """See `LogBroker.lease_group`: one connection for the membership and every lease."""
        return RedisLeaseGroup(self.url, self.keys, self.shards, ttl_us=ttl_us)

    # -- producer side -----------------------------------------------------

    def append_events(
        self,
        topic: str,
        events: Sequence[Event],
        *,
        lateness_us: int,
        idempotency: Idempotency | None = None,
        fence: tuple[str, str] | None = None,
    ) -> Appended:
        """See `Broker.append_events`. With `fence` (a lease key and a token), the script
        refuses (Fenced) unless the token holds the lease.

        A replay is answered 202 whatever the replicas say: its batch was logged by the
        first request (which may have been answered `replicas_unconfirmed`), and this one
        wrote nothing for `WAIT` to confirm."""
        self._check_open()
        shard = (shard_of(topic, self.shards), self.shards)
        keys = [self.keys.log(shard), self.keys.clocks, self.keys.logged(shard)]
        times = "".join(
            time_key(event.ts_us) + time_key(event.ts_us + lateness_us) for event in events
        )
        args: list[str | int | bytes] = [topic, encode_events(events), times, self.max_topics]
        if fence is not None:
            keys.append(fence[0])
            args.append(fence[1])
        else:
            args.append("")
        if idempotency is not None:
            keys.append(self.keys.idempotency(topic, idempotency.key))
            args += [idempotency.digest, len(events), idempotency.window_ms]
        else:
            args += ["", "", 0]
        with unavailable("append_events"):
            if self._min_replicas:
                with self._client.pipeline(transaction=False) as pipe:
                    self._append(keys=keys, args=args, client=pipe)
                    pipe.wait(self._min_replicas, self._replica_timeout_ms)
                    raw, replicas = pipe.execute()
            else:
                raw, replicas = self._append(keys=keys, args=args), None
        reply = AppendReply.decode(raw)
        if reply.code is AppendCode.LATE:
            _raise_late(reply, events, lateness_us)
        if reply.code is AppendCode.TOO_MANY_TOPICS:
            raise TooManyTopics.at(self.max_topics)
        if reply.code is AppendCode.KEY_REUSED:
            raise key_reused()
        if reply.code is AppendCode.REPLAYED:
            assert reply.replayed_events is not None
            return Appended(reply.replayed_events, replayed=True)
        if replicas is not None and replicas < self._min_replicas:
            raise ReplicasUnconfirmed(
                f"the events reached {replicas} of {self._min_replicas} replicas in time; "
                "they will be applied unless the primary is lost (a retry with the same "
                "Idempotency-Key cannot duplicate them)"
            )
        return Appended(len(events))

    # -- updates -------------------------------------------------------------

    def publish_updates(
        self,
        drafts: Sequence[UpdateDraft],
        *,
        applied: Applied | None = None,
        fence: str | None = None,
    ) -> list[Update]:
        """See `Broker.publish_updates`: with `fence`, the script refuses (Fenced) unless the
        shard's lease is still under that token, refuses (PublishedAlready) when the shard's
        log is recorded as published past `applied.after`, and records `applied` atomically
        with the updates."""
        self._check_open()
        if not drafts and applied is None:
            return []
        shard = applied.shard if applied is not None else (0, 1)
        keys = [
            self.keys.epoch,
            self.keys.history,
            self.keys.latest,
            self.keys.trimmed,
            self.keys.applied(shard),
            self.keys.lease(shard),
            self.keys.alerts,
            self.keys.alerts_head,
        ]
        args: list[str | int | bytes] = [
            new_epoch(),
            self._history,
            self.keys.updates_channel,
            fence or "",
            applied.entry_id if applied is not None else "",
            applied.entries if applied is not None else 0,
            self.keys.groups(""),
            len(drafts),
            0,
            0,
            applied.after if applied is not None else "",
        ]
        points: list[str | int | bytes] = []
        instances: list[str | int | bytes] = []
        for place, d in enumerate(drafts, 1):
            args += [d.topic, d.clock_us, d.body]
            if (write := d.series) is not None:
                points += [
                    place,
                    self.keys.series(write.resolution, d.topic, write.group_id),
                    series_id(write.t_us),
                    write.packed,
                    series_id(write.keep_from_us),
                    # Kept that long after its newest point, also once its topic is gone.
                    (d.clock_us - write.keep_from_us) // 1000 + _SERIES_TTL_MARGIN_MS,
                ]
            if d.instance is not None:
                instances += [place, d.instance[0], d.instance[1]]
        args[8] = len(points) // 6
        args[9] = len(instances) // 3
        args += points
        args += instances
        for d in drafts:
            for gid, group in d.groups:
                args += [d.topic, gid, group]
            for gid in d.forgotten:
                args += [d.topic, gid, ""]
        with unavailable("publish_updates"):
            reply = PublishReply.decode(self._publish(keys=keys, args=args))
        return [
            Update.of(d, UpdateId.of_stream_id(reply.epoch, i))
            for d, i in zip(drafts, reply.stream_ids, strict=True)
            if i  # '': a point its series held already
        ]

    def consume_updates(
        self, handler: UpdatesHandler, *, on_reset: Callable[[], None] = lambda: None
    ) -> RedisUpdatesFeed:
        self._check_open()
        channel = self.keys.updates_channel

        def on_messages(messages: list[tuple[bytes, bytes]]) -> None:
            updates: list[Update] = []
            for name, data in messages:
                try:
                    topic = name[len(channel) :].decode()
                    updates.extend(unpack(topic, packed) for packed in data.split(b"\n"))
                except ValueError:
                    log.warning("ignoring a malformed update message on %r", name)
            if updates:
                handler(updates)

        reader = PubSubReader(
            # No socket timeout: the reader polls with its own, and finds dead connections
            # with a PING after `ping_interval` of silence (see pubsub._next_message).
            single_client(self.url, socket_timeout=None),
            name=f"pushsvc-redis-reader-{self.keys.prefix}",
            on_messages=on_messages,
            on_reset=on_reset,
            **self._reader_options,
        )
        feed = RedisUpdatesFeed(reader, self.keys)
        self._feeds.append(feed)
        return feed

    # -- history -----------------------------------------------------------

    def replay(self, after: UpdateId, match: TopicMatcher) -> list[Update] | None:
        self._check_open()
        keys = self.keys
        with unavailable("replay"), self._client.pipeline(transaction=True) as pipe:
            pipe.get(keys.epoch)
            pipe.get(keys.trimmed)
            pipe.xrevrange(keys.history, count=1)
            pipe.xrange(keys.history, min=f"({after.ms}-{after.seq}")
            current, trimmed, newest, entries = pipe.execute()
        if current is None or current.decode() != after.epoch or not newest:
            return None  # another history (Redis restarted empty, or a stranger's id)
        if after.position > stream_position(newest[0][0]):
            return None  # never issued
        if trimmed is not None and after.position < stream_position(trimmed):
            return None  # an update after `after` was trimmed
        replayed = []
        for stream_id, fields in entries:
            topic = fields[b"t"].decode()
            if match(topic):
                update_id = UpdateId.of_stream_id(after.epoch, stream_id)
                replayed.append(Update.numbered(topic, update_id, int(fields[b"c"]), fields[b"b"]))
        return replayed

    def history(
        self,
        topic: str,
        *,
        after: UpdateId | None = None,
        since_us: int | None = None,
        limit: int,
    ) -> HistoryPage:
        """See `Broker.history` and `history.py` (XREVRANGE/XRANGE in chunks, by topic)."""
        self._check_open()
        with unavailable("history"):
            return self._history_reader.read(topic, after=after, since_us=since_us, limit=limit)

    def latest(self, match: TopicMatcher) -> dict[str, Update]:
        self._check_open()
        with unavailable("latest"):
            if match.exact:
                names = sorted(match.names)
                values = cast(list[bytes | None], self._client.hmget(self.keys.latest, names))
                found = zip(names, values, strict=True)
                return {topic: unpack(topic, value) for topic, value in found if value}
            packed = cast(dict[bytes, bytes], self._client.hgetall(self.keys.latest))
        return {
            topic: unpack(topic, value)
            for topic, value in ((raw.decode(), value) for raw, value in packed.items())
            if match(topic)
        }

    def series(
        self,
        topic: str,
        *,
        resolution: str,
        group_id: str = "",
        since_us: int,
        until_us: int,
        retention_us: int,
        limit: int,
    ) -> SeriesPage:
        self._check_open()
        if until_us <= since_us:
            return SeriesPage([], False)
        key = self.keys.series(resolution, topic, group_id)
        with unavailable("series"), self._client.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.clocks, topic)
            pipe.xrange(key, min=series_id(since_us), max="(" + series_id(until_us))
            clock, entries = pipe.execute()
        points = [(series_time(i), fields[b"p"]) for i, fields in entries]
        if clock is not None:
            kept_from = time_of_key(clock) - retention_us + 1
            points = [p for p in points if p[0] >= kept_from]
        return SeriesPage(points[:limit], len(points) > limit)

    def active_alerts(self) -> list[bytes]:
        self._check_open()
        with unavailable("active_alerts"):
            return cast(list[bytes], self._client.hvals(self.keys.alerts))

    def latest_groups(self, topics: Sequence[str]) -> dict[str, list[bytes]]:
        self._check_open()
        if not topics:
            return {}
        with unavailable("latest_groups"):
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.keys.epoch)
            for topic in topics:
                pipe.hvals(self.keys.groups(topic))
            epoch, *kept = pipe.execute()
        if epoch is None:
            return {}
        # Groups written in an earlier epoch belong to a lost history: not live.
        mark = epoch + b" "
        found = {}
        for topic, values in zip(topics, kept, strict=True):
            groups = [v[len(mark) :] for v in values if v.startswith(mark)]
            if groups:
                found[topic] = groups
        return found

    # -- operations ----------------------------------------------------------

    def ping(self) -> None:
        self._check_open()
        with unavailable("ping"):
            self._client.ping()

    def memory(self) -> RedisMemory:
        """Redis's eviction policy and memory use (`memory_policy.py`)."""
        self._check_open()
        with unavailable("memory"):
            return read_memory(self._client)

    def is_cluster_node(self) -> bool:
        """Whether the Redis this broker reaches runs in cluster mode (`INFO cluster`); False
        where it will not say."""
        self._check_open()
        with unavailable("info cluster"):
            try:
                info: dict[str, Any] = self._client.info("cluster")
            except ResponseError:  # INFO refused (renamed or not permitted)
                return False
        return bool(info.get("cluster_enabled"))

    def count_bridged(self, events: int, rejected: dict[str, int]) -> None:
        """Add to the bridge's counts (see `bridge_stats`)."""
        if not events and not rejected:
            return
        with unavailable("count_bridged"), self._client.pipeline(transaction=False) as pipe:
            if events:
                pipe.hincrby(self.keys.bridged, "events", events)
            for reason, count in rejected.items():
                pipe.hincrby(self.keys.bridged, f"rejected:{reason}", count)
            pipe.execute()

    def bridge_stats(self) -> BridgeStats | None:
        self._check_open()
        with unavailable("bridge_stats"), self._client.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.bridge_lease)
            pipe.hgetall(self.keys.bridged)
            active, counts = pipe.execute()
        rejected = {
            key.decode()[len("rejected:") :]: int(value)
            for key, value in counts.items()
            if key.startswith(b"rejected:")
        }
        return BridgeStats(bool(active), int(counts.get(b"events", 0)), rejected)

    def topic_stats(self) -> TopicStats:
        with unavailable("topic_stats"), self._client.pipeline(transaction=False) as pipe:
            pipe.hlen(self.keys.clocks)
            pipe.get(self.keys.forgotten)
            live, forgotten = pipe.execute()
        return TopicStats(int(live), int(forgotten or 0))

    def lag(self) -> list[ShardLag]:
        """Per shard: entries logged but not applied, the age of the oldest, and whether an
        aggregator holds the shard's lease."""
        self._check_open()
        shards = [(i, self.shards) for i in range(self.shards)]
        with unavailable("lag"), self._client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.get(self.keys.logged(shard))
                pipe.hmget(self.keys.applied(shard), ["id", "n"])
                pipe.exists(self.keys.lease(shard))
                pipe.get(self.keys.rules(shard))
            replies = pipe.execute()
        lags = []
        now_ms = time.time() * 1000
        for index, shard in enumerate(shards):
            logged, (applied_id, applied_n), leased, digest = replies[4 * index : 4 * index + 4]
            entries = max(0, int(logged or 0) - int(applied_n or 0))
            oldest_age_s = None
            if entries:
                start = b"(" + applied_id if applied_id else b"-"
                with unavailable("lag"):
                    first: Any = self._client.xrange(self.keys.log(shard), min=start, count=1)
                if first:
                    oldest_age_s = max(0.0, (now_ms - stream_position(first[0][0])[0]) / 1000)
            rules = digest.decode() if digest is not None else None
            lags.append(ShardLag(shard, entries, oldest_age_s, bool(leased), rules))
        return lags

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for feed in self._feeds:
            feed.close()
        self._client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")


def _raise_late(reply: AppendReply, events: Sequence[Event], lateness_us: int) -> None:
    """The script found a late event: raise the one rule's own error for it."""
    index, clock = reply.late_index, reply.topic_clock_us
    assert index is not None and clock is not None
    try:
        check_lateness(clock, [events[index]], lateness_us)
    except RequestError as late:
        late.index = index
        raise
    # The script and pushsvc.core.lateness disagree: a bug, never a silent accept.
    raise AssertionError(f"append script judged event {index} late at T={clock}; Python did not")
