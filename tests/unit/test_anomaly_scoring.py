"""Anomaly scores in the aggregator: each closed bucket of a rule's `every` tier carries the
score the detector module (`pushsvc.series.anomaly`) gives the series of its `stat` values, in
order, from the past only; each group is its own series; the stored form keeps score and flag;
a cold aggregator restored from a checkpoint scores every later point as one that never
stopped; and a topic whose rule has no `anomaly` never loads the detector."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import orjson
import pytest

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rule, Rules, default_rule
from pushsvc.rules.anomaly import AnomalyRule
from pushsvc.rules.point import Point, TopList
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.anomaly import Detector, Params
from pushsvc.series.scoring import BucketScorer

S = 1_000_000
T0 = 1_763_700_000 * S
TIERS = parse_tiers("1s:1h,10s:1h")
SCORED = AnomalyRule(S, "mean", 20, 0.5)


def _rules(anomaly: AnomalyRule = SCORED, group_by: tuple[str, ...] = ()) -> Rules:
    rule = Rule(1, ("s.*",), (10 * S,), (), ("count", "mean"), group_by, anomaly=anomaly)
    return Rules([rule], default_rule((10 * S,), ("count", "mean"), TIERS))


def _events(n: int = 400, spike_at: int = 300) -> list[Event]:
    """Three events a second around a slow wave, and one second of a spike."""
    out = []
    for i in range(n):
        for j in range(3):
            value = 10 + math.sin(i / 15) + 0.1 * j
            if i == spike_at:
                value += 40
            out.append(Event(value, T0 + i * S + j * 300_000, {"k": "ab"[(i + j) % 2]}))
    return out


def _points(drafts: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(d.body) for d in drafts if d.series is not None]


def _expected(values: list[float], rule: AnomalyRule) -> list[tuple[float, bool]]:
    detector = Detector(Params(learn=rule.learn_points, threshold=rule.threshold))
    return [(s, s >= rule.threshold) for s in map(detector.score, values)]


def _value(point: dict[str, Any], stat: str) -> float:
    return float(point["count"]) if stat == "rate" else float(point[stat])


@pytest.mark.parametrize("stat", ["mean", "p90", "max", "rate"])
def test_each_closed_bucket_of_the_tier_gets_the_detectors_score_of_its_stat(stat: str) -> None:
    anomaly = AnomalyRule(S, stat, 20, 0.5)
    aggregator = Aggregator(rules=_rules(anomaly), wall_clock=lambda: 0, lateness_us=2 * S)
    messages = _points(aggregator.apply_events("s.a", _events()))
    scored = [m["point"] for m in messages if m["resolution"] == "1s"]
    assert len(scored) > 390
    values = [_value(p, stat) for p in scored]
    assert [(p["anomaly"], p["anomalous"]) for p in scored] == _expected(values, anomaly)
    # The other tier's points are not scored.
    coarse = [m["point"] for m in messages if m["resolution"] == "10s"]
    assert coarse and not any("anomaly" in p for p in coarse)
    # Nothing is flagged while learning; the spike is (its count is as every second's).
    assert all(p["anomaly"] == 0 for p in scored[:20])
    flagged = [p["t"] for p in scored if p["anomalous"]]
    assert ((T0 + 300 * S) / S in flagged) == (stat != "rate")


def test_each_group_is_its_own_series() -> None:
    aggregator = Aggregator(rules=_rules(group_by=("k",)), wall_clock=lambda: 0, lateness_us=2 * S)
    messages = _points(aggregator.apply_events("s.a", _events()))
    for group in ("a", "b"):
        scored = [
            m["point"]
            for m in messages
            if m["resolution"] == "1s" and m.get("group") == {"k": group}
        ]
        assert len(scored) > 390
        values = [p["mean"] for p in scored]
        assert [(p["anomaly"], p["anomalous"]) for p in scored] == _expected(values, SCORED)


def test_a_topic_without_anomaly_has_no_score() -> None:
    rules = Rules([], default_rule((10 * S,), ("count", "mean"), TIERS))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
    messages = _points(aggregator.apply_events("s.a", _events(50)))
    assert messages and not any("anomaly" in m["point"] for m in messages)
    assert not aggregator.durable("s.a") or len(TIERS) > 1


def test_a_cold_aggregator_restored_from_a_checkpoint_scores_as_one_that_never_stopped() -> None:
    """Checkpoints taken at several places; the cold aggregator replays the log up to each
    (only the open finest buckets come from it) and then drafts every later entry, scores and
    flags included, byte for byte as the running one."""
    rules = _rules(group_by=("k",))
    events = _events()
    batches = [events[i : i + 7] for i in range(0, len(events), 7)]
    log = [((1000 + n, 0), batch) for n, batch in enumerate(batches)]
    for split in (5, 60, 100, 140):
        running = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
        for at, batch in log[: split + 1]:
            running.apply_events("s.a", batch, at)
        checkpoint = running.checkpoint("s.a", log[split][0])
        assert checkpoint is not None and running.durable("s.a")
        cold = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
        cold.restore(Checkpoint.of_fields(checkpoint.fields()))
        for at, batch in log[: split + 1]:
            assert cold.apply_events("s.a", batch, at) == []
        cold.end_replay()
        later = [
            (running.apply_events("s.a", b, at), cold.apply_events("s.a", b, at))
            for at, b in log[split + 1 :]
        ]
        bodies = [([d.body for d in r], [d.body for d in c]) for r, c in later]
        assert all(r == c for r, c in bodies)
        assert any(b'anomalous":true' in body for r, _ in bodies for body in r) or split > 100


def test_a_single_tier_topic_that_scores_is_checkpointed() -> None:
    """The detector's state is the series' whole past, which no log keeps: a topic that
    scores is durable even when it keeps one tier only."""
    rule = Rule(1, ("s.*",), (10 * S,), (), ("count",), series=parse_tiers("1s:1h"), anomaly=SCORED)
    rules = Rules([rule], default_rule((10 * S,), ("count",), ()))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0)
    assert aggregator.durable("s.a") and not aggregator.durable("other")
    aggregator.apply_events("s.a", _events(30), (1, 0))
    checkpoint = aggregator.checkpoint("s.a", (1, 0))
    assert checkpoint is not None and checkpoint.anomaly


def test_a_scored_point_keeps_score_and_flag_in_its_stored_form() -> None:
    tops = (TopList("p", (("x", 3), ("y", 1))),)
    for point in (
        Point(T0, 3, 6.0, 2.0, 1.0, 3.0, 1.0, 2.0, 2.8, 2.98, anomaly=0.25),
        Point(T0, 1, 6.0, 6.0, 6.0, 6.0, None, 6.0, 6.0, 6.0, (("u", 1),), anomaly=0.0),
        Point(T0, 3, 6.0, 2.0, 1.0, 3.0, 1.0, 2.0, 2.8, 2.98, (("u", 2),), tops, 0.9, True),
        Point(T0, 3, 6.0, 2.0, 1.0, 3.0, 1.0, 2.0, 2.8, 2.98, (("u", 2), ("v", 3)), tops),
    ):
        back = Point.unpacked(T0, point.packed(), ("u", "v"), ("p",))
        assert back == point
    fields = Point(T0, 1, 6.0, 6.0, 6.0, 6.0, None, 6.0, 6.0, 6.0, anomaly=0.75).fields()
    assert fields["anomaly"] == 0.75 and fields["anomalous"] is False
    assert "anomaly" not in Point(T0, 1, 6.0, 6.0, 6.0, 6.0, None, 6.0, 6.0, 6.0).fields()


def test_a_scorer_of_another_stat_or_parameters_starts_afresh() -> None:
    scorer = BucketScorer(SCORED)
    for i in range(30):
        scorer.score(Point(T0 + i * S, 1, i, i, i, i, None, i, i, i))
    saved = scorer.to_bytes()
    assert BucketScorer.restored(SCORED, saved).detector == scorer.detector
    for changed in (
        AnomalyRule(S, "max", 20, 0.5),
        AnomalyRule(S, "mean", 30, 0.5),
        AnomalyRule(S, "mean", 20, 0.7),
        AnomalyRule(10 * S, "mean", 20, 0.5),
    ):
        assert BucketScorer.restored(changed, saved).detector.n == 0
    assert BucketScorer.restored(SCORED, b"").detector.n == 0


def test_topics_without_anomaly_never_load_the_detector_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from pushsvc.aggregate.aggregator import Aggregator\n"
        "from pushsvc.core.event import Event\n"
        "from pushsvc.rules.analytics import Rules, default_rule\n"
        "from pushsvc.rules.tiers import parse_tiers\n"
        "rules = Rules([], default_rule((10_000_000,), ('mean',), parse_tiers('1s:1h,1m:1d')))\n"
        "a = Aggregator(rules=rules, wall_clock=lambda: 0)\n"
        "for i in range(100):\n"
        "    a.apply_events('t', [Event(1.0, 1_763_700_000_000_000 + i * 700_000, None)])\n"
        "print(sorted(m for m in sys.modules if 'anomaly' in m or m.split('.')[0] == 'numpy'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    # The rules module `pushsvc.rules.anomaly` is the rule's field, not the detector.
    assert found.strip() == "['pushsvc.rules.anomaly']"
