"""A fitted forecast combined with the fixed defaults' (`pushsvc.series.forecast_anchor` and
its use in `forecast_holt_winters`): its mean is the mean of the fitted model's forecast and
that of a fixed-default model learning the same values, at every step; the anchor goes
through a checkpoint; a fitted model checkpointed before it had one goes on with one made
from its state; a damaged one is refused."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from pushsvc.series.forecast_anchor import Anchor
from pushsvc.series.forecast_fit import EtsParams
from pushsvc.series.forecast_holt_winters import DEFAULT_PARAMS, HoltWinters
from pushsvc.series.forecast_outlook import damped_steps
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


def test_the_forecast_is_the_mean_of_the_fitted_and_the_fixed_defaults_forecasts() -> None:
    y = series(2000, 1)
    fitted = HoltWinters(M, fit=True, horizon=M)
    fixed = HoltWinters(M, DEFAULT_PARAMS, horizon=M)
    checked = 0
    for i, v in enumerate(y):
        fitted.learn(v)
        fixed.learn(v)
        if fitted.started and i % 37 == 0:
            steps = [1, 2, 5, 24, 25, 60]
            for h, mine, theirs in zip(
                steps, fitted.predict_steps(steps), fixed.predict_steps(steps), strict=True
            ):
                expected = (own_forecast(fitted, h) + theirs.mean) / 2
                assert mine.mean == pytest.approx(expected, rel=1e-12, abs=1e-9), (i, h)
            checked += 1
    assert checked > 40 and fitted.params != DEFAULT_PARAMS


def test_an_anchor_goes_through_a_checkpoint_and_older_fitted_states_get_one() -> None:
    y = series(900, 2)
    model = HoltWinters(M, fit=True, horizon=M)
    for v in y[:600]:
        model.learn(v)
    restored = HoltWinters.from_bytes(model.to_bytes())
    assert restored.to_bytes() == model.to_bytes()
    assert restored.predict(M) == model.predict(M)
    # A fitted model's state of before the anchor (version 4: no anchor blob): the anchor
    # starts from the model's own level and season, and learns from then on.
    assert model.anchor is not None
    old = HoltWinters.from_bytes(b"\x04" + without_anchor(model)[1:])
    assert old.anchor is not None
    assert old.anchor.level == old.level and old.anchor.seasonal == old.seasonal
    for v in y[600:]:
        old.learn(v)
        model.learn(v)
    assert old.predict(M) != model.predict(M)  # another anchor, another forecast
    assert old.anchor.seasonal != old.seasonal  # which learns with its own parameters


def without_anchor(model: HoltWinters) -> bytes:
    """`model`'s state without its last field, the anchor."""
    state = model.to_bytes()
    tail = StateWriter()
    tail.blob(b"" if model.anchor is None else model.anchor.to_bytes())
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
    with pytest.raises(ValueError, match="anchor"):  # a fixed model has none
        HoltWinters.from_bytes(without_anchor(fixed) + bytes(with_one))
