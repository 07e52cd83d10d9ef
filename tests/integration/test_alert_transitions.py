"""Every transition of an alert instance, one test each, as Prometheus tests its alerting
rule (`rules/alerting_test.go`): the aggregator publishing to the memory broker (what
`pushsvc serve` runs, in-process), its wall clock driven by the test so that idle ticks are
deterministic. Each test states the `_alerts` messages it expects and what `GET /alerts`
lists (the broker's active instances), and the reference model (support/alert_model.py)
must expect the same."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

import orjson
from harness.fenced_publish import publish as publish_fenced

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.broker.memory import MemoryBroker
from pushsvc.core.event import Event
from pushsvc.rules.analytics import default_rule, parse_rules
from support.alert_model import AlertSpec, Change, Condition, TopicModel, spec_toml

S = 1_000_000
T0 = 1_763_700_000 * S
WINDOWS = {"10s": 10 * S}
TTL = 30 * S
RULES = """
[[rule]]
topics = ["t.*"]
windows = ["10s"]
stats = ["count", "mean", "max"]
series = []

[[rule]]
topics = ["g.*"]
windows = ["10s"]
stats = ["count", "mean", "max"]
group_by = ["station"]
series = []
"""

Seen = tuple[str, str | None, float, float | None]
"""(state, the group's station or None, since as seconds after T0, value) of a change."""


class Kitchen:
    """The aggregator, the broker it publishes to, and the model of each topic, fed alike;
    the wall clock moves only when the test says so."""

    def __init__(self, *alerts: AlertSpec) -> None:
        text = RULES + "".join(spec_toml(spec, ["t.*", "g.*"]) for spec in alerts)
        rules = parse_rules(tomllib.loads(text), default_rule((10 * S,), ("count",)))
        self.wall_us = 0
        self.aggregator = Aggregator(rules=rules, wall_clock=lambda: self.wall_us, topic_ttl_us=TTL)
        self.broker = MemoryBroker.serving()
        self.models = {
            "t.oven": TopicModel("t.oven", alerts, WINDOWS),
            "g.oven": TopicModel("g.oven", alerts, WINDOWS, group_by=["station"], topic_ttl_us=TTL),
        }
        self.changes: list[Seen] = []
        self._wall_at_event = {topic: 0 for topic in self.models}
        self._clock_at_event = {topic: T0 for topic in self.models}

    def post(self, topic: str, at_s: float, value: float, station: str | None = None) -> None:
        """An event at T0 + `at_s`, no wall time passing."""
        ts = T0 + round(at_s * S)
        tags = None if station is None else {"station": station}
        got = self._publish(self.aggregator.apply_events(topic, [Event(value, ts, tags)]))
        model = self.models[topic]
        self._check(got, model.events([(ts, value, tags)]))
        assert model.clock_us is not None
        self._wall_at_event[topic], self._clock_at_event[topic] = self.wall_us, model.clock_us

    def idle(self, seconds: float) -> None:
        """Wall time passes, then the idle tick runs (`--tick`)."""
        self.wall_us += round(seconds * S)
        got = self._publish(self.aggregator.tick())
        want = []
        for topic, model in self.models.items():
            if model.clock_us is not None:
                elapsed = self.wall_us - self._wall_at_event[topic]
                want += model.tick(self._clock_at_event[topic] + elapsed)
        self._check(got, want)

    def _publish(self, drafts: Any) -> list[Change]:
        updates = publish_fenced(self.broker, drafts)
        return [Change.of_message(orjson.loads(u.data)) for u in updates if u.event == "alert"]

    def _check(self, got: Sequence[Change], want: Sequence[Change]) -> None:
        mine = sorted(got, key=lambda c: c.instance)
        theirs = sorted(want, key=lambda c: c.instance)
        assert len(mine) == len(theirs), (mine, theirs)
        assert all(a.agrees(b) for a, b in zip(mine, theirs, strict=True)), (mine, theirs)
        self.changes += [_seen(c) for c in got]
        active = [Change.of_message(orjson.loads(b)) for b in self.broker.active_alerts()]
        expected = [c for model in self.models.values() for c in model.active()]
        assert _sorted(active) == _sorted(expected)

    def active(self) -> list[Seen]:
        """What `GET /alerts` lists, as (state, station, since, value)."""
        return _sorted([Change.of_message(orjson.loads(b)) for b in self.broker.active_alerts()])

    def take(self) -> list[Seen]:
        """The changes published since the last call, in order."""
        taken, self.changes = self.changes, []
        return taken


def _sorted(changes: Sequence[Change]) -> list[Seen]:
    return [_seen(c) for c in sorted(changes, key=lambda c: (c.instance, c.state))]


def _seen(change: Change) -> Seen:
    station = None if change.group is None else change.group["station"]
    return (change.state, station, (change.since_us - T0) / S, change.value)


def _alert(when: str, **fields: Any) -> AlertSpec:
    clear = fields.pop("clear", None)
    return AlertSpec(
        "a",
        Condition.parse(when),
        None if clear is None else Condition.parse(clear),
        round(fields.pop("for_s", 0) * S),
        round(fields.pop("keep_firing_for_s", 0) * S),
        **fields,
    )


def _states(changes: Sequence[Seen]) -> list[str]:
    return [state for state, *_ in changes]


def test_pending_that_clears_turns_inactive_and_leaves_the_active_list() -> None:
    # The defect this pins: a pending instance whose `when` stopped holding stayed listed as
    # pending for good (nothing was published for it). One event a second of event time.
    kitchen = Kitchen(_alert("max[10s] > 100", for_s=20))
    for i in range(31):
        kitchen.post("t.oven", i, 200.0 if 3 <= i <= 7 else 10.0)
        if i == 3:
            assert kitchen.active() == [("pending", None, 3.0, 200.0)]
    # The 200 at 7 s leaves the 10 s window at 17 s: inactive, before `for` ran out (23 s).
    assert kitchen.take() == [("pending", None, 3.0, 200.0), ("inactive", None, 17.0, 10.0)]
    assert kitchen.active() == []
    kitchen.post("t.oven", 31, 250.0)  # a later spike: pending again, `for` counts afresh
    assert kitchen.take() == [("pending", None, 31.0, 250.0)]
    assert kitchen.active() == [("pending", None, 31.0, 250.0)]


def test_pending_fires_at_the_first_evaluation_for_after_it_tripped() -> None:
    kitchen = Kitchen(_alert("mean[10s] > 100", for_s=5))
    for at in (0, 1, 3, 4.999, 5, 7):
        kitchen.post("t.oven", at, 150.0)
    assert kitchen.take() == [("pending", None, 0.0, 150.0), ("firing", None, 5.0, 150.0)]
    assert kitchen.active() == [("firing", None, 5.0, 150.0)]


def test_for_runs_on_idle_ticks_when_no_window_changes() -> None:
    kitchen = Kitchen(_alert("max[10s] > 100", for_s=3))
    kitchen.post("t.oven", 0, 150.0)
    for _ in range(4):
        kitchen.idle(1)  # the 150 stays in the window: no window changes, the clock moves
    assert kitchen.take() == [("pending", None, 0.0, 150.0), ("firing", None, 3.0, 150.0)]


def test_firing_resolves_when_when_stops_holding() -> None:
    kitchen = Kitchen(_alert("max[10s] > 100"))
    kitchen.post("t.oven", 0, 150.0)
    kitchen.post("t.oven", 9, 50.0)
    kitchen.post("t.oven", 10, 60.0)  # the 150 left the window
    assert kitchen.take() == [("firing", None, 0.0, 150.0), ("resolved", None, 10.0, 60.0)]
    assert kitchen.active() == []


def test_keep_firing_for_holds_it_firing_on_the_topic_clock() -> None:
    kitchen = Kitchen(_alert("max[10s] > 100", keep_firing_for_s=5))
    kitchen.post("t.oven", 0, 150.0)
    kitchen.post("t.oven", 10, 50.0)  # cleared at 10 s: kept firing until 15 s
    kitchen.post("t.oven", 12, 120.0)  # a relapse: the 5 s start again once it clears
    kitchen.post("t.oven", 22, 50.0)  # cleared at 22 s
    kitchen.post("t.oven", 26.9, 50.0)
    assert kitchen.active() == [("firing", None, 0.0, 150.0)]
    kitchen.post("t.oven", 27, 50.0)
    assert kitchen.take() == [("firing", None, 0.0, 150.0), ("resolved", None, 27.0, 50.0)]
    assert kitchen.active() == []


def test_keep_firing_for_runs_out_on_idle_ticks_once_the_windows_are_empty() -> None:
    # The defect this pins: once a topic's windows were empty, idle ticks passed it by, so an
    # instance held by keep_firing_for stayed firing until the topic's next event.
    kitchen = Kitchen(_alert("max[10s] > 100", keep_firing_for_s=30))
    kitchen.post("t.oven", 0, 150.0)
    for _ in range(45):
        kitchen.idle(1)  # at 10 s the window empties: cleared, kept firing until 40 s
    assert kitchen.take() == [("firing", None, 0.0, 150.0), ("resolved", None, 40.0, None)]
    assert kitchen.active() == []


def test_for_runs_on_idle_ticks_for_an_alert_on_a_quiet_topic() -> None:
    # `count[10s] < 1`: the alert a quiet topic trips; its `for` runs once the window is
    # empty, when idle ticks used to pass the topic by.
    kitchen = Kitchen(_alert("count[10s] < 1", for_s=20))
    kitchen.post("t.oven", 0, 5.0)
    for _ in range(35):
        kitchen.idle(1)
    assert kitchen.take() == [("pending", None, 10.0, 0.0), ("firing", None, 30.0, 0.0)]
    assert kitchen.active() == [("firing", None, 30.0, 0.0)]


def test_clear_holds_it_firing_between_the_two_thresholds() -> None:
    kitchen = Kitchen(_alert("max[10s] > 100", clear="max[10s] < 80"))
    kitchen.post("t.oven", 0, 150.0)
    kitchen.post("t.oven", 10, 90.0)  # `when` no longer holds, `clear` does not yet
    kitchen.post("t.oven", 15, 85.0)
    assert kitchen.active() == [("firing", None, 0.0, 150.0)]
    kitchen.post("t.oven", 20.5, 70.0)  # the 90 left: max 85, still above 80
    kitchen.post("t.oven", 25.5, 60.0)  # the 85 left: max 70 < 80, resolved
    assert kitchen.take() == [("firing", None, 0.0, 150.0), ("resolved", None, 25.5, 70.0)]


def test_clear_and_keep_firing_for_together() -> None:
    kitchen = Kitchen(_alert("max[10s] > 100", clear="max[10s] < 80", keep_firing_for_s=3))
    kitchen.post("t.oven", 0, 150.0)
    kitchen.post("t.oven", 10, 70.0)  # cleared at 10 s
    kitchen.post("t.oven", 12, 90.0)  # between the thresholds: not cleared any more
    kitchen.post("t.oven", 22.5, 10.0)  # cleared at 22.5 s
    kitchen.post("t.oven", 25.5, 10.0)
    assert kitchen.take() == [("firing", None, 0.0, 150.0), ("resolved", None, 25.5, 10.0)]


def test_an_instance_cleared_while_when_holds_trips_again_at_the_next_tick() -> None:
    # `clear` on another statistic than `when` can hold while `when` does: the instance
    # resolves, and (as at the next event) trips again at the next idle tick, windows changed
    # or not. Ticks used to skip it: it was no longer live and no window had changed.
    kitchen = Kitchen(_alert("max[10s] > 100", clear="mean[10s] < 100"))
    kitchen.post("t.oven", 0, 150.0)
    kitchen.post("t.oven", 1, 10.0)  # max 150, mean 80: cleared while `when` holds
    kitchen.idle(0.5)
    assert kitchen.take() == [
        ("firing", None, 0.0, 150.0),
        ("resolved", None, 1.0, 80.0),
        ("firing", None, 1.5, 150.0),
    ]


def test_a_forgotten_groups_pending_instance_turns_inactive() -> None:
    kitchen = Kitchen(_alert("max[10s] > 100", for_s=60))
    kitchen.post("g.oven", 0, 150.0, "grill")
    # The grill's last event is 30 s old (the TTL) at 30 s; groups are looked for once per
    # tenth of the TTL of topic clock.
    kitchen.post("g.oven", 29, 10.0, "wok")  # the topic's own instance clears
    assert kitchen.active() == [("pending", "grill", 0.0, 150.0)]
    kitchen.post("g.oven", 33, 10.0, "wok")
    assert kitchen.take() == [
        ("pending", None, 0.0, 150.0),
        ("pending", "grill", 0.0, 150.0),
        ("inactive", None, 29.0, 10.0),
        ("inactive", "grill", 33.0, 150.0),  # the value its last evaluation read
    ]
    assert kitchen.active() == []


def test_a_forgotten_groups_firing_instance_resolves() -> None:
    # `count[10s] < 2` holds on an empty window: the grill's instance fires until the group
    # is forgotten (the wok's events keep the topic's own instance quiet).
    kitchen = Kitchen(_alert("count[10s] < 2"))
    kitchen.post("g.oven", 0, 1.0, "grill")
    for at in range(31):
        kitchen.post("g.oven", at + 0.5, 1.0, "wok")
    assert kitchen.take() == [
        ("firing", None, 0.0, 1.0),
        ("firing", "grill", 0.0, 1.0),
        ("resolved", None, 0.5, 2.0),
        ("firing", "wok", 0.5, 1.0),
        ("resolved", "wok", 1.5, 2.0),
        ("resolved", "grill", 30.5, 1.0),  # 30 s (the TTL) after its last event
    ]
    assert kitchen.active() == []
