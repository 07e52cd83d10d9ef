"""A fitted forecast combined with the fixed defaults' (`pushsvc.series.forecast_anchor`,
`forecast_weights` and their use in `forecast_holt_winters`): its mean mixes the fitted
model's forecast and that of a fixed-default model learning the same values, each horizon's
weights inversely proportional to the two forecasts' recent mean squared errors there, at
every step; the anchor and the weights go through a checkpoint; a fitted model checkpointed
before it had them goes on with an anchor made from its state and equal weights; a damaged
one is refused."""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd
import pytest

from pushsvc.series.forecast_anchor import Anchor
from pushsvc.series.forecast_errors import tracked_horizons
from pushsvc.series.forecast_fit import EtsParams
from pushsvc.series.forecast_holt_winters import DEFAULT_PARAMS, HoltWinters
from pushsvc.series.forecast_outlook import damped_steps
from pushsvc.series.forecast_weights import SPAN, CombinationWeights
from pushsvc.stats.state_codec import StateWriter
from support.ets_series import ets_series

M = 24


def series(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(ets_series(rng.normal(0, 1, n).tolist(), M, EtsParams(0.3, 0.02, 0.1, 0.9)))


def own_forecast(model: HoltWinters, h: int) -> float:
    """The fitted model's own forecast h steps ahead, from its state, without the anchor."""
    phase = (model.learned + h - 1) % M
    return model.level + damped_steps(model.params.phi, h) * model.trend + model.seasonal[phase]


def mean_squares(errors: list[float]) -> float:
    """The mean of the first `SPAN` squared errors, then exponentially weighted with that
    span, by pandas."""
    squares = pd.Series(errors) ** 2
    if len(squares) <= SPAN:
        return float(squares.mean())
    seeded = pd.concat([pd.Series([squares[:SPAN].mean()]), squares[SPAN:]])
    return float(seeded.ewm(alpha=1 / SPAN, adjust=False).mean().iloc[-1])


def test_the_forecast_mixes_the_two_by_their_recent_errors_at_each_horizon() -> None:
    """The two models' forecasts are recorded from outside (the fitted one from its state, the
    anchor as a fixed-default model run beside it) and scored when their values come; at
    every step the forecast is the mix the inverse mean squared errors give, a line in the
    step between tracked horizons."""
    y = series(2400, 1)
    fitted = HoltWinters(M, fit=True, horizon=M)
    fixed = HoltWinters(M, DEFAULT_PARAMS, horizon=M)
    horizons = tracked_horizons(M)
    made: dict[int, list[tuple[int, float, float]]] = {k: [] for k in horizons}
    errors: dict[int, tuple[list[float], list[float]]] = {k: ([], []) for k in horizons}
    checked, shares = 0, []
    for i, v in enumerate(y):
        for k in horizons:  # the forecasts made k values ago were for this one
            if made[k] and made[k][0][0] == i:
                _, own, other = made[k].pop(0)
                errors[k][0].append(v - own)
                errors[k][1].append(v - other)
        fitted.learn(v)
        fixed.learn(v)
        if not fitted.started:
            continue
        for k in horizons:
            made[k].append((i + k, own_forecast(fitted, k), fixed.predict_steps([k])[0].mean))
        if i % 37:
            continue
        scored = [k for k in horizons if errors[k][0]]
        weights = [
            mean_squares(errors[k][1]) / (mean_squares(errors[k][0]) + mean_squares(errors[k][1]))
            for k in scored
        ]
        steps = [1, 2, 3, 5, 9, 17, 24, 25, 60]
        for h, mine, theirs in zip(
            steps, fitted.predict_steps(steps), fixed.predict_steps(steps), strict=True
        ):
            w = float(np.interp(h, scored, weights)) if scored else 0.5
            expected = w * own_forecast(fitted, h) + (1 - w) * theirs.mean
            assert mine.mean == pytest.approx(expected, rel=1e-9, abs=1e-9), (i, h)
        checked += 1
        shares.append(weights)
    assert checked > 40 and fitted.params != DEFAULT_PARAMS
    # The series is one the fitted model describes: one step ahead it earns most of the
    # weight; further ahead, where its trend misleads more, less.
    assert shares[-1][0] > 0.6 and shares[-1][0] - shares[-1][-1] > 0.1


def test_an_anchor_and_its_weights_go_through_a_checkpoint_and_older_states_get_them() -> None:
    y = series(900, 2)
    model = HoltWinters(M, fit=True, horizon=M)
    for v in y[:600]:
        model.learn(v)
    restored = HoltWinters.from_bytes(model.to_bytes())
    assert restored.to_bytes() == model.to_bytes()
    assert restored.predict(M) == model.predict(M)
    assert model.anchor is not None and model.weights is not None
    assert len(model.weights.weights()) == len(tracked_horizons(M))
    # A fitted model's state of before the weights (version 5: no weights blob): equal weights
    # until its horizons have errors, then its own.
    then = HoltWinters.from_bytes(b"\x05" + without(model, 1)[1:])
    assert then.weights is not None and then.weights.weights() == ()
    assert then.anchor is not None and then.anchor.seasonal == model.anchor.seasonal
    # Before the anchor (version 4: neither blob): the anchor starts from the model's own
    # level and season, and learns from then on.
    old = HoltWinters.from_bytes(b"\x04" + without(model, 2)[1:])
    assert old.anchor is not None and old.weights is not None
    assert old.anchor.level == old.level and old.anchor.seasonal == old.seasonal
    for v in y[600:]:
        for each in (old, then, model):
            each.learn(v)
    assert old.predict(M) != model.predict(M)  # another anchor, another forecast
    assert old.anchor.seasonal != old.seasonal  # which learns with its own parameters
    assert [k for k, _ in then.weights.weights()] == list(tracked_horizons(M))
    assert then.predict(M) != model.predict(M)  # weights of fewer errors


def without(model: HoltWinters, fields: int) -> bytes:
    """`model`'s state without its last `fields` fields (the weights, then the anchor)."""
    state = model.to_bytes()
    tail = StateWriter()
    if fields > 1:
        tail.blob(b"" if model.anchor is None else model.anchor.to_bytes())
    tail.blob(b"" if model.weights is None else model.weights.to_bytes())
    assert state.endswith(bytes(tail))
    return state[: -len(bytes(tail))]


def test_a_damaged_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="anchor"):
        Anchor.from_bytes(Anchor(1.0, array("d", [1.0, 2.0])).to_bytes(), 3)
    fixed = HoltWinters(M, DEFAULT_PARAMS)
    for v in series(100, 3):
        fixed.learn(v)
    with_one = StateWriter()
    with_one.blob(Anchor(0.0, array("d", [0.0] * M)).to_bytes())
    with_one.blob(b"")
    with pytest.raises(ValueError, match="anchor"):  # a fixed model has none
        HoltWinters.from_bytes(without(fixed, 2) + bytes(with_one))
    weights_alone = StateWriter()
    weights_alone.blob(b"")
    weights_alone.blob(CombinationWeights(tracked_horizons(M)).to_bytes())
    with pytest.raises(ValueError, match="weights without an anchor"):
        HoltWinters.from_bytes(without(fixed, 2) + bytes(weights_alone))
    fitted = HoltWinters(M, fit=True, horizon=M)
    for v in series(100, 3):
        fitted.learn(v)
    assert fitted.anchor is not None
    other_horizons = StateWriter()
    other_horizons.blob(fitted.anchor.to_bytes())
    other_horizons.blob(CombinationWeights(tracked_horizons(2 * M)).to_bytes())
    with pytest.raises(ValueError, match="do not fit its horizons"):
        HoltWinters.from_bytes(without(fitted, 2) + bytes(other_horizons))
