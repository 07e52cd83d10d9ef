"""A fast, in-memory NAB sweep of research/nab_offline.py's candidates (standard profile).

The runner (research/nab_offline.py) writes NAB's results files and calls NAB's own
``Runner.optimize`` and ``Runner.score``: minutes per candidate on a loaded machine. This
sweep computes NAB's per-point weights and windows once (NAB's own ``Sweeper.calcSweepScore``
over NAB's own ``CorpusLabel``, cached), then per candidate runs the detector, rounds the
scores to 6 decimals as the runner writes them, and finds the corpus-wide optimum over all
thresholds exactly as NAB's optimiser does (one threshold for the corpus), and the score at
the default threshold; normalised as the runner does (tuning / held out / corpus). Use it to
explore; confirm a chosen row with the runner.

    PYTHONPATH=src /work/nab/.venv/bin/python -m research.nab_sweep --nab /work/nab \
        --candidate pushsvc [--candidate ...] [--per-file]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import pickle
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pushsvc.series.anomaly import DEFAULT_THRESHOLD, Detector, Params
from research.nab_offline import CANDIDATES, split

COST = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}
PROBATION = -2  # a point in the probationary period
OUTSIDE = -1  # a point outside every window


def prepare(nab: Path, cache: Path) -> dict[str, Any]:
    """Per file: values, each point's NAB weight (sweep score) and window index."""
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    sys.path.insert(0, str(nab))
    import pandas  # type: ignore[import-not-found]
    from nab.corpus import Corpus  # type: ignore[import-not-found]
    from nab.labeler import CorpusLabel  # type: ignore[import-not-found]
    from nab.sweeper import Sweeper  # type: ignore[import-not-found]

    corpus = Corpus(str(nab / "data"))
    label = CorpusLabel(str(nab / "labels" / "combined_windows.json"), corpus)
    sweeper = Sweeper(probationPercent=0.15, costMatrix=COST)
    files: dict[str, Any] = {}
    for relative in sorted(label.windows):
        data = pandas.read_csv(nab / "data" / relative)
        timestamps = label.labels[relative]["timestamp"]
        windows = label.windows[relative]
        rows = sweeper.calcSweepScore(timestamps, [0.0] * len(timestamps), windows, relative)
        names = sorted({r.windowName for r in rows if r.windowName not in (None, "probationary")})
        index = {name: i for i, name in enumerate(names)}
        files[relative] = {
            "values": [float(v) for v in data["value"]],
            "weight": [r.sweepScore for r in rows],
            "window": [
                PROBATION
                if r.windowName == "probationary"
                else OUTSIDE
                if r.windowName is None
                else index[r.windowName]
                for r in rows
            ],
            "windows": len(windows),
        }
    null = {}
    with (nab / "results" / "null" / "null_standard_scores.csv").open() as f:
        for r in csv.DictReader(f):
            if r["File"] and r["File"] != "Totals":
                null[r["File"]] = float(r["Score"])
    prepared = {"files": files, "null": null}
    cache.write_bytes(pickle.dumps(prepared))
    return prepared


def file_score(f: dict[str, Any], scores: list[float], threshold: float) -> tuple[float, int, int]:
    """NAB's score of one file at ``threshold``, its false positives and missed windows."""
    best = [-COST["fnWeight"]] * f["windows"]
    fp_sum = 0.0
    fps = 0
    for s, w, win in zip(scores, f["weight"], f["window"], strict=True):
        if s < threshold or win == PROBATION:
            continue
        if win == OUTSIDE:
            fp_sum += w
            fps += 1
        elif w > best[win]:
            best[win] = w
    missed = sum(1 for b in best if b == -COST["fnWeight"])
    return sum(best) + fp_sum, fps, missed


def optimum(prepared: dict[str, Any], scores: dict[str, list[float]]) -> float:
    """The threshold NAB's optimiser picks: the best corpus score over all thresholds."""
    points = []
    base = 0.0
    for name, f in prepared["files"].items():
        base -= COST["fnWeight"] * f["windows"]
        for s, w, win in zip(scores[name], f["weight"], f["window"], strict=True):
            if win != PROBATION:
                points.append((s, w, (name, win) if win >= 0 else None))
    points.sort(key=lambda p: p[0], reverse=True)
    best_of: dict[Any, float] = {}
    total = base
    best_score, best_threshold = total, 1.1
    i = 0
    while i < len(points):
        t = points[i][0]
        while i < len(points) and points[i][0] == t:
            _, w, key = points[i]
            if key is None:
                total += w
            else:
                old = best_of.get(key, -COST["fnWeight"])
                if w > old:
                    best_of[key] = w
                    total += w - old
            i += 1
        if total > best_score:
            best_score, best_threshold = total, t
    return best_threshold


def normalised(prepared: dict[str, Any], per_file: dict[str, float], files: list[str]) -> float:
    raw = sum(per_file[f] for f in files)
    base = sum(prepared["null"][f] for f in files)
    perfect = sum(prepared["files"][f]["windows"] for f in files)
    return 100 * (raw - base) / (perfect - base)


def evaluate(prepared: dict[str, Any], params: Params, per_file: bool = False) -> dict[str, Any]:
    scores: dict[str, list[float]] = {}
    points = 0
    spent = 0.0
    for name, f in prepared["files"].items():
        detector = Detector(params)
        start = time.perf_counter()
        raw = [detector.score(v) for v in f["values"]]
        spent += time.perf_counter() - start
        points += len(raw)
        scores[name] = [round(s, 6) for s in raw]
    files = list(prepared["files"])
    tuning, held_out = split({f: None for f in files})
    entry: dict[str, Any] = {"us_per_point": round(1e6 * spent / points, 1)}
    for label, threshold in (
        ("optimised", optimum(prepared, scores)),
        ("default", params.threshold),
    ):
        results = {n: file_score(prepared["files"][n], scores[n], threshold) for n in files}
        mine = {n: r[0] for n, r in results.items()}
        entry[label] = {
            "threshold": threshold,
            "tuning": round(normalised(prepared, mine, tuning), 1),
            "held_out": round(normalised(prepared, mine, held_out), 1),
            "corpus": round(normalised(prepared, mine, files), 1),
            "fp": sum(r[1] for r in results.values()),
            "missed": sum(r[2] for r in results.values()),
        }
        if per_file and label == "default":
            entry["per_file"] = {n: [round(r[0], 2), r[1], r[2]] for n, r in results.items()}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nab", type=Path, required=True, help="a numenta/NAB checkout")
    parser.add_argument("--cache", type=Path, help="where the prepared corpus is kept")
    parser.add_argument("--candidate", action="append", choices=sorted(CANDIDATES))
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--per-file", action="store_true")
    args = parser.parse_args()
    nab = args.nab.resolve()
    # One cache per checkout: another checkout's labels must not be scored from this one's.
    digest = hashlib.sha256(str(nab).encode()).hexdigest()[:12]
    cache = args.cache or Path(tempfile.gettempdir(), f"nab_sweep-{digest}.pickle")
    prepared = prepare(nab, cache)
    for name in args.candidate or ["pushsvc"]:
        params = replace(CANDIDATES[name], threshold=args.threshold)
        print(json.dumps({name: evaluate(prepared, params, args.per_file)}), flush=True)


if __name__ == "__main__":
    main()
