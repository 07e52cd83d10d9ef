"""This process's subscription to updates on Redis (`UpdatesFeed`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pushsvc.broker.redis.keys import Keys, topic_of_channel
from pushsvc.broker.redis.pubsub import PubSubReader
from pushsvc.broker.redis.sharded_pubsub import ShardedPubSubReader
from pushsvc.broker.redis.wire import unpack
from pushsvc.core.topics import ALERTS, ALL
from pushsvc.core.updates import Update

log = logging.getLogger("pushsvc.broker.redis.broker")
"""The broker's logger: a malformed message is the broker's to report."""


def updates_in(messages: Sequence[tuple[bytes, bytes]]) -> list[Update]:
    """The updates of pub/sub messages, in order: a topic's channel carries its own, a
    partition's every-update channel (`...}:all`) each with its topic on the first line. A
    malformed message is logged and skipped."""
    updates: list[Update] = []
    for name, data in messages:
        try:
            if name.endswith(b"}:all"):  # a partition's every update: topic first
                raw_topic, _, data = data.partition(b"\n")
                topic = raw_topic.decode()
            else:
                topic = topic_of_channel(name)
            updates.extend(unpack(topic, packed) for packed in data.split(b"\n"))
        except ValueError:
            log.warning("ignoring a malformed update message on %r", name)
    return updates


class RedisUpdatesFeed:
    """This process's subscription to updates: a topic's channel while a local stream watches
    it, a prefix pattern per partition for `prefix.*` streams (see `PubSubReader`) or on a
    Redis Cluster the channel of every update of each partition (`ShardedPubSubReader`), and
    the `_alerts` channel of every partition for the stream of alert changes."""

    def __init__(self, reader: PubSubReader | ShardedPubSubReader, keys: Keys) -> None:
        self._reader = reader
        self._keys = keys

    def watch(self, selectors: Sequence[str]) -> None:
        done: list[str] = []
        try:
            for selector in selectors:
                self._change(selector, add=True)
                done.append(selector)
        except BaseException:
            self.unwatch(done)
            raise

    def unwatch(self, selectors: Sequence[str]) -> None:
        for selector in selectors:
            self._change(selector, add=False)

    def _change(self, selector: str, *, add: bool) -> None:
        reader = self._reader
        if (selector == ALL or selector.endswith(".*")) and isinstance(reader, PubSubReader):
            # A prefix may take topics of every partition: one pattern per partition.
            change = reader.add_prefix if add else reader.remove_prefix
            for part in self._keys:
                change(part.updates_channel + selector[:-1].encode())  # `x.*` -> `…:u:x.`
        elif selector == ALL or selector.endswith(".*"):
            # Sharded pub/sub has no patterns: the channel of every update of each partition
            # (the hub hands each stream the topics it matches).
            for part in self._keys:
                channel = part.all_updates_channel
                (reader.add_channel if add else reader.remove_channel)(channel)
        elif selector == ALERTS:
            # Alert changes travel in the partition of the topic they watch: every partition.
            for part in self._keys:
                channel = part.updates_channel + selector.encode()
                (self._reader.add_channel if add else self._reader.remove_channel)(channel)
        else:
            (self._reader.add_channel if add else self._reader.remove_channel)(
                self._keys.of(selector).updates_channel + selector.encode()
            )

    def close(self) -> None:
        self._reader.close()
