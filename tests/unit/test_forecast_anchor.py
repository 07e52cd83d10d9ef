"""A fitted forecast combined with two fixed models' (`pushsvc.series.forecast_anchor`,
`forecast_weights` and their use in `forecast_holt_winters`): its mean mixes the fitted
model's forecast and those of a slow and a fast fixed model learning the same values, at each
horizon the two with the smaller recent mean squared errors there, each weighted by the
other's, at every step; the anchors and the weights go through a checkpoint; a fitted model
checkpointed before it had them goes on with anchors made from its state and equal weights;
a damaged one is refused."""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd
import pytest

from pushsvc.series.forecast_anchor import ANCHORS, Anchor
from pushsvc.series.forecast_errors import tracked_horizons
from pushsvc.series.forecast_fit import EtsParams
from pushsvc.series.forecast_holt_winters import DEFAULT_PARAMS, HoltWinters, HwParams
from pushsvc.series.forecast_outlook import damped_steps
from pushsvc.series.forecast_weights import SPAN, CombinationWeights
from pushsvc.stats.state_codec import StateWriter
from support.ets_series import ets_series

M = 24
SLOW = DEFAULT_PARAMS
FAST = HwParams(0.5, 0.0, DEFAULT_PARAMS.gamma, 1.0)


def series(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(ets_series(rng.normal(0, 1, n).tolist(), M, EtsParams(0.3, 0.02, 0.1, 0.9)))


def own_forecast(model: HoltWinters, h: int) -> float:
    """The fitted model's own forecast h steps ahead, from its state, without the anchors."""
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


def trimmed(squares: list[float]) -> list[float]:
    """The better two of the members, each the other's share of their mean squares."""
    best, second = np.argsort(squares, kind="stable")[:2]
    out = [0.0] * len(squares)
    total = squares[best] + squares[second]
    out[best], out[second] = squares[second] / total, squares[best] / total
    return out


def test_the_forecast_mixes_the_better_two_by_their_recent_errors_at_each_horizon() -> None:
    """The members' forecasts are recorded from outside (the fitted one from its state, the
    anchors as fixed models of their parameters run beside it) and scored when their values
    come; at every step the forecast is the mix their mean squared errors give, each weight a
    line in the step between tracked horizons."""
    y = series(2400, 1)
    fitted = HoltWinters(M, fit=True, horizon=M)
    beside = [HoltWinters(M, params, horizon=M) for params in (SLOW, FAST)]
    horizons = tracked_horizons(M)
    made: dict[int, list[tuple[int, list[float]]]] = {k: [] for k in horizons}
    errors: dict[int, list[list[float]]] = {k: [[], [], []] for k in horizons}
    checked, tables = 0, []
    for i, v in enumerate(y):
        for k in horizons:  # the forecasts made k values ago were for this one
            if made[k] and made[k][0][0] == i:
                for member, forecast in zip(errors[k], made[k].pop(0)[1], strict=True):
                    member.append(v - forecast)
        for model in (fitted, *beside):
            model.learn(v)
        if not fitted.started:
            continue
        for k in horizons:
            forecasts = [own_forecast(fitted, k)]
            forecasts += [model.predict_steps([k])[0].mean for model in beside]
            made[k].append((i + k, forecasts))
        if i % 37:
            continue
        scored = [k for k in horizons if errors[k][0]]
        table = [trimmed([mean_squares(e) for e in errors[k]]) for k in scored]
        steps = [1, 2, 3, 5, 9, 17, 24, 25, 60]
        theirs = [model.predict_steps(steps) for model in beside]
        for s, (h, mine) in enumerate(zip(steps, fitted.predict_steps(steps), strict=True)):
            members = [own_forecast(fitted, h), theirs[0][s].mean, theirs[1][s].mean]
            shares = [
                float(np.interp(h, scored, [row[j] for row in table])) if scored else 1 / 3
                for j in range(3)
            ]
            expected = sum(w * f for w, f in zip(shares, members, strict=True))
            assert mine.mean == pytest.approx(expected, rel=1e-9, abs=1e-9), (i, h)
        checked += 1
        tables.append(table)
    assert checked > 40 and fitted.params != DEFAULT_PARAMS
    # The series moves (alpha 0.3): one step ahead the fitted and the fast model share the
    # weight and the slow one (fitted, slow, fast) has none; the shares differ by horizon.
    last = tables[-1]
    assert last[0][1] == 0 and last[0][0] > 0.2 and last[0][2] > 0.2
    assert len({tuple(row) for row in last}) > 1


def test_anchors_and_weights_go_through_a_checkpoint_and_older_states_get_them() -> None:
    y = series(900, 2)
    model = HoltWinters(M, fit=True, horizon=M)
    for v in y[:600]:
        model.learn(v)
    restored = HoltWinters.from_bytes(model.to_bytes())
    assert restored.to_bytes() == model.to_bytes()
    assert restored.predict(M) == model.predict(M)
    assert len(model.anchors) == len(ANCHORS) and model.weights is not None
    assert len(model.weights.weights()) == len(tracked_horizons(M))
    slow = model.anchors[0]
    # A fitted model's state of before the weights (version 5: its one anchor, the slow one,
    # and no weights): the fast anchor starts from the model's own level and season, and
    # equal weights until its horizons have errors, then its own.
    v5 = StateWriter()
    v5.blob(slow.to_bytes())
    then = HoltWinters.from_bytes(b"\x05" + without(model)[1:] + bytes(v5))
    assert then.weights is not None and then.weights.weights() == ()
    assert then.anchors[0].seasonal == slow.seasonal and then.anchors[0].level == slow.level
    assert then.anchors[1].level == then.level and then.anchors[1].seasonal == then.seasonal
    # Before the anchor (version 4: neither field): both start from the model's state.
    old = HoltWinters.from_bytes(b"\x04" + without(model)[1:])
    assert [a.alpha for a in old.anchors] == list(ANCHORS) and old.weights is not None
    assert all(a.level == old.level and a.seasonal == old.seasonal for a in old.anchors)
    for v in y[600:]:
        for each in (old, then, model):
            each.learn(v)
    assert old.predict(M) != model.predict(M)  # other anchors, another forecast
    assert old.anchors[0].seasonal != old.seasonal  # which learn with their own parameters
    assert old.anchors[0].seasonal != old.anchors[1].seasonal
    assert [k for k, _ in then.weights.weights()] == list(tracked_horizons(M))
    assert then.predict(M) != model.predict(M)  # weights of fewer errors


def without(model: HoltWinters) -> bytes:
    """`model`'s state without its last two fields (its anchors and weights)."""
    state = model.to_bytes()
    tail = StateWriter()
    anchors = StateWriter()
    if model.anchors:
        anchors.uint(len(model.anchors))
        for anchor in model.anchors:
            anchors.blob(anchor.to_bytes())
    tail.blob(bytes(anchors))
    tail.blob(b"" if model.weights is None else model.weights.to_bytes())
    assert state.endswith(bytes(tail))
    return state[: -len(bytes(tail))]


def fields(anchors: list[bytes] | None, weights: bytes) -> bytes:
    """A state's anchors and weights fields: `anchors` the anchors' blobs (None: none)."""
    out = StateWriter()
    inner = StateWriter()
    if anchors is not None:
        inner.uint(len(anchors))
        for blob in anchors:
            inner.blob(blob)
    out.blob(bytes(inner))
    out.blob(weights)
    return bytes(out)


def test_a_damaged_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="anchor"):
        Anchor.from_bytes(0.02, Anchor(0.02, 1.0, array("d", [1.0, 2.0])).to_bytes(), 3)
    fixed = HoltWinters(M, DEFAULT_PARAMS)
    for v in series(100, 3):
        fixed.learn(v)
    empty = Anchor(0.02, 0.0, array("d", [0.0] * M)).to_bytes()
    with pytest.raises(ValueError, match="anchor"):  # a fixed model has none
        HoltWinters.from_bytes(without(fixed) + fields([empty, empty], b""))
    weights = CombinationWeights(tracked_horizons(M), 3).to_bytes()
    with pytest.raises(ValueError, match="weights without an anchor"):
        HoltWinters.from_bytes(without(fixed) + fields(None, weights))
    fitted = HoltWinters(M, fit=True, horizon=M)
    for v in series(100, 3):
        fitted.learn(v)
    mine = [a.to_bytes() for a in fitted.anchors]
    other_horizons = CombinationWeights(tracked_horizons(2 * M), 3).to_bytes()
    with pytest.raises(ValueError, match="do not fit its horizons"):
        HoltWinters.from_bytes(without(fitted) + fields(mine, other_horizons))
    with pytest.raises(ValueError, match="not its anchors"):
        HoltWinters.from_bytes(without(fitted) + fields(mine[:1], weights))
    two_members = CombinationWeights(tracked_horizons(M), 2).to_bytes()
    with pytest.raises(ValueError, match="not of its members"):
        HoltWinters.from_bytes(without(fitted) + fields(mine, two_members))
