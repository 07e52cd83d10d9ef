"""The deriver on the embedded broker, driven round by round (no timing): a boundary waits for
every source's clock, and a deriver that starts after another continues after the newest
derived event, also when the derived topic's latest update is an idle tick."""

from __future__ import annotations

import tomllib

import orjson
from harness.fenced_publish import publish, publish_applied

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.derive import Deriver
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.event import Event
from pushsvc.core.topics import TopicMatcher
from pushsvc.rules.analytics import default_rule, parse_rules
from support.derive_oracle import Term, assert_close, divide, expected

S = 1_000_000
T0 = 1_763_700_000 * S
LATENESS = 5 * S
RULES = parse_rules(
    tomllib.loads(
        """
[[rule]]
topics = ["s.*"]
windows = ["10s"]
series = ["1s:15m"]

[[derive]]
topic = "s.ratio"
every = "1s"
value = "sum[2s](s.a) / count[2s](s.b)"
"""
    ),
    default_rule((10 * S,), ("count", "mean")),
)


SHARD = (0, 1)


class Embedded:
    """The embedded broker and its partition's aggregator, which applies the log whenever the
    test reads (`apply`), on a wall clock the test moves."""

    def __init__(self) -> None:
        self.wall = T0
        self.broker = MemoryBroker.serving(history=10_000)
        self.aggregator = Aggregator(
            rules=RULES, wall_clock=lambda: self.wall, lateness_us=LATENESS
        )
        self.sent: dict[str, list[tuple[float, int]]] = {"s.a": [], "s.b": []}
        self._log = self.broker.event_log(SHARD)
        self._applied = FIRST

    def apply(self) -> None:
        """Apply and publish what was logged since (the producers' and the deriver's)."""
        for entry in self._log.read(self._applied, count=100_000):
            if entry.ticks is None:  # its own ticks' entries (`tick`) are published already
                assert entry.topic is not None and entry.events is not None
                drafts = self.aggregator.apply_events(entry.topic, entry.events)
                publish_applied(self.broker, SHARD, drafts, entry.id, self._applied)
            self._applied = entry.id

    def tick(self) -> None:
        """The idle tick, as the aggregator publishes it (`--tick`)."""
        self.apply()
        through = self.broker.derived_through(self.aggregator.derived_topics())
        publish(self.broker, self.aggregator.tick(through))

    def latest_clock(self, topic: str) -> int:
        self.apply()
        return self.broker.latest(TopicMatcher([topic]))[topic].clock_us

    def post(self, topic: str, value: float, ts: int) -> None:
        self.broker.append_events(topic, [Event(value, ts)], lateness_us=LATENESS)
        self.apply()
        self.sent[topic].append((value, ts))

    def derived(self) -> list[tuple[int, float]]:
        self.apply()
        page = self.broker.history("s.ratio", limit=10_000)
        events = [orjson.loads(u.data)["event"] for u in page.updates]
        return [(round(e["ts"] * S), e["value"]) for e in events if e is not None]

    def deriver(self) -> Deriver:
        return Deriver(self.broker, RULES, lateness_us=LATENESS)


def _ratio(term: Term) -> float | None:
    return divide(term("sum", 2 * S, "s.a"), term("count", 2 * S, "s.b"))


def test_a_boundary_waits_until_every_source_closed_its_buckets() -> None:
    embedded = Embedded()
    deriver = embedded.deriver()
    for i in range(10):
        embedded.post("s.a", float(i), T0 + i * S)
    assert deriver.step() == 0  # s.b has no clock: its buckets may still come
    for i in range(4):
        embedded.post("s.b", 1.0, T0 + i * S)
    assert deriver.step() == 0  # s.b's clock is 3 s: nothing closed past the lateness
    for i in range(4, 10):
        embedded.post("s.b", 2.0, T0 + i * S)
    # Clocks at 9 s: boundaries 1 s..4 s are closed in both (t + 5 s <= 9 s).
    assert deriver.step() == 4
    assert_close(embedded.derived(), expected(embedded.sent, S, _ratio, lateness_us=LATENESS))
    assert deriver.step() == 0  # nothing new: nothing twice


def test_a_new_deriver_continues_after_the_newest_derived_event_behind_a_tick() -> None:
    embedded = Embedded()
    for i in range(14):
        embedded.post("s.a", float(i), T0 + i * S)
        embedded.post("s.b", 1.0 + i % 3, T0 + i * S)
    assert embedded.deriver().step() == 8  # 1 s .. 8 s
    embedded.apply()  # the aggregator applies the derived events as they come
    # Three seconds of wall time later an idle tick moves the derived topic's clock on (its
    # 1 s event leaves the 10 s window): its latest update now carries no event.
    embedded.wall += 3 * S
    embedded.tick()
    latest = embedded.broker.latest(TopicMatcher(["s.ratio"]))
    assert orjson.loads(latest["s.ratio"].data)["reason"] == "tick"
    for i in range(14, 20):
        embedded.post("s.a", float(i), T0 + i * S)
        embedded.post("s.b", 1.0 + i % 3, T0 + i * S)
    successor = embedded.deriver()
    assert successor.step() == 6  # 9 s .. 14 s, none again
    assert successor.replayed == 0 and successor.late == 0
    assert_close(embedded.derived(), expected(embedded.sent, S, _ratio, lateness_us=LATENESS))


def test_ticks_wait_for_the_deriver_so_an_outage_loses_no_boundary() -> None:
    """No deriver runs for 20 s of wall and event time while the sources go on and idle ticks
    run every second: the derived topic's clock stays where a successor can still append
    the boundaries it missed, and the successor logs every one of them, none late."""
    embedded = Embedded()
    for i in range(8):
        embedded.post("s.a", float(i), T0 + i * S)
        embedded.post("s.b", 1.0 + i % 3, T0 + i * S)
    first = embedded.deriver()
    assert first.step() == 2  # 1 s and 2 s; the deriver then stops
    for i in range(8, 28):
        embedded.wall += S
        embedded.post("s.a", float(i), T0 + i * S)
        embedded.post("s.b", 1.0 + i % 3, T0 + i * S)
        embedded.tick()
    clock = embedded.latest_clock("s.ratio")
    # Ticks went as far as the next boundary (3 s) and its lateness allow, no further.
    assert clock <= T0 + 3 * S + LATENESS
    successor = embedded.deriver()
    assert successor.step() == 20  # 3 s .. 22 s
    assert successor.late == 0 and successor.replayed == 0
    assert_close(embedded.derived(), expected(embedded.sent, S, _ratio, lateness_us=LATENESS))


def test_ticks_follow_the_deriver_past_boundaries_with_no_value() -> None:
    """Boundaries whose value is undefined append nothing; idle ticks still move the derived
    topic's clock as far as the deriver went, so its windows do not stand still."""
    embedded = Embedded()
    deriver = embedded.deriver()
    derived = ["s.ratio"]
    for i in range(40):
        embedded.wall = T0 + i * S
        embedded.post("s.a", float(i), T0 + i * S)
        if i % 5 == 0:  # count[2s](s.b) is 0, the ratio undefined, at three boundaries of five
            embedded.post("s.b", 1.0, T0 + i * S)
        deriver.step()
        embedded.tick()
    assert deriver.late == 0
    logged = [ts for ts, _ in embedded.derived()]
    through = embedded.broker.derived_through(derived)["s.ratio"]
    assert through > logged[-1]  # boundaries with no value after the last one
    clock = embedded.latest_clock("s.ratio")
    assert clock >= through  # ticks went on past the last value, with the deriver
    assert_close(embedded.derived(), expected(embedded.sent, S, _ratio, lateness_us=LATENESS))
