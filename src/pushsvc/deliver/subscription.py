"""A new stream's subscription, primed with what it must send before live updates.

Like Mercure's `AddSubscriber` then `Ready`: the client is registered with the hub FIRST,
the process's broker feed watches its topics (confirmed), then the replay (for a
`Last-Event-ID`) or the snapshot is read, and the client's floor is set to the newest
update that covered. Whatever the hub queued in between is either after
the floor (sent live) or dropped when the stream takes it (already in the replay or snapshot):
nothing is lost or sent twice.

A `Last-Event-ID` the history cannot replay completely — malformed, from another epoch
(the history was lost), never issued, or older than what is kept — gets a snapshot marked
`"gap": true` instead: never a silent gap, never a partial replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pushsvc.broker.base import Broker, UpdatesFeed
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateId, newest_id
from pushsvc.deliver.hub import Hub, StreamExit, Subscriber
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import rendering_for


@dataclass(slots=True)
class Primed:
    """A subscribed client and what its stream sends first: `replay` (updates after the
    client's Last-Event-ID) or, when that is None, a snapshot of `latest` (with `gap` set
    when the client asked to resume and could not be)."""

    client: Subscriber
    replay: list[Update] | None
    latest: dict[str, Update]
    gap: bool
    _close: Callable[[], None]
    groups: dict[str, list[bytes]] = field(default_factory=dict)
    """The live groups of the grouping topics in `latest` (each group's JSON)."""

    def close(self) -> None:
        """End the subscription (the stream is over): local and in the broker."""
        self._close()

    def head(self, projection: Projection | None) -> bytes:
        """The SSE bytes to send before live updates, rendered for the stream's projection
        (`pushsvc.deliver.rendering`)."""
        rendering = rendering_for(projection, chunked=False)
        if self.replay is not None:
            return rendering.replay(self.replay)
        return rendering.snapshot(self.latest, self.groups, gap=self.gap)


def subscribe(
    broker: Broker,
    hub: Hub,
    feed: UpdatesFeed,
    matcher: TopicMatcher,
    last_event_id: str | None,
    grouping: Callable[[str], bool] | None = None,
) -> Primed:
    """Subscribe `matcher` to the hub and prime it (see the module docstring). `grouping`
    tells the topics whose snapshot carries their live groups.

    Raises BrokerUnavailable (after unsubscribing) when the history cannot be read. Call it
    once the response has started (from the stream's generator): a browser's EventSource
    retries a stream that breaks, but gives up for good on an error status.
    """
    client = hub.subscribe(matcher)
    selectors = matcher.selectors
    watching = False

    def close() -> None:
        hub.unsubscribe(client)
        if watching:
            feed.unwatch(selectors)

    try:
        # The process receives the topics' updates from here on (the feed confirmed it);
        # only then is the history read, so nothing falls between the two.
        feed.watch(selectors)
        watching = True
        after = UpdateId.parse(last_event_id) if last_event_id else None
        replay = broker.replay(after, matcher) if after is not None else None
        if replay is not None:
            client.queue.floor = replay[-1].id if replay else after
            return Primed(client, replay, {}, False, close)
        latest = broker.latest(matcher)
        client.queue.floor = newest_id(latest.values())
        groups = (
            broker.latest_groups([topic for topic in latest if grouping(topic)])
            if grouping is not None
            else {}
        )
        return Primed(client, None, latest, last_event_id is not None, close, groups)
    except BaseException as exc:
        client.close(StreamExit.ERROR if isinstance(exc, Exception) else StreamExit.GONE)
        close()
        raise
