"""The memory store's series points, as the Redis broker keeps them: one tier per (topic,
group id, resolution), trimmed to its retention as points come, and each tier kept its
retention after its newest point (a minute more), also once its topic is gone (Redis: the
key's TTL), and dropped with its topic's deletion."""

from __future__ import annotations

from pushsvc.broker.base import SeriesPage
from pushsvc.core.updates import UpdateDraft
from pushsvc.series.store import SeriesStore

_GRACE_S = 60.0
SeriesKey = tuple[str, str, str]


class KeptSeries:
    """Every tier's points (`SeriesStore`), their expiry, and each topic's tiers."""

    def __init__(self) -> None:
        self._points = SeriesStore()
        self._due: dict[SeriesKey, float] = {}
        self._of_topic: dict[str, set[SeriesKey]] = {}

    def keep(self, draft: UpdateDraft, now_s: float) -> bool:
        """Keep a point's draft in its tier (a correction: in place of the point it
        corrects); False when the tier holds it, or a later correction of it, already."""
        write = draft.series
        assert write is not None
        key = (draft.topic, write.group_id, write.resolution)
        if not self._points.append(key, write.t_us, write.packed, write.revision):
            return False
        self._points.trim(key, write.keep_from_us - 1)
        self._due[key] = now_s + (draft.clock_us - write.keep_from_us) / 1e6 + _GRACE_S
        self._of_topic.setdefault(draft.topic, set()).add(key)
        return True

    def drop_topic(self, topic: str) -> None:
        for key in self._of_topic.pop(topic, ()):
            self._due.pop(key, None)
            self._points.drop(key)

    def expire(self, now_s: float) -> None:
        for key in [key for key, due in self._due.items() if due <= now_s]:
            del self._due[key]
            self._points.drop(key)
            keys = self._of_topic.get(key[0])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._of_topic[key[0]]

    def read(self, key: SeriesKey, since_us: int, until_us: int, limit: int) -> SeriesPage:
        if until_us <= since_us:
            return SeriesPage([], False)
        points, more = self._points.read(key, since_us, until_us, limit)
        return SeriesPage(points, more)

    def bytes_used(self) -> int:
        return self._points.bytes_used()
