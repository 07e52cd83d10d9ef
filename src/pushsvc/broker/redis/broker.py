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

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from pushsvc.broker.base import (
    DEFAULT_ALERT_RETENTION_US,
    DEFAULT_HISTORY_BYTES,
    HOLD_TTL_MS,
    AlertsPage,
    Appended,
    Applied,
    BridgeStats,
    HistoryPage,
    LatestPage,
    PartitionPage,
    Replayed,
    SeriesPage,
    ShardLag,
    TopicAppend,
    TopicStats,
    UpdatesHandler,
    append_alone,
)
from pushsvc.broker.redis import operations
from pushsvc.broker.redis.admission import admitting
from pushsvc.broker.redis.append_args import ADMIT_ARG, append_call, appended, resplit
from pushsvc.broker.redis.append_pipeline import ALONE_ERRORS, append_failure, append_replies
from pushsvc.broker.redis.cluster_view import shared_view
from pushsvc.broker.redis.connect import pooled_client, single_client
from pushsvc.broker.redis.feed import RedisUpdatesFeed, updates_in
from pushsvc.broker.redis.history import HistoryReader
from pushsvc.broker.redis.keys import (
    Keys,
    covering_channel,
    series_id,
    time_key,
    time_of_key,
)
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.lease_group import RedisLeaseGroup
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.broker.redis.log_wait import StreamsWaiter
from pushsvc.broker.redis.memory_policy import RedisMemory, read_memory
from pushsvc.broker.redis.names import TopicNames
from pushsvc.broker.redis.publish_script import PublishScript
from pushsvc.broker.redis.pubsub import PubSubReader
from pushsvc.broker.redis.redirects import learn_topology, on_slot_owner
from pushsvc.broker.redis.replay import read_page, replay_many, replay_of
from pushsvc.broker.redis.replication import read_replicas_online
from pushsvc.broker.redis.script_replies import AppendCode, AppendReply
from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.redis.series_points import series_points
from pushsvc.broker.redis.sharded_pubsub import ShardedPubSubReader
from pushsvc.broker.redis.url import cluster_credentials, is_cluster, is_tls
from pushsvc.broker.redis.url import redact_url as redact
from pushsvc.broker.redis.wake_waiter import WakeWaiter
from pushsvc.broker.redis.wire import (
    stream_entries,
    stream_position,
    unavailable,
    unpack,
)
from pushsvc.broker.shared_log import LogWaiter
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import MAX_KEYS_PER_PARTITION, Idempotency
from pushsvc.core.partitions import (
    DEFAULT_PARTITIONS,
    check_partitions,
    partition_of,
    partitions_matching,
)
from pushsvc.core.topic_pages import TopicRange
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId
from pushsvc.errors import (
    BrokerUnavailable,
    LayoutMismatch,
    ReplicasUnconfirmed,
    RequestError,
    TooManyTopics,
)

log = logging.getLogger(__name__)

# A new topic's admission holds its lock this long at most (a holder that died).


class RedisBroker:
    """Broker on a shared Redis (redis-py >= 8, as pyproject.toml requires; works with and
    without gevent patching)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pushsvc:",
        history: int = 10_000,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        partitions: int = DEFAULT_PARTITIONS,
        max_topics: int = 100_000,
        alert_retention_us: int = DEFAULT_ALERT_RETENTION_US,
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
        socket_timeout: float = 5.0,
        subscribe_timeout: float = 5.0,
        ping_interval: float = 15.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_connections: int = 16,
        safety_poll_s: float = 1.0,
        max_keys: int = MAX_KEYS_PER_PARTITION,
    ) -> None:
        """`safety_poll_s`: on a Redis Cluster, how often the log waiter reads every log it
        waits on whether woken or not (wakes are pub/sub: at most once). `max_keys`: the
        idempotency keys a partition remembers at most."""
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        if history_bytes < 1:
            raise ValueError(f"history_bytes must be at least 1, got {history_bytes}")
        check_partitions(partitions)
        if max_topics < 1:
            raise ValueError(f"max_topics must be at least 1, got {max_topics}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.max_topics = max_topics
        self._max_keys = max_keys
        self.url = url
        self.keys = Keys(prefix, partitions)
        self.partitions = partitions
        # Each partition's (topics kept, forgotten) as last read (`topic_stats`).
        self._topic_counts = [(0, 0)] * partitions
        self._history = history
        if alert_retention_us < 1000:
            raise ValueError(f"alert_retention_us must be at least 1 ms, got {alert_retention_us}")
        self._alert_retention_us = alert_retention_us
        self._min_replicas = min_replicas
        self._replica_timeout_ms = replica_timeout_ms
        self._client = pooled_client(
            url, max_connections=max_connections, socket_timeout=socket_timeout
        )
        self._append = Script(self._client, "append_events")
        self._release_admitting = Script(self._client, "lease_release")
        self._note_derived = Script(self._client, "note_derived")
        self._delete = Script(self._client, "delete_topic")
        self._history_reader = HistoryReader(self._client, self.keys)
        self._names = TopicNames(self._client, self.keys)
        self.on_cluster = is_cluster(url)
        self._publisher = PublishScript(
            self._client,
            Script(self._client, "publish_updates"),
            self.keys,
            history=history,
            history_bytes=history_bytes,
            alert_retention_us=alert_retention_us,
            on_cluster=self.on_cluster,
        )
        self._reader_options = {
            "subscribe_timeout": subscribe_timeout,
            "ping_interval": ping_interval,
            "min_backoff": min_backoff,
            "max_backoff": max_backoff,
        }
        self._socket_timeout = socket_timeout
        self._safety_poll_s = safety_poll_s
        self._feeds: list[RedisUpdatesFeed] = []
        self._closed = False

    def partition_of(self, topic: str) -> int:
        return partition_of(topic, self.partitions)

    def check_layout(self) -> None:
        """Stop (LayoutMismatch, one line) unless the Redis holds no data or data laid out for
        this partition count; record the count on first use. The count is fixed for the life
        of the data: another one would look for every topic in the wrong partition."""
        self._check_open()
        keys = self.keys
        with unavailable("check_layout"):
            old = self._client.exists(*keys.unpartitioned())
            if old:
                raise LayoutMismatch(
                    f"the Redis at {redact(self.url)} holds pushsvc data under {keys.prefix!r} "
                    "in the layout before partitions; this version cannot read it: drain it "
                    "with the version that wrote it, or use another --prefix"
                )
            self._client.set(keys.layout, self.partitions, nx=True)
            found = self._client.get(keys.layout)
        if found is not None and int(found) != self.partitions:
            raise LayoutMismatch(
                f"the Redis at {redact(self.url)} holds pushsvc data under {keys.prefix!r} for "
                f"{int(found)} partitions, and this process was started with "
                f"{self.partitions}: start every process with PUSHSVC_PARTITIONS={int(found)}"
            )

    # -- the shared log, for the aggregators ----------------------------------

    def event_log(self, shard: tuple[int, int]) -> RedisEventLog:
        """See `LogBroker.event_log`: on this broker's pool, shared by every partition of the
        process (nothing blocks on it: `log_waiter` waits for new entries)."""
        return RedisEventLog(self._client, self.keys, shard, socket_timeout=self._socket_timeout)

    def lease(self, shard: tuple[int, int], *, ttl_us: int) -> RedisLease:
        """See `LogBroker.lease`."""
        return RedisLease(self.url, self.keys.shard(shard).lease, ttl_us=ttl_us)

    def log_waiter(self) -> LogWaiter:
        """See `LogBroker.log_waiter`: one connection, one XREAD over every log waited on; on
        a Redis Cluster, where one XREAD cannot name logs of several slots, woken per
        partition (`wake_waiter.py`)."""
        if self.on_cluster:
            options = self._reader_options
            return WakeWaiter(
                self._client,
                self.keys,
                shared_view(self.url),  # the commands' own, so both follow a failover at once
                name=f"pushsvc-log-waiter-{self.keys.prefix}",
                safety_poll_s=self._safety_poll_s,
                reader_options={
                    "subscribe_timeout": options["subscribe_timeout"],
                    "probe_interval": options["ping_interval"],
                    "min_backoff": options["min_backoff"],
                    "max_backoff": options["max_backoff"],
                    "connection_class": redis.SSLConnection
                    if is_tls(self.url)
                    else redis.Connection,
                    "connection_options": cluster_credentials(self.url),
                },
            )
        return StreamsWaiter(self.url, self.keys, socket_timeout=self._socket_timeout)

    def lease_group(self, *, ttl_us: int) -> RedisLeaseGroup:
        """See `LogBroker.lease_group`: one connection for the membership and every lease."""
        return RedisLeaseGroup(self.url, self.keys, self.partitions, ttl_us=ttl_us)

    # -- producer side -----------------------------------------------------

    def append_events(
        self,
        topic: str,
        events: Sequence[Event],
        *,
        lateness_us: int,
        idempotency: Idempotency | None = None,
        keep_late: bool = False,
        fence: tuple[str, str] | None = None,
    ) -> Appended:
        """See `Broker.append_events`. With `fence` (a lease's name and a token), the script
        refuses (Fenced) unless the token is the one `claim_fence` last wrote for that name in
        the topic's partition.

        The batch goes as it came; when the script finds events past the grace it logs
        nothing and says which (`AppendCode.SPLIT`), checked here against the one rule
        (`pushsvc.core.lateness.past_grace`), and the batch goes again split so: one more
        round trip, only for a batch with late events, and the split is logged whole by one
        script (`lua/append_events.lua`).

        A replay is answered 202 whatever the replicas say: its batch was logged by the
        first request (which may have been answered `replicas_unconfirmed`), and this one
        wrote nothing for `WAIT` to confirm."""
        self._check_open()
        keys, args = append_call(
            self.keys.of(topic),
            topic,
            events,
            lateness_us,
            idempotency,
            keep_late,
            fence,
            wake=self.on_cluster,
            max_keys=self._max_keys,
        )
        past = 0  # the events past the grace, once a SPLIT said which
        # A clock only moves forward, so each SPLIT finds more events past the grace: this
        # many rounds are enough for any race.
        for _ in range(len(events) + 2):
            reply, replicas = self._run_append(keys, args)
            if reply.code is AppendCode.NEW_TOPIC:
                # A topic (or its late stream) is new to its partition. It is admitted while
                # the deployment keeps fewer than max_topics, counted over every partition:
                # no one-slot script can, so new topics are admitted one at a time under a
                # lock (they are rare; a topic's later appends never take it).
                with self._admitting():
                    if self.topic_stats().live >= self.max_topics:
                        raise TooManyTopics.at(self.max_topics)
                    args[ADMIT_ARG] = "1"
                    reply, replicas = self._run_append(keys, args)
            if reply.code is not AppendCode.SPLIT:
                break
            past = resplit(args, reply, events, lateness_us, keep_late)
        else:  # pragma: no cover - the clock moved past every event
            raise BrokerUnavailable("the topic's clock kept moving: retry")
        return appended(reply, replicas, events, lateness_us, past, self._min_replicas)

    def append_many(self, appends: Sequence[TopicAppend]) -> list[Appended | RequestError]:
        """See `ManyTopicsAppender.append_many`: every append's script in one pipeline per
        connection (one per primary on a Cluster: `append_pipeline.py`), each the one atomic
        step `append_events` sends; what each did, in order.

        What the pipeline cannot settle goes on as `append_events` would: new topics are
        admitted together, under the admission lock taken once, as many as `max_topics`
        leaves room for (the others TooManyTopics), and sent again in one more pipeline; a
        batch with events past the grace (SPLIT), a slot that moved (MOVED, ASK, TRYAGAIN)
        or a node that does not know the script even once loaded goes through
        `append_events` alone: in each of those cases the script ran nothing. A reply lost
        with its connection is that append's BrokerUnavailable, never sent again: it may
        have been logged (a retry with the same Idempotency-Key logs it once)."""
        self._check_open()
        if not appends:
            return []
        calls = [
            append_call(
                self.keys.of(a.topic),
                a.topic,
                a.events,
                a.lateness_us,
                a.idempotency,
                a.keep_late,
                None,
                wake=self.on_cluster,
                max_keys=self._max_keys,
            )
            for a in appends
        ]
        results: list[Appended | RequestError | None] = [None] * len(appends)
        alone: list[int] = []
        new: list[int] = []

        def settle(places: list[int]) -> None:
            wait = (self._min_replicas, self._replica_timeout_ms) if self._min_replicas else None
            sent = append_replies(self._client, self._append, [calls[i] for i in places], wait)
            for place, (reply, replicas) in zip(places, sent, strict=True):
                a = appends[place]
                if isinstance(reply, BaseException):
                    if isinstance(reply, ALONE_ERRORS):
                        alone.append(place)
                    else:
                        results[place] = append_failure(reply)
                elif reply.code is AppendCode.NEW_TOPIC:
                    new.append(place)
                elif reply.code is AppendCode.SPLIT:
                    alone.append(place)
                else:
                    try:
                        results[place] = appended(
                            reply, replicas, a.events, a.lateness_us, 0, self._min_replicas
                        )
                    except RequestError as exc:
                        results[place] = exc

        settle(list(range(len(appends))))
        if new:
            admitting, new = new, []
            try:
                with self._admitting():
                    room = self.max_topics - self.topic_stats().live
                    for place in admitting[max(room, 0) :]:
                        results[place] = TooManyTopics.at(self.max_topics)
                    admitted = admitting[: max(room, 0)]
                    for place in admitted:
                        calls[place][1][ADMIT_ARG] = "1"
                    settle(admitted)
            except RequestError as exc:
                gone = set(alone)
                for place in admitting:
                    if results[place] is None and place not in gone:
                        results[place] = exc
        for place in alone + new:  # `new`: admitted and still new (a race): as alone
            results[place] = append_alone(self, appends[place])
        assert all(result is not None for result in results)
        return [result for result in results if result is not None]

    def _admitting(self) -> contextlib.AbstractContextManager[None]:
        """The lock under which new topics are counted and admitted (`admission.py`)."""
        return admitting(
            self._client,
            self.keys.admitting,
            self._release_admitting,
            self._socket_timeout,
            on_cluster=self.on_cluster,
        )

    def claim_fence(self, name: str, token: str) -> None:
        """Make `token` the fence of lease `name` in every partition (a new holder, before it
        appends anything): from then on appends fenced by an earlier holder's token are
        refused. A lease spans every partition, and a script touches one slot, so each
        partition keeps a copy of the holder's token."""
        self._check_open()
        with unavailable("claim_fence"), self._client.pipeline(transaction=False) as pipe:
            for part in self.keys:
                pipe.set(part.fence(name), token)
            pipe.execute()

    def _run_append(
        self, keys: list[str], args: list[str | int | bytes]
    ) -> tuple[AppendReply, int | None]:
        """The append script's reply, and with `min_replicas` how many replicas confirmed."""
        with unavailable("append_events"):
            raw, replicas = self._run_script(self._append, keys, args)
        return AppendReply.decode(raw), replicas

    def _run_script(
        self, script: Script, keys: list[str], args: list[str | int | bytes]
    ) -> tuple[Any, int | None]:
        """A write script's reply, and with `min_replicas` how many replicas confirmed it (WAIT
        on the connection that wrote it, so on the partition's primary).

        On a cluster the script goes on its slot owner's own connection, redirects followed by
        `redirects.py`, with or without the WAIT: redis-py's own cluster client gives a slot
        that is half moved (`TRYAGAIN`) well under a second over its 16 tries, so a reshard on
        a busy machine answered writes 503 that `redirects.py` waits out (up to
        `TRYAGAIN_FOR_S`)."""
        if not (self._min_replicas or self.on_cluster):
            return script(keys=keys, args=args), None

        def queue(pipe: redis.client.Pipeline) -> None:
            script(keys=keys, args=args, client=pipe)
            if self._min_replicas:
                pipe.wait(self._min_replicas, self._replica_timeout_ms)

        replies = on_slot_owner(self._client, keys[0], queue)
        return replies[0], int(replies[1]) if self._min_replicas else None

    def _learn_topology(self) -> None:
        learn_topology(self._client)

    # -- updates -------------------------------------------------------------

    def publish_updates(
        self,
        drafts: Sequence[UpdateDraft],
        *,
        applied: Applied,
        fence: str,
    ) -> list[Update]:
        """See `Broker.publish_updates`: the script refuses (Fenced) unless the shard's lease
        is still under `fence`, refuses (PublishedAlready) when the shard's log is recorded
        as published past `applied.after`, and records `applied` atomically with the updates
        (`publish_script.py`, `lua/publish_updates.lua`)."""
        self._check_open()
        return self._publisher.publish_updates(drafts, applied=applied, fence=fence)

    def delete_topic(self, topic: str) -> bool:
        """See `Broker.delete_topic`: one script in the topic's partition checks the topic,
        drops its clock and latest update and logs the delete entry (`delete_topic.lua`)."""
        self._check_open()
        part = self.keys.of(topic)
        keys = [part.log, part.clocks, part.latest, part.logged, part.deleted, part.names]
        args = [topic, part.wake_channel if self.on_cluster else ""]
        with unavailable("delete_topic"):
            entry_id, replicas = self._run_script(self._delete, keys, list(args))
        if entry_id and replicas is not None and replicas < self._min_replicas:
            raise ReplicasUnconfirmed(
                f"the deletion reached {replicas} of {self._min_replicas} replicas in time; it "
                "will be applied unless the primary is lost (a retry of a deletion that was "
                "applied answers 404)"
            )
        return bool(entry_id)

    def consume_updates(
        self, handler: UpdatesHandler, *, on_reset: Callable[[], None] = lambda: None
    ) -> RedisUpdatesFeed:
        self._check_open()

        def on_messages(messages: list[tuple[bytes, bytes]]) -> None:
            updates = updates_in(messages)
            if updates:
                handler(updates)

        name = f"pushsvc-redis-reader-{self.keys.prefix}"
        reader: PubSubReader | ShardedPubSubReader
        if self.on_cluster:
            options = self._reader_options
            reader = ShardedPubSubReader(
                shared_view(self.url),  # the commands' own view of the slot owners
                name=name,
                on_messages=on_messages,
                on_reset=on_reset,
                subscribe_timeout=options["subscribe_timeout"],
                probe_interval=options["ping_interval"],
                min_backoff=options["min_backoff"],
                max_backoff=options["max_backoff"],
                connection_class=redis.SSLConnection if is_tls(self.url) else redis.Connection,
                connection_options=cluster_credentials(self.url),
                covered_by=covering_channel,
            )
        else:
            reader = PubSubReader(
                # No socket timeout: the reader polls with its own, and finds dead connections
                # with a PING after `ping_interval` of silence (see pubsub._next_message).
                single_client(self.url, socket_timeout=None),
                name=name,
                on_messages=on_messages,
                on_reset=on_reset,
                **self._reader_options,
            )
        feed = RedisUpdatesFeed(reader, self.keys)
        self._feeds.append(feed)
        return feed

    # -- history -----------------------------------------------------------

    def replay(self, after: Cursor, match: TopicMatcher) -> Replayed:
        """See `Broker.replay`: each partition `match` can take a topic of, from its own
        history, merged across partitions by the time Redis wrote each update (a stream id is
        `<ms>-<seq>`, which within a partition is its own order)."""
        return self.replay_many([(after, match)])[0]

    def replay_many(self, asked: Sequence[tuple[Cursor, TopicMatcher]]) -> list[Replayed]:
        """`replay(after, match)` of each of `asked`, in order, reading each partition once
        for all of them (from the oldest of their ids there: `pushsvc.broker.redis.replay`):
        each result is what its own `replay` would have read at that moment."""
        self._check_open()
        with unavailable("replay"):
            return replay_many(self._client, self.keys, self.on_cluster, asked)

    def history_page(
        self, partition: int, after: UpdateId | None, match: TopicMatcher, limit: int
    ) -> PartitionPage:
        """See `HistoryPages.history_page`: one MULTI on the partition's slot (`read_page`),
        whose entries are decoded only where `match` takes their topic."""
        self._check_open()
        part = self.keys.partition(partition)
        with unavailable("history page"):
            read = read_page(self._client, part, None if after is None else after.position, limit)
        epoch = read.epoch
        head = None if epoch is None or read.newest is None else UpdateId(epoch, *read.newest)
        updates = replay_of(read, after, match)
        if updates is None:
            return PartitionPage([], None, False, head, lost=True)
        if epoch is None or not read.positions:
            return PartitionPage(updates, None, False, head)
        last = read.positions[-1]
        more = read.newest is not None and last < read.newest
        return PartitionPage(updates, UpdateId(epoch, *last), more, head)

    def history_heads(self) -> dict[int, UpdateId]:
        """See `HistoryPages.history_heads`: each partition's epoch and newest entry."""
        self._check_open()
        with unavailable("history heads"), self._client.pipeline(transaction=False) as pipe:
            for index in range(self.partitions):
                part = self.keys.partition(index)
                pipe.get(part.epoch)
                pipe.xrevrange(part.history, count=1)
            replies = pipe.execute()
        heads: dict[int, UpdateId] = {}
        for index in range(self.partitions):
            epoch, newest = replies[2 * index], stream_entries(replies[2 * index + 1])
            if epoch is not None and newest:
                heads[index] = UpdateId.of_stream_id(epoch.decode(), newest[0][0])
        return heads

    def history_starts(self) -> dict[int, UpdateId]:
        """See `HistoryStarts.history_starts`: each partition's epoch and trimmed mark."""
        self._check_open()
        with unavailable("history starts"), self._client.pipeline(transaction=False) as pipe:
            for index in range(self.partitions):
                part = self.keys.partition(index)
                pipe.get(part.epoch)
                pipe.get(part.trimmed)
            replies = pipe.execute()
        starts: dict[int, UpdateId] = {}
        for index in range(self.partitions):
            epoch, trimmed = replies[2 * index], replies[2 * index + 1]
            if epoch is not None and trimmed is not None:
                starts[index] = UpdateId(epoch.decode(), *stream_position(trimmed))
        return starts

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
        found: dict[str, Update] = {}
        with unavailable("latest"):
            if match.exact:
                by_partition: dict[int, list[str]] = {}
                for name in sorted(match.names):
                    by_partition.setdefault(self.partition_of(name), []).append(name)
                with self._client.pipeline(transaction=False) as pipe:
                    for index, of_partition in by_partition.items():
                        pipe.hmget(self.keys.partition(index).latest, of_partition)
                    replies = pipe.execute()
                for of_partition, values in zip(by_partition.values(), replies, strict=True):
                    for topic, value in zip(of_partition, values, strict=True):
                        if value:
                            found[topic] = unpack(topic, value)
                return dict(sorted(found.items()))
            with self._client.pipeline(transaction=False) as pipe:
                for part in self.keys:
                    pipe.hgetall(part.latest)
                every: list[dict[bytes, bytes]] = pipe.execute()
        for packed in every:
            for raw, value in packed.items():
                topic = raw.decode()
                if match(topic):
                    found[topic] = unpack(topic, value)
        return found

    def active_alerts_page(
        self, *, after: str | None, limit: int, scan: int, keep: Callable[[str], bool]
    ) -> AlertsPage:
        """See `AlertKeeper.active_alerts_page`: slices of each partition's sorted set of
        instance keys (`pushsvc.broker.redis.names`)."""
        self._check_open()
        return self._names.active_alerts_page(after=after, limit=limit, scan=scan, keep=keep)

    def latest_page(
        self, ranges: Sequence[TopicRange], *, after: str | None, limit: int
    ) -> LatestPage:
        """See `TopicLister.latest_page`: slices of each partition's sorted set of names
        (`pushsvc.broker.redis.names`)."""
        self._check_open()
        return self._names.latest_page(ranges, after=after, limit=limit)

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
        part = self.keys.of(topic)
        key = part.series(resolution, topic, group_id)
        since_id, until_id = series_id(since_us), series_id(until_us)
        with unavailable("series"), self._client.pipeline(transaction=True) as pipe:
            pipe.hget(part.clocks, topic)
            pipe.xrange(key, min=since_id, max="(" + until_id)
            pipe.zrangebyscore(
                part.corrected(resolution, topic, group_id),
                since_id.partition("-")[0],
                "(" + until_id.partition("-")[0],
                withscores=True,
            )
            clock, raw, corrected = pipe.execute()
        points = series_points(raw, corrected, clock, retention_us)
        return SeriesPage(points[:limit], len(points) > limit)

    def derived_through(self, topics: Sequence[str]) -> dict[str, int]:
        self._check_open()
        if not topics:
            return {}
        with unavailable("derived_through"), self._client.pipeline(transaction=False) as pipe:
            for topic in topics:
                pipe.hget(self.keys.of(topic).derived, topic)
            replies = pipe.execute()
        return {t: time_of_key(v) for t, v in zip(topics, replies, strict=True) if v is not None}

    def note_derived_through(self, topic: str, boundary_us: int) -> None:
        self._check_open()
        with unavailable("note_derived_through"):
            key = self.keys.of(topic).derived
            self._note_derived(keys=[key], args=[topic, time_key(boundary_us)])

    def session_state(self, topic: str) -> bytes | None:
        self._check_open()
        with unavailable("session_state"):
            state = self._client.hget(self.keys.of(topic).sessions, topic)
        return state if state is None or isinstance(state, bytes) else state.encode()

    def save_session_state(self, topic: str, state: bytes) -> None:
        self._check_open()
        with unavailable("save_session_state"):
            self._client.hset(self.keys.of(topic).sessions, topic, state)

    def hold_history(self, reader: str, after: Cursor, match: TopicMatcher) -> None:
        """See `SessionKeeper.hold_history`: one field of each partition's `holds`, which
        `publish_updates.lua` reads as it trims (until: on this host's clock, which must
        agree with Redis's within minutes)."""
        self._check_open()
        until_ms = int(time.time() * 1000) + HOLD_TTL_MS
        with unavailable("hold_history"), self._client.pipeline(transaction=False) as pipe:
            for index in partitions_matching(match, self.partitions):
                held = after.get(index)
                value = "* 0-0" if held is None else f"{held.epoch} {held.ms}-{held.seq}"
                pipe.hset(self.keys.partition(index).holds, reader, f"{value} {until_ms}")
            pipe.execute()

    def active_alerts(self) -> list[bytes]:
        self._check_open()
        with unavailable("active_alerts"), self._client.pipeline(transaction=False) as pipe:
            for part in self.keys:
                pipe.hvals(part.alerts)
            return [body for values in pipe.execute() for body in values]

    def latest_groups(self, topics: Sequence[str]) -> dict[str, list[bytes]]:
        self._check_open()
        if not topics:
            return {}
        with unavailable("latest_groups"), self._client.pipeline(transaction=False) as pipe:
            for topic in topics:
                part = self.keys.of(topic)
                pipe.get(part.epoch)
                pipe.hvals(part.groups(topic))
            replies = pipe.execute()
        found = {}
        for place, topic in enumerate(topics):
            epoch, values = replies[2 * place], replies[2 * place + 1]
            if epoch is None:
                continue
            # Groups written in an earlier epoch belong to a lost history: not live.
            mark = epoch + b" "
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
        """Redis's eviction policy and memory use (`memory_policy.py`); on a cluster, of the
        primary in the worst state (evicting, else full, else the fullest)."""
        self._check_open()
        try:
            with unavailable("memory"):
                found = [read_memory(client) for client in self._primaries()]
        except BrokerUnavailable:
            self._learn_topology()
            raise
        return max(found, key=lambda m: (m.evicts, m.full, m.used_bytes / (m.max_bytes or 1)))

    @property
    def min_replicas(self) -> int:
        """The replicas each append must reach (`WAIT`) before it is acknowledged."""
        return self._min_replicas

    def replicas_online(self) -> int | None:
        """The fewest replicas online at any primary holding pushsvc's keys (`replication.py`);
        None when a primary will not say."""
        self._check_open()
        try:
            with unavailable("info replication"):
                found = [read_replicas_online(client) for client in self._primaries()]
        except BrokerUnavailable:
            self._learn_topology()
            raise
        known = [count for count in found if count is not None]
        return min(known) if known else None

    def _primaries(self) -> list[redis.Redis]:
        return operations.primaries(self._client, self.on_cluster)

    def oldest_primary_version(self) -> tuple[tuple[int, ...], str] | None:
        """The oldest `redis_version` among the primaries; None where none will say."""
        self._check_open()
        return operations.oldest_version(self._primaries())

    def is_cluster_node(self) -> bool:
        """Whether the Redis this broker reaches runs in cluster mode."""
        self._check_open()
        return operations.is_cluster_node(self._client)

    def count_bridged(self, events: int, rejected: dict[str, int]) -> None:
        """Add to the bridge's counts (see `bridge_stats`)."""
        operations.count_bridged(self._client, self.keys, events, rejected)

    def bridge_stats(self) -> BridgeStats | None:
        self._check_open()
        return operations.bridge_stats(self._client, self.keys)

    def keeps_topic(self, topic: str) -> bool:
        self._check_open()
        with unavailable("keeps_topic"):
            return bool(self._client.hexists(self.keys.of(topic).clocks, topic))

    def topic_stats(self) -> TopicStats:
        """The topics kept and forgotten, summed over the partitions. A partition that cannot
        be read now (its primary is failing over) counts as last read: new topics elsewhere
        stay admitted through a partial outage, the limit off by that partition's change. When
        none answers, the last one's answer is raised: a loading or busy Redis is a refusal with
        its own code and Retry-After, not an unreachable one."""
        answered = 0
        unanswered: BrokerUnavailable | None = None
        for client, parts in operations.by_primary(
            self._client, self.on_cluster, self.keys
        ).items():
            try:
                counts = operations.topic_counts(client, parts)
            except BrokerUnavailable as exc:
                unanswered = exc
                self._learn_topology()
                continue
            answered += 1
            for part, kept in zip(parts, counts, strict=True):
                self._topic_counts[part.index] = kept
        if not answered:
            raise unanswered or BrokerUnavailable("Redis is unavailable (no partition answered)")
        return TopicStats(
            sum(live for live, _ in self._topic_counts),
            sum(forgotten for _, forgotten in self._topic_counts),
        )

    def lag(self) -> list[ShardLag]:
        """Per partition: entries logged but not applied, the age of the oldest, and whether
        an aggregator holds the partition's lease."""
        self._check_open()
        return operations.read_lag(self._client, self.keys, self.partitions)

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
