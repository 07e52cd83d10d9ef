"""A cold aggregator that restores checkpoints and replays only what the trimmed log still
holds continues exactly as one that never stopped: same drafts, byte for byte.

This is the aggregator half of the Delivery promise for durable state (groups, count and
sketch windows, series buckets and their message counts, anomaly detectors, alert states, a
session topic's own statistics in its long windows); tests/system/faults checks the whole on
Redis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event, Message
from pushsvc.rules.alerts import AlertRule, RuleOutline, parse_alerts
from pushsvc.rules.analytics import Rule, Rules, default_rule
from pushsvc.rules.anomaly import AnomalyRule
from pushsvc.rules.file_shape import decode_rules_file
from pushsvc.rules.sessions import FunnelSpec, SessionRule
from pushsvc.rules.tiers import parse_tiers

S = 1_000_000
T0 = 1_700_000_000 * S
STATS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
ALL = (*STATS, "rate")

TOPICS = ("grouped", "counted", "last", "long", "plain", "scored", "solo", "visits")
#: Distinct counts and top values in every window kind, whose state must come back too.
TAG_STATS: dict[str, Any] = {"distinct": ("u",), "top": (("p", 2),)}
SCORED = AnomalyRule(S, "mean", 10, 0.3)
SOLO = AnomalyRule(S, "rate", 10, 0.3)

Entry = tuple[tuple[int, int], str, list[Event] | None, dict[str, int] | None]
"""(position, topic, events, ticks): a log entry, events, a round of ticks, or the topic's
deletion (neither events nor ticks)."""


def _rules(*extra: Rule) -> Rules:
    return Rules(
        [
            Rule(1, ("grouped",), (2 * S, 10 * S), (), ALL, ("k",), 2, **TAG_STATS),
            Rule(2, ("counted",), (2 * S,), (3, 5), ALL, ("k",), 2, **TAG_STATS),
            Rule(3, ("last",), (), (4,), ("count", "mean", "p50", "rate"), **TAG_STATS),
            # A sketch window (120 s, in 2 s sub-buckets) beside an exact one, grouped.
            Rule(
                4,
                ("long",),
                (2 * S, 120 * S),
                (3,),
                ALL,
                ("k",),
                2,
                exact_up_to_us=10 * S,
                **TAG_STATS,
            ),
            # Anomaly scores of each group's 1 s buckets, and of a single tier's (whose
            # detector only a checkpoint keeps: no coarser tier makes the topic durable).
            Rule(5, ("scored",), (2 * S,), (), ALL, ("k",), 2, anomaly=SCORED),
            Rule(6, ("solo",), (2 * S,), (), ALL, series=parse_tiers("1s:1m"), anomaly=SOLO),
            # A session topic: its own statistics in an exact window and a long one.
            Rule(7, ("visits",), (2 * S, 120 * S), (), ("count", "p50"), exact_up_to_us=10 * S),
            *extra,
        ],
        default_rule((2 * S, 10 * S), STATS, parse_tiers("1s:1m,10s:10m")),
        alerts=_alerts(),
        sessions=[VISITS],
    )


VISITS = SessionRule(
    1, "visits", ("src",), "user", 30 * S, funnel=FunnelSpec("step", ("view", "cart"), 60 * S)
)
#: Session events' tags (what the sessionizer appends), in every topic's events.
SESSION_TAGS = [
    {"events": "1", "reached": "view", "open": "2"},
    {"events": "3", "reached": "cart", "open": "1", "s2": "2.5"},
    {"events": "5", "reached": "cart", "open": "4", "s2": "40"},
    {"events": "2", "reached": "none", "open": "0"},
]


def _alerts() -> tuple[AlertRule, ...]:
    """Alerts over a grouping topic and a plain one: pending, firing and keep_firing_for,
    with hysteresis, whose states must come back from a checkpoint too."""
    table = [
        {
            "name": "high",
            "topics": ["grouped", "plain"],
            "when": "mean[2s] > 10",
            "clear": "mean[2s] < 0",
            "for": "3s",
            "keep_firing_for": "4s",
        }
    ]
    scope = RuleOutline(0, ("*",), ("2s", "10s"), ALL)
    return parse_alerts(decode_rules_file({"alert": table}).alert, [], scope, known_stats=ALL)


@st.composite
def _logs(draw: st.DrawFn) -> list[Entry]:
    log: list[Entry] = []
    clock = 1_700_000_000 * S
    for n in range(draw(st.integers(5, 50))):
        position = (1000 + n, 0)
        if draw(st.integers(0, 9)) == 0:
            log.append((position, draw(st.sampled_from(TOPICS)), None, None))
            continue
        if draw(st.integers(0, 5)) == 0:
            clock += draw(st.sampled_from([S, 4 * S, 15 * S]))
            log.append((position, "", None, dict.fromkeys(TOPICS, clock)))
            continue
        events = []
        for _ in range(draw(st.integers(1, 3))):
            clock += draw(st.sampled_from([0, 300_000, 2 * S, 11 * S]))
            late = draw(st.sampled_from([0, 0, 0, 3 * S]))
            tags = draw(st.sampled_from([None, {"k": "a"}, {"k": "b"}, {"k": "c"}, *SESSION_TAGS]))
            if draw(st.booleans()):
                tags = {
                    **(tags or {}),
                    "u": draw(st.sampled_from("wxyz")),
                    "p": draw(st.sampled_from("pqr")),
                }
            value = draw(st.sampled_from([1.0, -2.5, 40.0]))
            # Some events carry a message, some of those no value: the windows and the series
            # buckets count them by type, which a checkpoint must bring back too.
            kind = draw(st.sampled_from([None, None, None, "shipped", "error"]))
            if kind is None:
                events.append(Event(value, clock - late, tags))
            else:
                valued = value if draw(st.booleans()) else None
                events.append(Event(valued, clock - late, tags, Message(kind, b"{}")))
        log.append((position, draw(st.sampled_from(TOPICS)), events, None))
    return log


def _apply(aggregator: Aggregator, entry: Entry) -> list[bytes]:
    position, topic, events, ticks = entry
    if ticks is not None:
        drafts = aggregator.apply_ticks(ticks, position)
    elif events is None:
        drafts = aggregator.delete(topic, position)
    else:
        drafts = aggregator.apply_events(topic, events, position)
    return [d.body for d in drafts]


def _kept(
    log: Sequence[Entry], upto: int, aggregator: Aggregator, saved: dict[str, Checkpoint]
) -> list[Entry]:
    """What a trimmed log still holds after entry `upto`: per topic, what its exact windows
    may still need and everything after its checkpoint; ticks all (they are cheap to keep)."""
    kept = []
    for entry in log[: upto + 1]:
        position, topic, events, _ = entry
        horizon = None if events is None else aggregator.horizon_us(topic)
        if horizon is None:
            # Ticks and deletions all (they are cheap to keep), and the entries of a topic
            # deleted since: a deletion the log keeps comes after them, and drops them.
            kept.append(entry)
            continue
        assert events is not None
        needed = max(e.ts_us for e in events) > horizon
        checkpoint = saved.get(topic)
        after = position > checkpoint.position if checkpoint else aggregator.durable(topic)
        if needed or after:
            kept.append(entry)
    return kept


@settings(max_examples=80, deadline=None)
@given(_logs(), st.data())
def test_a_restored_aggregator_continues_exactly(log: list[Entry], data: st.DataObject) -> None:
    _check_continues_exactly(log, data.draw(st.integers(0, len(log) - 1)))


def _ticks(clock_s: int) -> dict[str, int]:
    return dict.fromkeys(TOPICS, T0 + clock_s * S)


def test_a_replayed_event_of_a_group_forgotten_since_stays_out_of_the_overflow_groups_series() -> (
    None
):
    """Group k=null is forgotten (idle 20 s) as the b event arrives and overflows into the
    group (other): replayed from the checkpoint, the k=null event must not land in (other)'s
    series, which did not exist then (its bucket closed as a point nobody had made)."""
    events = [Event(1.0, T0 + S, None), Event(1.0, T0 + 12 * S, {"k": "a"})]
    events.append(Event(1.0, T0 + 23 * S, {"k": "b"}))
    log: list[Entry] = [((1000, 0), "", None, _ticks(1)), ((1001, 0), "grouped", events, None)]
    log += [((1002 + i, 0), "", None, _ticks(24 + i)) for i in range(3)]
    _check_continues_exactly(log, 1)


def test_a_replayed_tick_from_before_a_topics_first_event_moves_nothing() -> None:
    """Ticks logged before `long`'s first event found no topic to move; replayed before its
    checkpoint they must not move its windows' clock past the checkpoint's."""
    log: list[Entry] = [((1000 + i, 0), "", None, _ticks(i + 1)) for i in range(4)]
    log.append(((1004, 0), "long", [Event(1.0, T0 + S, None)], None))
    log.append(((1005, 0), "long", [Event(1.0, T0 + S, None), Event(1.0, T0 + 4 * S, None)], None))
    log.append(((1006, 0), "", None, _ticks(5)))
    _check_continues_exactly(log, 4)


def _check_continues_exactly(log: list[Entry], split: int) -> None:
    """A cold aggregator restored from checkpoints taken after entry `split`, replaying what
    the trimmed log keeps, drafts every later entry byte for byte as the running one does."""
    rules = _rules()
    running = Aggregator(rules=rules, wall_clock=lambda: 0, topic_ttl_us=20 * S)
    for entry in log[: split + 1]:
        _apply(running, entry)
    position = log[split][0]
    saved = {
        topic: checkpoint
        for topic in running.topics()
        if running.durable(topic)
        and (checkpoint := running.checkpoint(topic, position)) is not None
    }
    # Through the wire format, as Redis keeps it.
    saved = {t: Checkpoint.of_fields(c.fields()) for t, c in saved.items()}
    cold = Aggregator(rules=rules, wall_clock=lambda: 0, topic_ttl_us=20 * S)
    for checkpoint in saved.values():
        cold.restore(checkpoint)
    for entry in _kept(log, split, running, saved):
        _apply(cold, entry)
    cold.end_replay()
    for topic in running.topics():
        clock = running.clock(topic)
        assert clock is not None
        cold.restore_clock(topic, clock)
    for entry in log[split + 1 :]:
        assert _apply(cold, entry) == _apply(running, entry), entry


def test_a_checkpoint_written_before_session_statistics_were_kept_still_loads() -> None:
    """Without its `sessions` field (as written before): the topic's other durable state comes
    back, and its long windows' session statistics start from the next session event."""
    rules = _rules()
    running = Aggregator(rules=rules, wall_clock=lambda: 0)
    events = [Event(30.0, T0 + S, SESSION_TAGS[1]), Event(2.0, T0 + 2 * S, SESSION_TAGS[0])]
    running.apply_events("visits", events, (1000, 0))
    checkpoint = running.checkpoint("visits", (1000, 0))
    assert checkpoint is not None
    fields = checkpoint.fields()
    del fields[b"sessions"]
    cold = Aggregator(rules=rules, wall_clock=lambda: 0)
    cold.restore(Checkpoint.of_fields(fields))
    cold.end_replay()  # the log kept nothing of it: its entries are older than 2 s
    [update] = cold.apply_events("visits", [Event(1.0, T0 + 3 * S, SESSION_TAGS[3])], (1001, 0))
    long = orjson.loads(update.body)["windows"]["2m"]
    assert long["count"] == 3
    assert (long["bounce_rate"], long["events_per_session"], long["active"]) == (0.0, 2.0, 0)
