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
from pushsvc.series.scoring import stat_value
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["BucketForecaster"]

_VERSION = 1


class BucketForecaster:
    """Learns the closing points of the rule's tier; `fields` is the forecast after the last.
    Not greenlet-safe (one aggregator)."""

    __slots__ = ("_predicted", "last_us", "model", "rule")

    def __init__(self, rule: ForecastRule, model: Model | None = None, last_us: int = -1) -> None:
        self.rule = rule
        self.model = model if model is not None else _model(rule)
        self.last_us = last_us
        """The start of the last bucket learned; -1 before the first."""
        self._predicted: list[Predicted] | None = None
        """`predict()` until the next bucket is learned (alerts read it on every event)."""

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
        self._predicted = None

    def predict(self) -> list[Predicted]:
        """The horizon's steps after the last bucket learned (empty while learning)."""
        predicted = self._predicted
        if predicted is None:
            predicted = self._predicted = self.model.predict(self.rule.horizon)
        return predicted

    def fields(self) -> dict[str, Any]:
        """The forecast as the API and streams give it (module docstring). Made, not kept:
        only `predict`, which alerts read on every event, keeps its steps (a horizon of
        thousands of steps, kept for every series, was most of what forecasts held)."""
        rule, last = self.rule, self.last_us
        step = rule.tier_us
        predicted = self._predicted
        if predicted is None:
            predicted = self.model.predict(rule.horizon)
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

    def to_bytes(self) -> bytes:
        """The state, for a checkpoint: what is forecast (so a changed rule is noticed), the
        last bucket learned, then the model's own state."""
        rule = self.rule
        out = StateWriter()
        out.uint(_VERSION)
        out.text(rule.model)
        out.text(rule.stat)
        out.uint(rule.tier_us)
        out.sint(self.last_us)
        out.blob(self.model.to_bytes())
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
                if restored.season != rule.season or restored.params != _params(rule):
                    return cls(rule)
        except ValueError:
            return cls(rule)
        return cls(rule, restored, last_us)


def _params(rule: ForecastRule) -> HwParams:
    return HwParams(rule.alpha, rule.beta, rule.gamma)


def _model(rule: ForecastRule) -> Model:
    if rule.model == "linear":
        return LinearModel(rule.range)
    return HoltWinters(rule.season, _params(rule))
