"""The embedded server's presence: its one process's streams are every stream
(`pushsvc.core.presence`; on Redis, `pushsvc.broker.redis.presence` adds up every web
process's)."""

from __future__ import annotations

from collections.abc import Collection

from pushsvc.core.presence import Presence, PresenceRegistry, Stop


class LocalPresence:
    """The embedded server's presence: the one process's tally is every stream."""

    def __init__(self, registry: PresenceRegistry) -> None:
        self.registry = registry

    def read(self, topics: Collection[str]) -> dict[str, Presence]:
        presence = self.registry.presence
        return {topic: presence(topic) for topic in topics}

    def run(self, stop: Stop) -> None:
        pass

    def close(self) -> None:
        pass
