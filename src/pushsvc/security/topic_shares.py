"""Each publisher's share of `--max-topics`: the topics one token subject (else one client
address) may hold, so that one tenant cannot take the whole table and lock the others out
until `--topic-ttl` forgets its topics.

A publisher *holds* a topic it posted to first (as far as this process saw) while it keeps
posting to it: a holding lapses `--topic-ttl` after the holder's last event there, as the
topic itself would be forgotten were nobody else posting. Posting to a topic another publisher
holds, or that the broker keeps already, costs no share; a publisher with its share held is
refused a topic the broker does not keep, with the time until its oldest holding lapses.

Kept per process, like the other per-client limits (`limits.py`): a publisher spread over N
web processes may hold N shares. The ledger is bounded by the topics it names (never more
than twice `--max-topics`: the oldest holdings past that are let go). A post to a topic the
publisher holds costs two dict operations; the broker is asked only when the share is full.
Greenlet-safe: nothing here yields but the `kept` callback, which is called last.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pushsvc.core.token_bucket import Clock
from pushsvc.errors import TopicShareSpent


def publisher_key(subject: str | None, address: str | None) -> str:
    """Who publishes, for the bounds kept per publisher (the publish rate, the topic share):
    the token's subject, else the client's address; one key whichever API publishes."""
    return f"sub:{subject}" if subject else f"ip:{address}"


class TopicShares:
    """Who holds which topic, and how many each publisher holds."""

    def __init__(
        self, share: int, *, ttl_s: float, max_topics: int, clock: Clock = time.monotonic
    ) -> None:
        if share < 1:
            raise ValueError(f"a publisher's share must be at least 1 topic, got {share}")
        self.share = share
        # A topic never forgotten (`--topic-ttl 0`) is held as long as the process runs.
        self._ttl_s = ttl_s if ttl_s > 0 else math.inf
        self._cap = 2 * max_topics
        self._clock = clock
        self._holder: dict[str, str] = {}
        # Per publisher, its topics in the order of its last event there (oldest first).
        self._held: dict[str, dict[str, float]] = {}

    def admit(self, publisher: str, topic: str, kept: Callable[[str], bool]) -> None:
        """Raise TopicShareSpent, with the seconds until a holding lapses, when `publisher`
        holds its share and `topic` is neither one of them nor kept by the broker
        (`kept(topic)`, asked only then)."""
        held = self._held.get(publisher)
        if held is None or topic in held or len(held) < self.share:
            return
        now = self._clock()
        self._lapse(publisher, held, now)
        if len(held) < self.share or kept(topic):
            return
        oldest = next(iter(held.values()))
        wait = max(1, math.ceil(oldest + self._ttl_s - now)) if self._ttl_s < math.inf else None
        raise TopicShareSpent.at(self.share, retry_after_s=wait)

    def note(self, publisher: str, topic: str) -> None:
        """`publisher` logged events to `topic`: its holding is renewed, or taken when nobody
        holds the topic and the publisher has room in its share."""
        holder = self._holder.get(topic)
        now = self._clock()
        if holder == publisher:
            held = self._held[publisher]
            del held[topic]
            held[topic] = now
            return
        if holder is not None:
            if self._held[holder][topic] + self._ttl_s > now:
                return  # another's, still
            self._release(holder, topic)
        mine = self._held.get(publisher)
        if mine is not None:
            self._lapse(publisher, mine, now)
            if len(mine) >= self.share:
                return
        if len(self._holder) >= self._cap:
            self._lapse_all(now)
        self._held.setdefault(publisher, {})[topic] = now
        self._holder[topic] = publisher

    def holding(self, publisher: str) -> int:
        """How many topics `publisher` holds now."""
        held = self._held.get(publisher)
        if held is None:
            return 0
        self._lapse(publisher, held, self._clock())
        return len(held)

    def _lapse(self, publisher: str, held: dict[str, float], now: float) -> None:
        """Let go of `publisher`'s holdings with no event for the TTL (oldest first). Only
        the lapsed ones and the first kept are looked at: a publisher holding thousands of
        topics pays for what lapsed, not for a copy of what it holds, on every new topic."""
        while held:
            topic, last = next(iter(held.items()))
            if last + self._ttl_s > now:
                break
            self._release(publisher, topic)

    def _lapse_all(self, now: float) -> None:
        """At the ledger's cap: every lapsed holding let go, then the oldest still held by
        the publishers holding most, until the ledger is under its cap."""
        for publisher, held in list(self._held.items()):
            self._lapse(publisher, held, now)
        while len(self._holder) >= self._cap:
            publisher = max(self._held, key=lambda name: len(self._held[name]))
            self._release(publisher, next(iter(self._held[publisher])))

    def _release(self, publisher: str, topic: str) -> None:
        held = self._held[publisher]
        del held[topic]
        del self._holder[topic]
        if not held:
            del self._held[publisher]
