"""This process's subscription to updates on Redis (`UpdatesFeed`)."""

from __future__ import annotations

from collections.abc import Sequence

from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.pubsub import PubSubReader
from pushsvc.core.topics import ALL


class RedisUpdatesFeed:
    """This process's subscription to updates: a topic's channel while a local stream watches
    it, a prefix pattern for `prefix.*` streams (see `PubSubReader`)."""

    def __init__(self, reader: PubSubReader, keys: Keys) -> None:
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
        channel = self._keys.updates_channel
        if selector == ALL or selector.endswith(".*"):
            prefix = channel + selector[:-1].encode()  # `x.*` -> `...updates:x.`
            (self._reader.add_prefix if add else self._reader.remove_prefix)(prefix)
        else:
            (self._reader.add_channel if add else self._reader.remove_channel)(
                channel + selector.encode()
            )

    def close(self) -> None:
        self._reader.close()
