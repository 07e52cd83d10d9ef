"""Value distributions that make a quantile sketch work: lognormal (wide, one-sided),
bimodal (two clusters a decade apart: quantiles fall between them) and Pareto (a heavy
tail). Seeded, so a failure reproduces."""

from __future__ import annotations

import math

import numpy as np

NAMES = ("lognormal", "bimodal", "pareto")


def skewed(n: int, seed: int) -> dict[str, list[float]]:
    """`n` values of each distribution in `NAMES`."""
    rng = np.random.default_rng(seed)
    bimodal = np.where(
        rng.random(n) < 0.6, rng.lognormal(math.log(15), 0.3, n), rng.lognormal(7, 0.4, n)
    )
    return {
        "lognormal": rng.lognormal(2, 1.5, n).tolist(),
        "bimodal": bimodal.tolist(),
        "pareto": (5 * (1 + rng.pareto(1.05, n))).tolist(),
    }
