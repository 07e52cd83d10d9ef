"""Each source of a session rule is judged by its own topic's grace, through the embedded
broker, an aggregator and the sessionizer: behind the sources' clock by minutes, a click of the
topic whose rule gives an hour of grace joins its session, and one of the topic on the server's
5 s makes none (counted late), as the broker judges each on its own topic; no session ends
while the hour's source could still bring it a click; and the many sessions a long grace holds
open are saved less often."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable

import pytest
from harness.fenced_publish import LEASE_US

from pushsvc.aggregate import sessionize
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.sessionize import Sessionizer
from pushsvc.broker.base import Applied
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.event import Event
from pushsvc.rules.analytics import default_rule, parse_rules

S = 1_000_000
T0 = 1_763_700_000 * S
LATENESS = 5 * S
RULES = parse_rules(
    tomllib.loads(
        """
[[rule]]
topics = ["app.*"]
windows = ["1m"]
grace = "1h"

[[session]]
topic = "visits"
from = ["app.*", "web.*"]
key = "user"
gap = "30s"
keep_key = true
"""
    ),
    default_rule((60 * S,), ("count",)),
)


class _Feed:
    """The embedded broker, an aggregator publishing every partition's log at once and a
    sessionizer stepped after each post."""

    def __init__(
        self,
        broker: MemoryBroker,
        checkpoint_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.aggregator = Aggregator(rules=RULES, wall_clock=lambda: int(time.time() * S))
        self.sessionizer = Sessionizer(
            broker,
            RULES.sessions,
            lateness_us=LATENESS,
            analytics=RULES,
            checkpoint_s=checkpoint_s,
            clock=clock,
        )
        self.shards = [(i, broker.partitions) for i in range(broker.partitions)]
        self.applied = [FIRST] * broker.partitions

    def post(self, topic: str, ts_us: int, user: str) -> None:
        # As a POST does: judged by the topic's grace, on its own clock.
        grace, _ = RULES.grace_of(topic, LATENESS)
        self.broker.append_events(topic, [Event(1.0, ts_us, {"user": user})], lateness_us=grace)
        for index, shard in enumerate(self.shards):
            entries = self.broker.event_log(shard).read(self.applied[index], count=1000)
            if not entries:
                continue
            lease = self.broker.lease(shard, ttl_us=LEASE_US)
            assert lease.renew()
            drafts = [
                draft
                for entry in entries
                if entry.topic is not None and entry.events is not None
                for draft in self.aggregator.apply_events(entry.topic, entry.events)
            ]
            done = Applied(shard, entries[-1].id, len(entries), self.applied[index])
            self.broker.publish_updates(drafts, applied=done, fence=lease.token)
            self.applied[index] = entries[-1].id
            lease.release()
        self.sessionizer.step()

    def sessions(self) -> list[tuple[str, int, int]]:
        """(user, first µs, events) of every session logged."""
        out = []
        for shard in self.shards:
            for entry in self.broker.event_log(shard).read(FIRST, count=1000):
                if entry.topic == "visits" and entry.events is not None:
                    for e in entry.events:
                        assert e.tags is not None and e.value is not None
                        first = e.ts_us - round(e.value * S)
                        out.append((e.tags["user"], first, int(e.tags["events"])))
        return sorted(out)


def test_each_source_is_judged_by_its_own_topics_grace() -> None:
    feed = _Feed(MemoryBroker.serving())
    post, sessions, sessionizer = feed.post, feed.sessions, feed.sessionizer
    post("web.clicks", T0, "ann")  # each topic's clock at T0
    post("app.clicks", T0, "bob")
    post("app.clicks", T0 + 600 * S, "zed")  # the sources' clock: 10 minutes on
    post("web.clicks", T0 + 20 * S, "ann")  # 9'40" behind it, on time for its topic's 5 s
    post("app.clicks", T0 + 25 * S, "bob")  # 9'35" behind it, within its topic's hour
    assert sessionizer.late == 1  # ann's: past the web's 5 s behind the sources' clock
    # bob's session could still take a click of the app topic: open until its hour has passed.
    post("app.clicks", T0 + 3600 * S, "zed")
    assert ("bob", T0, 2) not in sessions()
    post("app.clicks", T0 + 3700 * S, "zed")
    assert sessions() == [("ann", T0, 1), ("bob", T0, 2)]  # zed's still open
    assert sessionizer.late == 1


def test_with_many_sessions_open_the_state_is_saved_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long grace holds many sessions open, and a save writes every one: a rule's state is
    saved at most once per `SAVE_S_PER_OPEN` per open session (here made 1 s, so that three
    open sessions stand for the tens of thousands an hour's grace may hold)."""
    monkeypatch.setattr(sessionize, "SAVE_S_PER_OPEN", 1.0)
    broker = MemoryBroker.serving()
    saves: list[float] = []
    now = [1000.0]
    save = broker.save_session_state

    def counted(topic: str, state: bytes) -> None:
        saves.append(now[0])
        save(topic, state)

    monkeypatch.setattr(broker, "save_session_state", counted)
    feed = _Feed(broker, checkpoint_s=0.0, clock=lambda: now[0])
    for user in ("ann", "bob", "cat"):
        feed.post("app.clicks", T0, user)  # each step a chance to save
    assert feed.sessionizer.open_sessions() == {"visits": 3}
    saves.clear()
    for _ in range(12):
        now[0] += 0.5
        feed.sessionizer.step()
    assert saves == [1003.0, 1006.0]  # every 3 s: 3 open, 1 s each
