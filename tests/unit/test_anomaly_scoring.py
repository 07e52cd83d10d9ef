"""Anomaly scores in the aggregator: each closed bucket of a rule's `every` tier carries the
score the detector module (`pushsvc.series.anomaly`) gives the series of its `stat` values, in
order, from the past only; each group is its own series; the stored form keeps score and flag;
a cold aggregator restored from a checkpoint scores every later point as one that never
stopped; and a topic whose rule has no `anomaly` never loads the detector."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rule, Rules, default_rule, parse_rules
from pushsvc.rules.anomaly import AnomalyRule
from pushsvc.rules.point import Point, TopList
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.anomaly import Detector, Params
from pushsvc.series.anomaly_rate import FlagWindow
from pushsvc.series.scoring import BucketScorer
from support.alert_model import AlertSpec, Change, Condition, TopicModel
from support.fresh_python import printed_by

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
    fields = Point(T0, 1, 6.0, 6.0, 6.0, 6.0, None, 6.0, 6.0, 6.0, anomaly=0.75).fields(1_000_000)
    assert fields["anomaly"] == 0.75 and fields["anomalous"] is False
    assert "anomaly" not in Point(T0, 1, 6.0, 6.0, 6.0, 6.0, None, 6.0, 6.0, 6.0).fields(1_000_000)


def test_a_scorer_of_another_stat_or_parameters_starts_afresh() -> None:
    scorer = BucketScorer(SCORED, 60 * S)
    for i in range(30):
        scorer.score(Point(T0 + i * S, 1, i, i, i, i, None, i, i, i), T0 + (i + 3) * S)
    saved = scorer.to_bytes()
    back = BucketScorer.restored(SCORED, 60 * S, saved)
    assert back.detector.to_bytes() == scorer.detector.to_bytes()
    assert back.flags.entries() == scorer.flags.entries() and len(back.flags) == 30
    for changed in (
        AnomalyRule(S, "max", 20, 0.5),
        AnomalyRule(S, "mean", 30, 0.5),
        AnomalyRule(S, "mean", 20, 0.7),
        AnomalyRule(10 * S, "mean", 20, 0.5),
    ):
        fresh = Detector(Params(learn=changed.learn_points, threshold=changed.threshold))
        restored = BucketScorer.restored(changed, 60 * S, saved)
        assert restored.detector.to_bytes() == fresh.to_bytes()
        assert len(restored.flags) == 0
    assert BucketScorer.restored(SCORED, 60 * S, b"").detector.to_bytes() == (
        Detector(Params(learn=20, threshold=0.5)).to_bytes()
    )


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
        "print(sorted(m for m in sys.modules if m == 'pushsvc.series.anomaly' or"
        " m.split('.')[0] == 'numpy'))"
    )
    found = printed_by(code)
    assert found.strip() == "[]"


def _rated_rules(group_by: tuple[str, ...] = ()) -> Rules:
    rule = Rule(1, ("s.*",), (5 * S, 30 * S), (20,), ("count", "mean"), group_by, anomaly=SCORED)
    return Rules([rule], default_rule((10 * S,), ("count", "mean"), TIERS))


def _spiky(n: int) -> list[Event]:
    """Two events a second, a spike every 37 s: flags enough to move the rates. Each spike is
    higher than the last, so that none is a repeat of a shape the detector has learnt (its
    context layer rightly stops flagging spikes that come like clockwork)."""
    out = []
    for i in range(n):
        for j in range(2):
            spike = 25 + 5 * (i // 37) if i % 37 == 36 else 0
            value = 10 + math.sin(i / 9) + spike + 0.1 * j
            out.append(Event(value, T0 + i * S + j * 400_000, {"k": "ab"[i % 2]}))
    return out


def _check_rates(drafts: list[Any], windows_of: Any, points_of: Any, widths: dict[str, int]) -> int:
    """Each update's `anomaly_rate` per time window against pandas over the points drafted
    up to the next update (a bucket is counted from the update whose clock closed it on).
    How many rates were defined."""
    closed: list[tuple[int, bool]] = []
    updates: list[tuple[int, dict[str, Any]]] = []
    seen_by: list[int] = []  # per update: the points drafted before the next update
    for d in drafts:
        body = orjson.loads(d.body)
        if d.series is not None:
            point = points_of(body)
            if point is not None:
                closed.append((d.clock_us, point["anomalous"]))
        elif (windows := windows_of(body)) is not None:
            seen_by.append(len(closed))
            updates.append((d.clock_us, windows))
    seen_by = [*seen_by[1:], len(closed)]
    defined = 0
    for (clock, windows), seen in zip(updates, seen_by, strict=True):
        flags = pd.Series(
            [float(flag) for _, flag in closed[:seen]],
            index=[c for c, _ in closed[:seen]],
            dtype=float,
        )
        for label, width in widths.items():
            inside = flags[(flags.index > clock - width) & (flags.index <= clock)]
            expected = None if inside.empty else inside.mean()
            assert windows[label]["anomaly_rate"] == pytest.approx(expected), (clock, label)
            defined += expected is not None
        assert "anomaly_rate" not in windows["last20"]
    return defined


def test_each_updates_anomaly_rate_is_the_share_of_anomalous_buckets_closed_in_the_window() -> None:
    aggregator = Aggregator(rules=_rated_rules(), wall_clock=lambda: 0, lateness_us=2 * S)
    drafts = aggregator.apply_events("s.a", _spiky(300))
    widths = {"5s": 5 * S, "30s": 30 * S}

    def points_of(body: dict[str, Any]) -> dict[str, Any] | None:
        return body["point"] if body["resolution"] == "1s" else None

    defined = _check_rates(drafts, lambda b: b.get("windows"), points_of, widths)
    assert defined > 300
    updates = [orjson.loads(d.body) for d in drafts if d.series is None]
    assert any(u["windows"]["30s"]["anomaly_rate"] for u in updates[-100:])


def test_each_groups_anomaly_rate_is_of_its_own_buckets() -> None:
    aggregator = Aggregator(rules=_rated_rules(("k",)), wall_clock=lambda: 0, lateness_us=2 * S)
    drafts = aggregator.apply_events("s.a", _spiky(300))
    widths = {"5s": 5 * S, "30s": 30 * S}
    for group in ("a", "b"):

        def windows_of(body: dict[str, Any], g: str = group) -> dict[str, Any] | None:
            mine = body.get("group")
            return mine["windows"] if mine and mine["key"] == {"k": g} else None

        def points_of(body: dict[str, Any], g: str = group) -> dict[str, Any] | None:
            mine = body["resolution"] == "1s" and body.get("group") == {"k": g}
            return body["point"] if mine else None

        assert _check_rates(drafts, windows_of, points_of, widths) > 100


def test_a_tick_that_closes_a_scored_bucket_updates_the_rate() -> None:
    aggregator = Aggregator(rules=_rated_rules(), wall_clock=lambda: 0, lateness_us=2 * S)
    aggregator.apply_events("s.a", _spiky(60))
    drafts = aggregator.apply_ticks({"s.a": T0 + 70 * S})
    kinds = [orjson.loads(d.body).get("reason", "point") for d in drafts]
    assert kinds[0] == "tick" and set(kinds[1:]) == {"point"}
    assert orjson.loads(drafts[0].body)["windows"]["30s"]["anomaly_rate"] is not None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=80),
    st.integers(1, 10),
)
def test_a_flag_window_counts_what_closed_in_the_window_after_any_trim(
    steps: list[tuple[int, bool]], keep: int
) -> None:
    window = FlagWindow(keep)
    kept: list[tuple[int, bool]] = []
    clock = 0
    for advance, flag in steps:
        clock += advance
        window.add(clock, flag)
        kept.append((clock, flag))
        for width in range(1, keep + 1):
            inside = [f for c, f in kept if clock - width < c <= clock]
            expected = sum(inside) / len(inside) if inside else None
            assert window.rate(clock, width) == expected
            assert window.rate(clock + width, width) is None
    assert len(window) <= 2 * len([c for c, _ in kept if c > clock - keep]) + 1
    # A window restored from its entries rates as the one saved, from then on.
    restored = FlagWindow(keep)
    for at, flag in window.entries():
        restored.add(at, flag)
    assert restored.entries() == [(c, f) for c, f in kept if c > clock - keep]
    for later in range(clock, clock + keep + 2):
        for width in range(1, keep + 1):
            assert restored.rate(later, width) == window.rate(later, width)


def test_an_alert_on_anomaly_rate_fires_and_resolves_as_the_rate_crosses() -> None:
    """`anomaly_rate[30s] > 0.02` with `for = "0s"`: an instance fires at the first update
    whose rate is above (one `firing` message) and resolves at the first that is not (a null
    rate, no scored bucket in the window, counts as cleared), as Prometheus's rule does."""
    document = {
        "rule": [
            {
                "topics": ["s.*"],
                "windows": ["5s", "30s"],
                "stats": ["count", "mean"],
                "anomaly": {"every": "1s", "learn": "20s"},
            }
        ],
        "alert": [{"name": "odd", "topics": ["s.*"], "when": "anomaly_rate[30s] > 0.02"}],
    }
    rules = parse_rules(document, default_rule((10 * S,), ("count",), TIERS))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
    drafts = aggregator.apply_events("s.a", _spiky(300))
    expected, firing = [], False
    for d in drafts:
        body = orjson.loads(d.body)
        if d.series is None and "windows" in body:
            rate = body["windows"]["30s"]["anomaly_rate"]
            holds = rate is not None and rate > 0.02
            if holds != firing:
                expected.append(("firing" if holds else "resolved", d.clock_us, rate))
                firing = holds
    changes = [orjson.loads(d.body) for d in drafts if d.topic == "_alerts"]
    got = [(c["state"], round(c["since"] * S), c["value"]) for c in changes]
    assert got == expected
    assert len(got) >= 4


@pytest.mark.parametrize("grouped", [False, True])
def test_anomaly_rate_alerts_change_as_the_alert_model_says(grouped: bool) -> None:
    """`anomaly_rate[30s]` under `for`, `keep_firing_for` and `clear`, on a topic and on each
    group, event by event and through ticks: every `_alerts` change the product publishes is
    the one the alert model (Prometheus's rule, pushsvc's contract) makes from the same
    events and the product's own scored points."""
    specs = [
        AlertSpec("rated", Condition.parse("anomaly_rate[30s] > 0.02"), for_us=3 * S),
        AlertSpec(
            "held",
            Condition.parse("anomaly_rate[5s] > 0"),
            clear=Condition.parse("anomaly_rate[30s] < 0.01"),
            keep_firing_for_us=4 * S,
        ),
    ]
    group_by = ("k",) if grouped else ()
    document = {
        "rule": [
            {
                "topics": ["s.*"],
                "windows": ["5s", "30s"],
                "stats": ["count", "mean"],
                **({"group_by": list(group_by)} if grouped else {}),
                "anomaly": {"every": "1s", "learn": "20s"},
            }
        ],
        "alert": [
            {
                "name": spec.name,
                "topics": ["s.*"],
                "when": spec.when.text,
                "for": f"{spec.for_us // S}s",
                "keep_firing_for": f"{spec.keep_firing_for_us // S}s",
                **({"clear": spec.clear.text} if spec.clear else {}),
            }
            for spec in specs
        ],
    }
    rules = parse_rules(document, default_rule((10 * S,), ("count",), TIERS))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
    model = TopicModel("s.a", specs, {"5s": 5 * S, "30s": 30 * S}, group_by=group_by)
    events = _spiky(400)
    product: list[Change] = []
    expected: list[Change] = []

    def feed(drafts: list[Any]) -> None:
        for d in drafts:
            body = orjson.loads(d.body)
            if d.series is not None and body["resolution"] == "1s":
                key = tuple(body.get("group", {}).items())
                model.closed(d.clock_us, body["point"]["anomalous"], key)
            elif d.topic == "_alerts":
                product.append(Change.of_message(body))

    for index, event in enumerate(events):
        feed(aggregator.apply_events("s.a", [event]))
        expected += model.events([(event.ts_us, event.value, event.tags)])
        if index % 97 == 96:  # now and then an idle tick, past every open bucket
            clock = event.ts_us + 20 * S
            feed(aggregator.apply_ticks({"s.a": clock}))
            expected += model.tick(clock)
    key = lambda c: (c.instance, c.since_us, c.state)  # noqa: E731
    assert len(product) == len(expected) >= 6
    for got, want in zip(sorted(product, key=key), sorted(expected, key=key), strict=True):
        assert got.agrees(want), (got, want)
    assert {c.state for c in product} >= {"pending", "firing", "resolved"}
