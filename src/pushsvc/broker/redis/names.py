"""Pages of topics in name order on Redis (`GET /topics`): each partition keeps its topics'
names in a sorted set beside `latest` (`P:names`, written with it by the publish, delete and
forget scripts), and a page reads `ZRANGE BYLEX` slices of those sets, never `HGETALL latest`.
Active alert instances likewise (`GET /alerts`): `P:alert_keys` beside `P:alerts`.

A page asks every partition for about twice its share of `limit + 1` names of each range it
reads, and more only from a partition that holds up the merge (`pushsvc.core.topic_pages.
merged_head`), and reads the page's latest updates by `HMGET`, parsing only their heads (id
and time): O(limit + partitions * log topics) per range, whatever the number of topics.

Data written before the indexes were kept has none: the first page a process reads builds
each partition's index whose size differs from its hash's (`lua/index_names.lua`, once per
process and index).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from itertools import islice

import redis

from pushsvc.broker.base import AlertsPage, LatestPage, TopicHead
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.redis.wire import head, unavailable
from pushsvc.core.topic_pages import IndexRange, TopicRange, merged_head, scan_page, walk


def lex_bounds(part: IndexRange) -> tuple[str, str]:
    """`part` as ZRANGE BYLEX's min and max."""
    low = ("[" if part.low_inclusive else "(") + part.low
    if part.high is None:
        return low, "+"
    return low, ("[" if part.high_inclusive else "(") + part.high


class TopicNames:
    """The partitions' name indexes of one client; greenlet-safe (each call its own
    pipelines)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._index = Script(client, "index_names")
        self._indexed = False
        self._alerts_indexed = False

    def latest_page(
        self, ranges: Sequence[TopicRange], *, after: str | None, limit: int
    ) -> LatestPage:
        with unavailable("latest_page"):
            if not self._indexed:
                for part in self._keys:
                    self._index(keys=[part.latest, part.names])
                self._indexed = True
            page = walk(ranges, after, limit, self._read)
            by_partition: dict[int, list[str]] = {}
            for name in page.names:
                by_partition.setdefault(self._keys.of(name).index, []).append(name)
            with self._client.pipeline(transaction=False) as pipe:
                for index, names in by_partition.items():
                    pipe.hmget(self._keys.partition(index).latest, names)
                replies = pipe.execute()
        found: dict[str, TopicHead] = {}
        for names, values in zip(by_partition.values(), replies, strict=True):
            for name, value in zip(names, values, strict=True):
                if value:  # None: deleted or forgotten since its name was read
                    found[name] = head(value)
        following = page.names[-1] if page.more else None
        return LatestPage({name: found[name] for name in page.names if name in found}, following)

    def _read(self, part: IndexRange, count: int) -> list[str]:
        """The first `count` names in `part` over every partition, in name order."""
        low, high = lex_bounds(part)
        partitions = list(self._keys)

        def read(asking: Mapping[int, bytes | None], chunk: int) -> dict[int, list[bytes]]:
            with self._client.pipeline(transaction=False) as pipe:
                for index, after in asking.items():
                    start = low if after is None else b"(" + after
                    pipe.zrangebylex(partitions[index].names, start, high, start=0, num=chunk)
                replies: list[list[bytes]] = pipe.execute()
            return dict(zip(asking, replies, strict=True))

        return [name.decode() for name in merged_head(count, len(partitions), read)]

    def active_alerts_page(
        self, *, after: str | None, limit: int, scan: int, keep: Callable[[str], bool]
    ) -> AlertsPage:
        low = "-" if after is None else "(" + after
        with unavailable("active_alerts_page"):
            if not self._alerts_indexed:
                for part in self._keys:
                    self._index(keys=[part.alerts, part.alert_keys])
                self._alerts_indexed = True
            with self._client.pipeline(transaction=False) as pipe:
                for part in self._keys:
                    pipe.zrangebylex(part.alert_keys, low, "+", start=0, num=scan + 1)
                replies: list[list[bytes]] = pipe.execute()
            # Each key with its partition, merged in key order.
            tagged = [[(key.decode(), i) for key in keys] for i, keys in enumerate(replies)]
            read = list(islice(heapq.merge(*tagged), scan + 1))
            page = scan_page([key for key, _ in read], limit, scan, keep)
            where = dict(read)
            by_partition: dict[int, list[str]] = {}
            for key in page.keys:
                by_partition.setdefault(where[key], []).append(key)
            with self._client.pipeline(transaction=False) as pipe:
                for index, keys in by_partition.items():
                    pipe.hmget(self._keys.partition(index).alerts, keys)
                bodies = pipe.execute()
        found: dict[str, bytes] = {}
        for keys, values in zip(by_partition.values(), bodies, strict=True):
            found.update((k, v) for k, v in zip(keys, values, strict=True) if v)
        return AlertsPage([found[key] for key in page.keys if key in found], page.next)
