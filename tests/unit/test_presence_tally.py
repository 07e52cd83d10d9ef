"""Presence's tally (`pushsvc.core.presence`) and its stream events
(`pushsvc.deliver.presence_events`): what a stream counts for, exactly, through joins and
leaves; which subjects are kept; when a stream is given an event."""

from __future__ import annotations

import json

from pushsvc.core.presence import NOBODY, Presence, PresenceRegistry, Watch, pattern_matcher
from pushsvc.core.topics import TopicMatcher
from pushsvc.deliver.presence import LocalPresence
from pushsvc.deliver.presence_events import Listener, PresenceEvents


def test_named_topics_count_once_each_through_joins_and_leaves() -> None:
    registry = PresenceRegistry()
    one = Watch.of(TopicMatcher(["orders"]), None, None)
    two = Watch.of(TopicMatcher(["orders", "payments"]), None, None)
    registry.join(one)
    registry.join(two)
    assert registry.presence("orders") == Presence(2)
    assert registry.presence("payments") == Presence(1)
    assert registry.presence("other") is NOBODY
    registry.leave(two)
    assert registry.presence("payments") is NOBODY
    assert registry.presence("orders") == Presence(1)
    registry.leave(one)
    assert registry.presence("orders") is NOBODY
    assert registry.names.counts == {} and registry.streams == 0


def test_a_pattern_stream_counts_for_every_topic_it_would_receive() -> None:
    registry = PresenceRegistry()
    registry.join(Watch.of(TopicMatcher(["sensors.*", "orders"]), None, None))
    registry.join(Watch.of(TopicMatcher(["*"]), None, None))
    assert registry.presence("sensors.a") == Presence(2)
    assert registry.presence("sensors.never-posted") == Presence(2)
    assert registry.presence("orders") == Presence(2)  # once per stream, named or matched
    assert registry.presence("payments") == Presence(1)


def test_a_pattern_stream_narrowed_by_its_scope_counts_only_within_it() -> None:
    """A `*` stream of a reader of `public.*` receives no private topic: not counted there."""
    watch = Watch.of(TopicMatcher(["*"]), ("public.*",), "reader")
    assert watch.pattern == "*|public.*"
    registry = PresenceRegistry()
    registry.join(watch)
    assert registry.presence("public.news") == Presence(1)
    assert registry.presence("vault.payroll") is NOBODY
    assert pattern_matcher(watch.pattern)("_alerts")  # filtered message by message instead
    # A scope of everything narrows nothing.
    assert Watch.of(TopicMatcher(["*"]), ("*",), None).pattern == "*"


def test_a_foreign_pattern_key_matches_nothing() -> None:
    assert not pattern_matcher("not a*valid|")("anything")


def test_subjects_are_kept_only_when_asked_and_once_each() -> None:
    kept = PresenceRegistry(keep_subs=True)
    unkept = PresenceRegistry()
    watches = [
        Watch.of(TopicMatcher(["orders"]), ("orders",), "alice"),
        Watch.of(TopicMatcher(["orders"]), ("orders",), "alice"),
        Watch.of(TopicMatcher(["orders"]), ("orders",), "bob"),
        Watch.of(TopicMatcher(["orders"]), ("orders",), None),
    ]
    for watch in watches:
        kept.join(watch)
        unkept.join(watch)
    assert kept.presence("orders") == Presence(4, ("alice", "bob"))
    assert unkept.presence("orders") == Presence(4)
    kept.leave(watches[0])
    assert kept.presence("orders") == Presence(3, ("alice", "bob"))
    kept.leave(watches[1])
    assert kept.presence("orders") == Presence(2, ("bob",))
    assert unkept.names.subs == {}


def test_changes_are_noted_for_the_next_flush() -> None:
    registry = PresenceRegistry()
    watch = Watch.of(TopicMatcher(["a", "b"]), None, None)
    registry.join(watch)
    assert registry.names.take_changed() == {"a", "b"}
    assert registry.names.take_changed() == set()
    registry.leave(watch)
    assert registry.names.take_changed() == {"a", "b"}


class Recorded:
    """A live stream's side channel, as the presence events see it."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def send_aside(self, message: bytes, /) -> None:
        self.messages.append(message)


def _data(message: bytes) -> object:
    lines = message.decode().splitlines()
    assert lines[0] == "event: presence" and not any(line.startswith("id:") for line in lines)
    return json.loads(lines[1].removeprefix("data: "))


def test_a_listener_is_given_an_event_only_when_its_topics_presence_changed() -> None:
    registry = PresenceRegistry(keep_subs=True)
    events = PresenceEvents(LocalPresence(registry))
    own = Watch.of(TopicMatcher(["orders"]), None, "alice")
    registry.join(own)
    listener = Listener(frozenset({"orders"}), lambda topic: False)
    events.listen(listener)
    assert events.tick() == 0  # not live yet: its head is being written
    stream = Recorded()
    listener.live(stream)
    assert events.tick() == 1
    assert _data(stream.messages[-1]) == {"topics": {"orders": {"watching": 1}}}
    assert events.tick() == 0  # unchanged: nothing
    other = Watch.of(TopicMatcher(["orders"]), None, "bob")
    registry.join(other)
    registry.leave(other)
    assert events.tick() == 0  # changed and back within the second: conflated away
    registry.join(Watch.of(TopicMatcher(["orders"]), None, "bob"))
    assert events.tick() == 1
    # Bob's subject changed nothing this listener may see but the count.
    assert _data(stream.messages[-1]) == {"topics": {"orders": {"watching": 2}}}
    events.forget(listener)
    registry.join(Watch.of(TopicMatcher(["orders"]), None, None))
    assert events.tick() == 0 and len(stream.messages) == 2


def test_a_listener_whose_caller_may_see_subjects_gets_them() -> None:
    registry = PresenceRegistry(keep_subs=True)
    events = PresenceEvents(LocalPresence(registry))
    registry.join(Watch.of(TopicMatcher(["orders", "payments"]), None, "alice"))
    stream = Recorded()
    listener = Listener(frozenset({"orders", "payments"}), lambda topic: topic == "orders")
    listener.live(stream)
    events.listen(listener)
    assert events.tick() == 1
    assert _data(stream.messages[0]) == {
        "topics": {
            "orders": {"watching": 1, "subs": ["alice"]},
            "payments": {"watching": 1},
        }
    }
