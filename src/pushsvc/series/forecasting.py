"""`BucketForecaster`: one series' forecast, as the buckets of its rule's tier close (pure).

A rule's `forecast` (`pushsvc.rules.forecast`) names a tier, a statistic and a model. Each
point of that tier that a `SeriesBuckets` closes is learned by the model
(`pushsvc.series.forecast_holt_winters` or `forecast_linear`), in the order the buckets close
(ascending start), and the forecast is then the model's `horizon` steps after that bucket, as
`fields` gives it in JSON:

    {"model": "holt_winters", "stat": "mean", "resolution": "1m", "from": 1732752000000,
     "points": [{"t": 1732752060000, "mean": 12.5, "lo80": 10.1, "hi80": 14.9,
                 "lo95": 8.8, "hi95": 16.2}, ...]}

`from` is the start (ms) of the last bucket learned, each point's `t` the start of the bucket
it predicts; `points` is empty while the model is still learning (two seasons for
`holt_winters`, two buckets for `linear`).

What a close costs does not grow with the horizon. Its message (`message_fields`, what
`?forecast=` streams get and the history holds) carries at most `MESSAGE_STEPS` of the steps:
a longer horizon every k-th step (k the least that leaves that many), ending at its last, and
says k as `every`. What the series keeps as its latest forecast (`kept`) is the model's
outlook (`pushsvc.series.forecast_outlook`: a line's four numbers, or a season's values over
at most the horizon), from which `GET /topics/{topic}/forecast` makes every step on read
(`kept_fields`). An alert reads one step (`step`), made alone. Each step is made on its own
with the model's own arithmetic, so the message's steps, the API's and an alert's are the
same numbers, bit for bit.

As with anomaly scores, determinism is the promise: the forecast after a bucket depends only
on the rule and the statistic values of the series' points up to it, so an aggregator that
closes the bucket after a failover gives the forecast an uninterrupted run gave, provided it
holds the same model state, which `to_bytes` and `restored` carry bit for bit through a
checkpoint. A bucket without events makes no point and is not learned: the model counts
buckets with points, as the series keeps them.

Corrections: the model learns each bucket once, as it closes. A bucket amended after it closed
(a late event within a correction's reach) is not learned again: the forecast goes on from
what was learned, and the corrected value reaches it only through the buckets after it (the
seasonal model sees that phase again a season later). Re-learning would need every later
update undone, which exponential smoothing cannot do in bounded state.
"""

from __future__ import annotations

from typing import Any

from pushsvc.rules.forecast import ForecastRule
from pushsvc.rules.point import Point
from pushsvc.series.forecast import Model, Predicted
from pushsvc.series.forecast_holt_winters import HoltWinters, HwParams
from pushsvc.series.forecast_linear import LinearModel
from pushsvc.series.forecast_outlook import outlook_from_bytes
from pushsvc.series.forecast_refit import MAX_FIT_SEASON
from pushsvc.series.scoring import stat_value
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["MESSAGE_STEPS", "BucketForecaster", "kept_fields", "message_steps"]

MESSAGE_STEPS = 60
"""The most steps of its horizon a forecast message carries (module docstring)."""
_VERSION = 1
_KEPT_VERSION = 2


class BucketForecaster:
    """Learns the closing points of the rule's tier; `fields` is the forecast after the last.
    Not greenlet-safe (one aggregator)."""

    __slots__ = ("_steps", "last_us", "model", "rule")

    def __init__(self, rule: ForecastRule, model: Model | None = None, last_us: int = -1) -> None:
        self.rule = rule
        self.model = model if model is not None else _model(rule)
        self.last_us = last_us
        """The start of the last bucket learned; -1 before the first."""
        self._steps: dict[int, Predicted | None] = {}
        """The steps alerts read (on every event), made once per bucket learned."""

    @property
    def label(self) -> str:
        """The resolution label of the tier learned (what `SeriesBuckets.close` names it)."""
        return self.rule.tier

    def learn(self, point: Point) -> None:
        """`point`, a bucket of the rule's tier that just closed (one without values, of
        messages only, is not learned, as a bucket without events makes no point)."""
        if not point.count:
            return
        rule = self.rule
        self.model.learn(stat_value(point, rule.stat, rule.tier_us))
        self.last_us = point.t_us
        self._steps.clear()

    def predict(self) -> list[Predicted]:
        """The horizon's steps after the last bucket learned (empty while learning)."""
        return self.model.predict(self.rule.horizon)

    def step(self, h: int) -> Predicted | None:
        """Step `h` of the forecast (what an alert's `forecast(stat, ahead)` reads), None
        while learning or past the horizon: made once per bucket learned, and only it."""
        steps = self._steps
        if h not in steps:
            made = self.model.predict_steps((h,)) if 1 <= h <= self.rule.horizon else []
            steps[h] = made[0] if made else None
        return steps[h]

    def fields(self) -> dict[str, Any]:
        """The forecast as the API gives it, every step of the horizon (module docstring)."""
        return _fields(self.rule, self.last_us, self.model.predict(self.rule.horizon))

    def message_fields(self) -> dict[str, Any]:
        """The forecast as its message carries it: at most `MESSAGE_STEPS` of the horizon's
        steps, every `every`-th one up to its last (module docstring), so that what a close
        makes does not grow with the horizon."""
        steps = message_steps(self.rule.horizon)
        fields = _fields(self.rule, self.last_us, self.model.predict_steps(steps))
        if steps.step > 1:
            fields["every"] = steps.step
        return fields

    def kept(self) -> bytes:
        """What a series keeps as its latest forecast (`GET /topics/{topic}/forecast` makes
        its points from it, `kept_fields`): what is forecast, the last bucket learned, and the
        model's outlook over the horizon (`pushsvc.series.forecast_outlook`), not the model."""
        outlook = self.model.outlook(self.rule.horizon)
        return self._stored(_KEPT_VERSION, b"" if outlook is None else outlook.to_bytes())

    def to_bytes(self) -> bytes:
        """The state, for a checkpoint: what is forecast (so a changed rule is noticed), the
        last bucket learned, then the model's own state."""
        return self._stored(_VERSION, self.model.to_bytes())

    def _stored(self, version: int, body: bytes) -> bytes:
        """A stored form: `version`, what is forecast, the last bucket learned, then `body`."""
        rule = self.rule
        out = StateWriter()
        out.uint(version)
        out.text(rule.model)
        out.text(rule.stat)
        out.uint(rule.tier_us)
        out.sint(self.last_us)
        out.blob(body)
        return bytes(out)

    @classmethod
    def restored(cls, rule: ForecastRule, data: bytes) -> BucketForecaster:
        """From `to_bytes`. A state of another model, statistic, tier or parameters (the rules
        file changed between runs) learned another series: the forecaster starts afresh rather
        than forecast these points from those. So does a damaged one."""
        try:
            read = StateReader(data)
            if read.uint() != _VERSION:
                return cls(rule)
            model, stat, tier_us = read.text(), read.text(), read.uint()
            last_us = read.sint()
            state = read.blob()
            read.done()
            if (model, stat, tier_us) != (rule.model, rule.stat, rule.tier_us):
                return cls(rule)
            restored: Model
            if model == "linear":
                restored = LinearModel.from_bytes(state)
                if restored.window != rule.range:
                    return cls(rule)
            else:
                restored = HoltWinters.from_bytes(state)
                restored.tracking(rule.horizon)
                fits = rule.fit and rule.season <= MAX_FIT_SEASON
                if fits and not restored.fitted and restored.params == HwParams():
                    # Saved before the rule's parameters were fitted, when its defaults
                    # were fixed: go on from it, fitting from now on.
                    restored.fitting(rule.horizon)
                if restored.season != rule.season or restored.fitted != fits:
                    return cls(rule)
                if not restored.fitted and restored.params != _params(rule):
                    return cls(rule)
                refit = restored.refit
                if refit is not None and refit.horizon != min(rule.horizon, rule.season):
                    return cls(rule)
        except ValueError:
            return cls(rule)
        return cls(rule, restored, last_us)


def message_steps(horizon: int) -> range:
    """The steps a forecast message carries: all up to `MESSAGE_STEPS`; past it every k-th,
    k the least that leaves at most `MESSAGE_STEPS`, ending at the horizon's last."""
    every = -(-horizon // MESSAGE_STEPS)
    count = -(-horizon // every)
    return range(horizon - (count - 1) * every, horizon + 1, every)


def kept_fields(rule: ForecastRule, data: bytes) -> dict[str, Any]:
    """The forecast (`fields`, every step of the horizon) of a series' kept latest forecast
    (`BucketForecaster.kept`). One kept under other rules (another model, statistic or
    tier), or damaged: none yet (`from` null, no points), as a model learning afresh."""
    try:
        read = StateReader(data)
        version = read.uint()
        if version == _VERSION:  # a forecaster's whole state, as once kept
            return BucketForecaster.restored(rule, data).fields()
        if version != _KEPT_VERSION:
            raise ValueError("unknown kept forecast")
        model, stat, tier_us = read.text(), read.text(), read.uint()
        last_us = read.sint()
        blob = read.blob()
        read.done()
        if (model, stat, tier_us) != (rule.model, rule.stat, rule.tier_us):
            raise ValueError("kept under another rule")
        if not blob:
            return _fields(rule, last_us, [])
        outlook = outlook_from_bytes(blob)
        reach = outlook.reach
        horizon = rule.horizon if reach is None else min(rule.horizon, reach)
        return _fields(rule, last_us, outlook.at(range(1, horizon + 1)))
    except ValueError:
        return _fields(rule, -1, [])


def _fields(rule: ForecastRule, last: int, predicted: list[Predicted]) -> dict[str, Any]:
    step = rule.tier_us
    return {
        "model": rule.model,
        "stat": rule.stat,
        "resolution": rule.tier,
        "from": None if last < 0 else last // 1000,
        "points": [
            {
                "t": (last + p.step * step) // 1000,
                "mean": p.mean,
                "lo80": p.lo80,
                "hi80": p.hi80,
                "lo95": p.lo95,
                "hi95": p.hi95,
            }
            for p in predicted
        ],
    }


def _params(rule: ForecastRule) -> HwParams:
    return HwParams(rule.alpha, rule.beta, rule.gamma, rule.phi)


def _model(rule: ForecastRule) -> Model:
    if rule.model == "linear":
        return LinearModel(rule.range)
    return HoltWinters(rule.season, _params(rule), rule.fit, rule.horizon)
