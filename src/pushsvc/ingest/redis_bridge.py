"""Producers on Redis: `PUBLISH {prefix}ingest:{topic} <body>` becomes events in the log.

One bridge at a time per deployment: every aggregator process runs one, and the one holding
the lease `{prefix}{bridge}:lease` is subscribed to `{prefix}ingest:*`; the others stand by and
subscribe when they take the lease over (within one lease time of the holder's death). Each
tenure of the lease subscribes on a connection of its own, closed when the tenure ends. Each
message gets the POST's validation and limits (`ingest.validated`) and the broker's lateness
rule at append, so a rejected message changes nothing; it is counted by reason in Redis
(every web process's `/metrics` shows it) and logged once per reason and topic. A burst's
consecutive messages of one topic are appended together (one round trip, not one each), in
the order they were published.

Appends are fenced by the token of the tenure their subscription belongs to (a new tenure
writes it into every partition before it subscribes, and the append script checks it there), so
a bridge that was paused past its lease and wakes with messages queued appends none of them:
its successor, which pub/sub gave the same messages, already did. That holds when the successor
died meanwhile too and the woken bridge takes the lease again: after another process's tenure,
that is a new tenure, under a new token, on a new connection, never the old one's queue. A
lapse nobody took the lease in is no new tenure: the bridge goes on with its subscription and
appends what it queued, which no other bridge can have appended.

A Redis that refuses an append (full at `maxmemory`, read-only, busy, loading: nothing was
written) is waited for: the bridge retries the same batch with a backoff, logging once, and
keeps its lease; messages published meanwhile queue in Redis's output buffer for this client
(`client-output-buffer-limit pubsub`, past which Redis drops the connection and them).

Pub/sub is at most once: a message published while no bridge is subscribed reaches nobody
(`PUBLISH` answers 0, and `pushsvc publish --redis-url` says so). What the bridge appended is
kept like any POST. On a Redis Cluster, where a PUBLISH reaches every node, the subscription
is on one node, picked again at each reconnection (`connect.pubsub_clients`): a node killed
moves the bridge to a live one, within its tenure, instead of stopping it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time

import gevent.event

from pushsvc.broker.redis.broker import RedisBroker
from pushsvc.broker.redis.connect import pubsub_clients
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.pubsub import PubSubReader
from pushsvc.core.lateness import keeps_late
from pushsvc.errors import (
    BrokerRefused,
    BrokerUnavailable,
    Fenced,
    ReplicasUnconfirmed,
    RequestError,
)
from pushsvc.ingest import Event, InputLimits
from pushsvc.ingest.accept import sniff_media_type, validated
from pushsvc.ingest.input_limits import MAX_BATCH
from pushsvc.rules.analytics import Rules

log = logging.getLogger(__name__)

BRIDGE = "bridge"
"""The name of the bridge's lease, whose holder's token fences its appends."""

_LOGGED_AT_MOST = 10_000  # (reason, topic) pairs remembered for "log once"
_MIN_BACKOFF_S = 0.1  # first wait after Redis refused an append
_MAX_BACKOFF_S = 2.0


class Bridge:
    """`run(stop)` until `stop` is set: hold or wait for the lease, bridge while holding."""

    def __init__(
        self,
        broker: RedisBroker,
        *,
        limits: InputLimits,
        lateness_us: int,
        lease_us: int,
        rules: Rules | None = None,
    ):
        self._broker = broker
        self._limits = limits
        self._lateness_us = lateness_us
        self._rules = rules
        keys = broker.keys
        self._channel_prefix = keys.ingest_channel
        self.lease = RedisLease(broker.url, keys.bridge_lease, ttl_us=lease_us)
        self._reader: PubSubReader | None = None
        self._tenure: str | None = None
        """The lease token `_reader` bridges under; None while standing by."""
        self._logged: set[tuple[str, str]] = set()
        self._closing = gevent.event.Event()

    def run(self, stop: gevent.event.Event) -> None:
        try:
            while not stop.is_set():
                holding = self.lease.renew()
                if holding and self._tenure != self.lease.token:
                    # A new tenure: what an earlier one's connection holds, a successor may
                    # have appended meanwhile. Subscribe afresh.
                    self._stand_by()
                    self._subscribe(self.lease.token)
                elif not holding and self._tenure is not None:
                    self._stand_by()
                    log.warning("bridge: standing by")
                stop.wait(self.lease.ttl_s / 3)
        finally:
            self.close()

    def _subscribe(self, tenure: str) -> None:
        keys = self._broker.keys
        try:
            # Before any message of this tenure: appends of an earlier tenure are refused.
            self._broker.claim_fence(BRIDGE, tenure)
        except BrokerUnavailable as exc:
            log.warning("bridge: could not take over the fence (%s); retrying", exc)
            return
        reader = PubSubReader(
            # On a cluster, a live node at each (re)connection: not one node for good.
            pubsub_clients(self._broker.url, name=keys.bridge_connection),
            name=keys.bridge_connection,
            on_messages=functools.partial(self._on_messages, tenure),
        )
        try:
            reader.add_prefix(self._channel_prefix)
        except BrokerUnavailable as exc:
            reader.close()
            log.warning("bridge: could not subscribe (%s); retrying", exc)
            return
        self._reader, self._tenure = reader, tenure
        log.info("bridge: bridging %s* into the event log", self._channel_prefix.decode())

    def _stand_by(self) -> None:
        """Close this tenure's subscription, and what it had received with it."""
        reader, self._reader, self._tenure = self._reader, None, None
        if reader is not None:
            reader.close()

    def _on_messages(self, tenure: str, messages: list[tuple[bytes, bytes]]) -> None:
        rejected: dict[str, int] = {}
        # Each message is validated alone, as a POST is; what passes is appended in the order
        # it came, consecutive messages of one topic together (see _append_run).
        runs: list[tuple[str, list[list[Event]]]] = []
        for channel, body in messages:
            topic = channel[len(self._channel_prefix) :].decode("utf-8", "replace")
            try:
                events = validated(
                    topic,
                    body,
                    sniff_media_type(body),
                    limits=self._limits,
                    now_us=time.time_ns() // 1000,
                )
            except RequestError as exc:
                self._refused(exc, topic, rejected)
                continue
            if runs and runs[-1][0] == topic:
                runs[-1][1].append(events)
            else:
                runs.append((topic, [events]))
        accepted = 0
        try:
            for topic, batches in runs:
                accepted += self._append_run(topic, batches, (BRIDGE, tenure), rejected)
        except Fenced:
            # Another bridge took over while this one was paused; it has these messages
            # too (pub/sub gave them to both) and appends them.
            log.warning("bridge: the lease moved on; standing by")
            self.lease.holding = False
        # The counts are for /metrics; the events themselves were handled above.
        with contextlib.suppress(BrokerUnavailable):
            self._broker.count_bridged(accepted, rejected)

    def _append_run(
        self,
        topic: str,
        batches: list[list[Event]],
        fence: tuple[str, str],
        rejected: dict[str, int],
    ) -> int:
        """Append consecutive messages of one topic (each a batch that passed validation); the
        number of events appended. They go in appends of at most a POST's largest batch: one
        round trip to Redis instead of one a message, so that a bridge under a flood of
        one-event messages keeps up. Such an append is all or nothing, like a POST; when the
        log refuses it for one message (an event late by then, the topic limit), each message
        of it is appended alone, so that only that message is refused, as it would have been
        on its own: the lateness rule moves the topic clock event by event, in the same order,
        either way."""
        accepted = 0
        for group in _grouped(batches, MAX_BATCH):
            if len(group) > 1:
                events = [event for batch in group for event in batch]
                try:
                    self._append_bridged(topic, events, fence)
                    accepted += len(events)
                    continue
                except BrokerUnavailable as exc:
                    # Redis went away under us: each message alone would meet the same.
                    self._refused(exc, topic, rejected, count=len(group))
                    continue
                except RequestError:
                    pass  # refused whole, nothing written: one message at a time, below
            for batch in group:
                try:
                    self._append_bridged(topic, batch, fence)
                    accepted += len(batch)
                except RequestError as exc:  # broker_unavailable too: Redis went away
                    self._refused(exc, topic, rejected)
        return accepted

    def _append_bridged(self, topic: str, events: list[Event], fence: tuple[str, str]) -> None:
        try:
            self._append_waiting(topic, events, fence)
        except ReplicasUnconfirmed as exc:
            # Logged all the same (only its replication is unconfirmed), and a Redis
            # producer has no answer to retry on: bridged, not refused.
            self._log_once(exc.code, topic, exc, outcome="bridged")

    def _refused(
        self, exc: RequestError, topic: str, rejected: dict[str, int], *, count: int = 1
    ) -> None:
        rejected[exc.code] = rejected.get(exc.code, 0) + count
        self._log_once(exc.code, topic, exc)

    def _append_waiting(self, topic: str, events: list[Event], fence: tuple[str, str]) -> None:
        """Append; while Redis refuses (full, read-only, busy, loading: nothing was written),
        wait and retry the same batch, logging once, instead of dropping it. The lease is kept
        meanwhile (`run` renews it; that needs no memory). Gives up only when closed."""
        backoff = _MIN_BACKOFF_S
        waiting: str | None = None
        grace, refuse = (self._lateness_us, False)
        if self._rules is not None:
            grace, refuse = self._rules.grace_of(topic, self._lateness_us)
        keep = keeps_late(topic, refuse)

        while True:
            try:
                # Past the grace: on the topic's late stream in the same fenced step, as a
                # POST's would be.
                self._broker.append_events(
                    topic, events, lateness_us=grace, keep_late=keep, fence=fence
                )
            except BrokerRefused as exc:
                if self._closing.is_set():
                    raise
                if waiting != exc.code:
                    waiting = exc.code
                    log.warning("bridge: Redis refuses appends (%s: %s); waiting", exc.code, exc)
                self._closing.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            if waiting is not None:
                log.warning("bridge: Redis takes appends again; continuing")
            return

    def _log_once(
        self, reason: str, topic: str, exc: RequestError, *, outcome: str = "rejected"
    ) -> None:
        key = (reason, topic[:200])
        if key in self._logged:
            return
        if len(self._logged) >= _LOGGED_AT_MOST:
            self._logged.clear()
        self._logged.add(key)
        log.warning("bridge: %s a message on topic %r (%s): %s", outcome, topic[:200], reason, exc)

    def close(self) -> None:
        self._closing.set()
        self._stand_by()
        self.lease.release()
        self.lease.close()


def _grouped(batches: list[list[Event]], most: int) -> list[list[list[Event]]]:
    """Consecutive batches, together at most `most` events a group (a batch larger than that
    alone: it passed the same limit on its own)."""
    groups: list[list[list[Event]]] = []
    size = 0
    for batch in batches:
        if not groups or size + len(batch) > most:
            groups.append([])
            size = 0
        groups[-1].append(batch)
        size += len(batch)
    return groups
