"""Forecasts in the aggregator: each close of a rule's forecast tier drafts, right after the
points, the forecast the model gives after learning them (each group its own series), kept
as the latest of a `forecast:<tier>` series; a cold aggregator restored from a checkpoint
drafts every later forecast byte for byte as one that never stopped; a checkpoint carries
the model; a topic without `forecast` drafts none."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import orjson
import pytest

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rule, Rules, default_rule, parse_rules
from pushsvc.rules.forecast import ForecastRule
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.forecast_holt_winters import HoltWinters, HwParams
from pushsvc.series.forecast_linear import LinearModel
from pushsvc.series.forecasting import kept_fields

S = 1_000_000
T0 = 1_763_700_000 * S
TIERS = parse_tiers("1s:1h,10s:1h")
HW = ForecastRule(S, 6, "holt_winters", "mean", season=20)
LINEAR = ForecastRule(10 * S, 3, "linear", "max", range=4)


def _rules(forecast: ForecastRule | None = HW, group_by: tuple[str, ...] = ()) -> Rules:
    rule = Rule(1, ("s.*",), (10 * S,), (), ("count", "mean"), group_by, forecast=forecast)
    return Rules([rule], default_rule((10 * S,), ("count", "mean"), TIERS))


def _events(n: int = 200) -> list[Event]:
    """Three events a second around a wave of 20 seconds."""
    return [
        Event(10 + 3 * math.sin(2 * math.pi * i / 20) + 0.1 * j, T0 + i * S + j * 300_000,
              {"k": "ab"[(i + j) % 2]})
        for i in range(n)
        for j in range(3)
    ]  # fmt: skip


def _messages(drafts: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(d.body) for d in drafts if d.series is not None]


def _model(rule: ForecastRule) -> HoltWinters | LinearModel:
    if rule.model == "linear":
        return LinearModel(rule.range)
    return HoltWinters(rule.season, HwParams(rule.alpha, rule.beta, rule.gamma))


@pytest.mark.parametrize("rule", [HW, LINEAR])
def test_each_close_of_the_tier_drafts_the_models_forecast_after_its_points(
    rule: ForecastRule,
) -> None:
    aggregator = Aggregator(rules=_rules(rule), wall_clock=lambda: 0, lateness_us=2 * S)
    drafts = aggregator.apply_events("s.a", _events())
    messages = _messages(drafts)
    model = _model(rule)
    label, stat = rule.tier, rule.stat
    forecasts = 0
    for i, message in enumerate(messages):
        if "point" in message and message["resolution"] == label:
            model.learn(float(message["point"][stat]))
            # The forecast follows its tier's points of the same close.
            following = messages[i + 1 :]
            nxt = next(m for m in following if "forecast" in m or m["resolution"] == label)
            if "point" in nxt:
                continue
            forecast = nxt["forecast"]
            assert nxt["resolution"] == label and nxt["topic"] == "s.a"
            assert forecast["from"] == message["point"]["t"] * 1000
            assert [p["mean"] for p in forecast["points"]] == [
                p.mean for p in model.predict(rule.horizon)
            ]
            forecasts += 1
    assert forecasts > 10
    kept = [d.series for d in drafts if d.series is not None and b'"forecast"' in d.body]
    assert all(w.resolution == f"forecast:{label}" and w.keep_from_us == w.t_us for w in kept)
    last = [m["forecast"] for m in messages if "forecast" in m][-1]
    # Kept as the model's outlook, which makes the same forecast again on read (a few numbers
    # a series, not the horizon's points).
    assert kept_fields(rule, kept[-1].packed) == last
    assert len(kept[-1].packed) < len(orjson.dumps(last))


def test_each_group_is_its_own_series() -> None:
    aggregator = Aggregator(rules=_rules(group_by=("k",)), wall_clock=lambda: 0, lateness_us=2 * S)
    messages = _messages(aggregator.apply_events("s.a", _events()))
    for group in ("a", "b"):
        model = _model(HW)
        last: list[float] | None = None
        for m in messages:
            if m.get("group") != {"k": group} or m["resolution"] != "1s":
                continue
            if "point" in m:
                model.learn(float(m["point"]["mean"]))
            else:
                last = [p["mean"] for p in m["forecast"]["points"]]
                assert last == [p.mean for p in model.predict(6)]
        assert last


def test_a_topic_without_forecast_drafts_none() -> None:
    aggregator = Aggregator(rules=_rules(None), wall_clock=lambda: 0, lateness_us=2 * S)
    messages = _messages(aggregator.apply_events("s.a", _events(60)))
    assert messages and not any("forecast" in m for m in messages)


def test_a_single_tier_topic_that_forecasts_is_checkpointed() -> None:
    rule = Rule(1, ("s.*",), (10 * S,), (), ("count",), series=parse_tiers("1s:1h"), forecast=HW)
    rules = Rules([rule], default_rule((10 * S,), ("count",), ()))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0)
    assert aggregator.durable("s.a") and not aggregator.durable("other")
    aggregator.apply_events("s.a", _events(60), (1, 0))
    checkpoint = aggregator.checkpoint("s.a", (1, 0))
    assert checkpoint is not None and checkpoint.forecast
    assert Checkpoint.of_fields(checkpoint.fields()).forecast == checkpoint.forecast


@pytest.mark.parametrize("group_by", [(), ("k",)])
def test_a_cold_aggregator_restored_from_a_checkpoint_forecasts_as_one_that_never_stopped(
    group_by: tuple[str, ...],
) -> None:
    rules = _rules(group_by=group_by)
    events = _events()
    batches = [events[i : i + 7] for i in range(0, len(events), 7)]
    log = [((1000 + n, 0), batch) for n, batch in enumerate(batches)]
    for split in (3, 20, 50):
        running = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
        for at, batch in log[: split + 1]:
            running.apply_events("s.a", batch, at)
        checkpoint = running.checkpoint("s.a", log[split][0])
        assert checkpoint is not None
        cold = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
        cold.restore(Checkpoint.of_fields(checkpoint.fields()))
        for at, batch in log[: split + 1]:
            assert cold.apply_events("s.a", batch, at) == []
        cold.end_replay()
        later = [
            ([d.body for d in running.apply_events("s.a", b, at)],
             [d.body for d in cold.apply_events("s.a", b, at)])
            for at, b in log[split + 1 :]
        ]  # fmt: skip
        assert all(r == c for r, c in later)
        assert sum(b'"forecast"' in body for r, _ in later for body in r) > 5


ALERTED = """
[[rule]]
topics = ["s.*"]
windows = ["10s"]
stats = ["count", "mean"]
group_by = GROUPS
forecast = { tier = "1s", model = "linear", range = "5s", horizon = "10s" }

[[alert]]
name = "soon"
topics = ["s.*"]
when = "forecast(mean, 10s) > 100"
"""


@pytest.mark.parametrize("group_by", [(), ("k",)])
def test_a_forecast_alert_fires_before_the_threshold_is_crossed(
    group_by: tuple[str, ...],
) -> None:
    """A ramp of 2 a second from 40: the linear forecast 10 s ahead passes 100 once the last
    closed bucket's mean passes 80, at 20 s; the ramp itself passes 100 at 30 s."""
    text = ALERTED.replace("GROUPS", repr(list(group_by)).replace("'", '"'))
    rules = parse_rules(tomllib.loads(text), default_rule((10 * S,), ("count",), TIERS))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
    changes = []
    for i in range(40):
        for j in range(2):
            event = Event(40 + 2 * i + j, T0 + i * S + j * 500_000, {"k": "a"})
            for d in aggregator.apply_events("s.a", [event]):
                if d.topic == "_alerts":
                    changes.append((event.ts_us, orjson.loads(d.body)))
    firing = [(ts, c) for ts, c in changes if c["state"] == "firing"]
    assert firing, changes
    ts = firing[0][0]
    # The topic's own series, and the group's (the same events) with its own model.
    assert [c["group"] for _, c in firing] == ([None, {"k": "a"}] if group_by else [None])
    assert len({t for t, _ in firing}) == 1
    # Bucket 20 s (mean 80.5 + ...) closes at 23 s (its end and the 2 s lateness).
    assert ts < T0 + 30 * S
    assert T0 + 18 * S <= ts <= T0 + 24 * S, (ts - T0) / S
