"""research/nab_sweep.py's threshold: NAB's optimiser picks the one threshold that gives the
corpus its best score; the sweep finds it in one pass over the sorted scores. Checked here
against trying every threshold, on small corpora of NAB's shape (probation, windows, points
outside them) with ties among the scores."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from research.nab_sweep import OUTSIDE, PROBATION, file_score, optimum

# A point: its detector score (few distinct values, so that ties happen), its NAB weight and
# where it lies: probation, outside every window, or in window 0..2.
_POINT = st.tuples(
    st.sampled_from([0.0, 0.2, 0.5, 0.5, 0.7, 0.9, 1.0]),
    st.floats(-1.0, 1.0, allow_nan=False),
    st.sampled_from([PROBATION, OUTSIDE, 0, 1, 2]),
)


def _corpus(files: list[list[tuple[float, float, int]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    prepared: dict[str, Any] = {"files": {}, "null": {}}
    scores: dict[str, list[float]] = {}
    for i, points in enumerate(files):
        name = f"f{i}.csv"
        prepared["files"][name] = {
            "weight": [w for _, w, _ in points],
            "window": [win for _, _, win in points],
            "windows": 3,
        }
        scores[name] = [s for s, _, _ in points]
    return prepared, scores


def _total(prepared: dict[str, Any], scores: dict[str, list[float]], threshold: float) -> float:
    return sum(file_score(f, scores[n], threshold)[0] for n, f in prepared["files"].items())


@settings(max_examples=300)
@given(st.lists(st.lists(_POINT, max_size=30), min_size=1, max_size=4))
def test_the_optimum_is_the_best_of_every_threshold(
    files: list[list[tuple[float, float, int]]],
) -> None:
    prepared, scores = _corpus(files)
    every = {s for values in scores.values() for s in values} | {1.1}
    best = max(_total(prepared, scores, t) for t in every)
    assert _total(prepared, scores, optimum(prepared, scores)) == pytest.approx(best)


def test_a_window_counts_its_best_detection_once_and_every_false_positive() -> None:
    prepared, scores = _corpus(
        [[(0.9, 0.3, PROBATION), (0.9, 0.8, 0), (0.9, 0.5, 0), (0.9, -0.11, OUTSIDE)]]
    )
    # Window 0 found at 0.8 (its best), windows 1 and 2 missed (-1 each), one false positive.
    assert file_score(prepared["files"]["f0.csv"], scores["f0.csv"], 0.5) == pytest.approx(
        (0.8 - 2 - 0.11, 1, 2)
    )
