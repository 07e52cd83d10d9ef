"""Score pushsvc's anomaly detector on the Numenta Anomaly Benchmark, offline.

Runs ``pushsvc.series.anomaly`` over every NAB data file (no server: this is
for choosing and tuning the detector; bench/nab.py goes through the HTTP
API), writes NAB's results files and calls NAB's own scorer, imported from a
checkout of numenta/NAB that this script is pointed at (never copied here):

    git clone https://github.com/numenta/NAB /work/nab
    .venv-test/bin/python research/nab_offline.py --nab /work/nab [--candidate NAME ...]

It prints, per candidate and NAB profile, the normalised score with NAB's
threshold optimisation and at pushsvc's default threshold, on the tuning
files (artificial*, realKnownCause, realAWSCloudwatch), on the held-out
files, and on the whole corpus, plus the microseconds per point.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pushsvc.series.anomaly import DEFAULT_THRESHOLD, Detector, Params

TUNING = ("artificialNoAnomaly", "artificialWithAnomaly", "realKnownCause", "realAWSCloudwatch")
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

# The rows of docs/journal/anomaly-detector.md, each spelled out in full so that a change of
# the defaults does not change what a row measures. NAB's file names allow no "_" here.
_SILENT = {"damp": 0.0}
_SURPRISE = {"context_weight": 0.0}  # the first rows: before the context layer
# Round 4's fields, as the rows before it ran: no wake, no calibration, no edge bands.
_BEFORE4: dict[str, Any] = {
    "wake": 2.0,
    "wake_after": 0,
    "wake_breakout": False,
    "calibrate": 0.0,
    "edge_bands": False,
}
# Round 6's field, as the rows before it ran: no block context.
_BEFORE6: dict[str, Any] = {"block": 0}


def _old(**fields: Any) -> Params:
    """A row from before round 4, spelled out as it ran."""
    return Params(**{**_BEFORE4, **_BEFORE6, **fields})


def _ctx(weight: float, levels: int, **changes: Any) -> Params:
    """A context-layer row, spelled out: 200 silent points after a flag, orders 0..4."""
    base = _old(
        context_weight=weight,
        levels=levels,
        rest=200,
        damp=0.0,
        orders=4,
        table_bits=14,
        regrid_margin=0.25,
        mature=0,
    )
    return replace(base, **changes)


def _mature(points: int, **changes: Any) -> Params:
    """A round-3 row, spelled out: round 2's chosen blend, its novelty maturing."""
    return replace(_ctx(0.65, 6, regrid_margin=0.1, mature=points), **changes)


def _round4(**changes: Any) -> Params:
    """A round-4 row, spelled out: the defaults since round 4 (round 3's blend at w 0.7, a
    breakout wakes the rest from its 6th point, each flag raises the bar) with changes."""
    base = _mature(
        288,
        context_weight=0.7,
        wake=0.8,
        wake_after=5,
        wake_breakout=True,
        calibrate=0.3,
        calibrate_horizon=2016,
        edge_bands=False,
        block=0,
    )
    return replace(base, **changes)


def _round6(**changes: Any) -> Params:
    """A round-6 row, spelled out: the defaults since round 6 (round 4's with the block
    context: means of 12 points banded in the point grid, 8 bands, and in their own grid,
    their novelty's share growing over 1,728 points; the novelty's share 0.75) with
    changes."""
    base = {"block": 12, "block_levels": 8, "block_mature": 1728, "context_weight": 0.75}
    return _round4(**{**base, **changes})


def _edge(**changes: Any) -> Params:
    """Round 4's defaults with edge bands and a redraw 25 % past the grid."""
    return _round4(**{"edge_bands": True, "regrid_margin": 0.25, **changes})


CANDIDATES: dict[str, Params] = {
    "pushsvc": Params(),  # the defaults (since round 6: round 4's and the block context)
    "round3": _mature(288),  # the defaults of round 3
    "surprise": _old(context_weight=0.0),  # round 1's row, the defaults until round 3
    "context": _old(context_weight=0.65, mature=0),  # round 2's blend, novelty at once
    "likelihoodOnly": _old(direct=False, rest=0, damp=0.5, **_SURPRISE),
    "direct": _old(rest=0, damp=0.5, **_SURPRISE),
    "directRest60half": _old(rest=60, damp=0.5, **_SURPRISE),
    "directRest100": _old(rest=100, **_SILENT, **_SURPRISE),
    "directRest200": _old(rest=200, **_SILENT, **_SURPRISE),
    "directRest400": _old(rest=400, **_SILENT, **_SURPRISE),
    "short5": _old(short=5, rest=200, **_SILENT, **_SURPRISE),
    "noBreakout": _old(spatial_tolerance=1e9, rest=200, **_SILENT, **_SURPRISE),
    "learn144": _old(learn=144, rest=200, **_SILENT, **_SURPRISE),
    "learn576": _old(learn=576, rest=200, **_SILENT, **_SURPRISE),
    # The context layer blended in: context_weight (w), levels (L), orders (o).
    "ctxW83L8": _ctx(0.83, 8),
    "ctxW83L8o3": _ctx(0.83, 8, orders=3),
    "ctxW80L6": _ctx(0.8, 6),
    "ctxW70L8": _ctx(0.7, 8),
    "ctxW70L8rest150": _ctx(0.7, 8, rest=150),
    "ctxW70L4": _ctx(0.7, 4),
    "ctxW70L5": _ctx(0.7, 5),
    "ctxW70L6": _ctx(0.7, 6),
    "ctxW70L6o5": _ctx(0.7, 6, orders=5),
    "ctxW70L6bits12": _ctx(0.7, 6, table_bits=12),
    "ctxW70L6bits16": _ctx(0.7, 6, table_bits=16),
    "ctxW70L12": _ctx(0.7, 12),
    "ctxW60L6": _ctx(0.6, 6),
    "ctxW60L8": _ctx(0.6, 8),
    "ctxW60L8o6": _ctx(0.6, 8, orders=6),
    "ctxW70L6rest250": _ctx(0.7, 6, rest=250),
    "ctxW70L6learn432": _ctx(0.7, 6, learn=432),
    # How far past the grid redraws it (g: regrid_margin in hundredths; above, 0.25).
    "ctxW70L6g0": _ctx(0.7, 6, regrid_margin=0.0),
    "ctxW70L6g5": _ctx(0.7, 6, regrid_margin=0.05),
    "ctxW70L6g10": _ctx(0.7, 6, regrid_margin=0.1),
    "ctxW70L6g15": _ctx(0.7, 6, regrid_margin=0.15),
    "ctxW70L6g50": _ctx(0.7, 6, regrid_margin=0.5),
    "ctxW70L7g10": _ctx(0.7, 7, regrid_margin=0.1),
    "ctxW70L8g10": _ctx(0.7, 8, regrid_margin=0.1),
    "ctxW70L6o3g10": _ctx(0.7, 6, orders=3, regrid_margin=0.1),
    "ctxW60L6g10": _ctx(0.6, 6, regrid_margin=0.1),
    "ctxW65L6g10": _ctx(0.65, 6, regrid_margin=0.1),  # = the defaults (wake off)
    "ctxW75L6g10": _ctx(0.75, 6, regrid_margin=0.1),
    # Round 2's blend, with a score of at least `wake` reported during the rest (re-arming it).
    "wake90": _old(context_weight=0.65, mature=0, wake=0.9),
    "wake95": _old(context_weight=0.65, mature=0, wake=0.95),
    "wake100": _old(context_weight=0.65, mature=0, wake=1.0),
    # Round 3: the novelty's share grows over `mature` points after the sequence memory
    # (re)starts; the rest as round 2's blend (w 0.65, L 6, g 0.1) unless said.
    **{f"mature{m}": _mature(m) for m in (144, 200, 288, 400, 576)},
    "mature288wake": _mature(288, wake=1.0),
    "mature144wake": _mature(144, wake=1.0),
    "mature288w70": _mature(288, context_weight=0.7),
    "mature288w60": _mature(288, context_weight=0.6),
    "mature288g25": _mature(288, regrid_margin=0.25),
    "mature288g50": _mature(288, regrid_margin=0.5),
    "mature288L5": _mature(288, levels=5),
    "mature288L7": _mature(288, levels=7),
    "mature288o3": _mature(288, orders=3),
    "mature288rest170": _mature(288, rest=170),
    "mature288rest250": _mature(288, rest=250),
    "mature288g5": _mature(288, regrid_margin=0.05),
    "mature288g15": _mature(288, regrid_margin=0.15),
    "mature288learn200": _mature(288, learn=200),
    "mature288learn432": _mature(288, learn=432),
    "mature288short5": _mature(288, short=5),
    # Round 4, on round 3's defaults (w 0.65): when a score may wake the rest (w: wake in
    # hundredths; a: wake_after; b: only a breakout of the range seen wakes it).
    "wake100a5": _mature(288, wake=1.0, wake_after=5),
    "wake100a20": _mature(288, wake=1.0, wake_after=20),
    "wake95a5": _mature(288, wake=0.95, wake_after=5),
    "wake90a5": _mature(288, wake=0.9, wake_after=5),
    "wake100b": _mature(288, wake=1.0, wake_breakout=True),
    "wake90b": _mature(288, wake=0.9, wake_breakout=True),
    "wake80a5b": _mature(288, wake=0.8, wake_after=5, wake_breakout=True),
    "wake50a5b": _mature(288, wake=0.5, wake_after=5, wake_breakout=True),
    "wake80a5bRest150": _mature(288, wake=0.8, wake_after=5, wake_breakout=True, rest=150),
    "wake80a5bRest300": _mature(288, wake=0.8, wake_after=5, wake_breakout=True, rest=300),
    # ... and each flag raising the bar (c: calibrate in hundredths; h: its horizon).
    **{
        f"wake80a5bC{c}": _mature(
            288, wake=0.8, wake_after=5, wake_breakout=True, calibrate=c / 100
        )
        for c in (10, 20, 30, 40, 50, 100)
    },
    **{
        f"wake80a5bC{c}h{h}": _mature(
            288,
            wake=0.8,
            wake_after=5,
            wake_breakout=True,
            calibrate=c / 100,
            calibrate_horizon=h,
        )
        for c, h in ((30, 1000), (30, 4032), (30, 8064), (50, 4032), (40, 1500))
    },
    "calib30": _mature(288, calibrate=0.3),  # no wake
    # The defaults since round 4 (= pushsvc) and their neighbours.
    "round4": _round4(),  # the defaults of round 4
    **{f"round4w{w}": _round4(context_weight=w / 100) for w in (60, 65, 75, 80, 85)},
    "round4L5": _round4(levels=5),
    "round4L7": _round4(levels=7),
    "round4rest150": _round4(rest=150),
    "round4rest250": _round4(rest=250),
    "round4learn432": _round4(learn=432),
    "round4short5": _round4(short=5),
    "round4g25": _round4(regrid_margin=0.25),
    # Edge bands (values past the grid, short of a redraw, in bands of their own; g: the
    # redraw's margin in hundredths; flags a smooth wave growing past the grid).
    "edge": _edge(),
    **{f"edgeG{g}": _edge(regrid_margin=g / 100) for g in (10, 15, 20, 30, 35, 50, 100)},
    "edgeW65": _edge(context_weight=0.65),
    "edgeW75": _edge(context_weight=0.75),
    "edgeL5": _edge(levels=5),
    "edgeL7": _edge(levels=7),
    # Round 6: the block context (B: block in points, L: block_levels, M: block_mature in
    # points, w: context_weight in hundredths; 12, 8, 1728 and 0.75 unless said).
    "round6": _round6(),
    **{f"round6w{w}": _round6(context_weight=w / 100) for w in (65, 70, 72, 78, 80, 85)},
    **{f"round6B{b}": _round6(block=b) for b in (6, 9, 15, 18, 24)},
    **{f"round6L{v}": _round6(block_levels=v) for v in (6, 7, 10)},
    **{f"round6M{m}": _round6(block_mature=m) for m in (0, 864, 1152, 2304, 2880)},
    # ... measured first at round 4's novelty share, 0.7.
    **{f"round6w70B{b}": _round6(context_weight=0.7, block=b) for b in (6, 9, 15, 18, 24)},
    **{f"round6w70L{v}": _round6(context_weight=0.7, block_levels=v) for v in (6, 7, 10)},
    **{
        f"round6w70M{m}": _round6(context_weight=0.7, block_mature=m)
        for m in (0, 864, 1152, 2304, 2880)
    },
}


def run_detector(params: Params, values: list[float]) -> tuple[list[float], float]:
    detector = Detector(params)
    start = time.perf_counter()
    scores = [detector.score(v) for v in values]
    return scores, time.perf_counter() - start


def write_results(nab: Path, out: Path, name: str, params: Params) -> tuple[int, float]:
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    points = 0
    seconds = 0.0
    for relative in sorted(windows):
        rows = list(csv.DictReader((nab / "data" / relative).open()))
        values = [float(r["value"]) for r in rows]
        scores, spent = run_detector(params, values)
        points += len(values)
        seconds += spent
        category, filename = relative.split("/")
        target = out / name / category / f"{name}_{filename}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value", "anomaly_score", "label"])
            # NAB's scorer reads windows from its labels file, not this column.
            for row, score in zip(rows, scores, strict=True):
                writer.writerow([row["timestamp"], row["value"], f"{score:.6f}", 0])
    return points, seconds


def normalised(
    per_file: dict[str, float], null: dict[str, float], windows: dict[str, Any], files: list[str]
) -> float:
    """NAB's normalisation (runner.normalize) restricted to ``files``."""
    raw = sum(per_file[f] for f in files)
    base = sum(null[f] for f in files)
    perfect = sum(len(windows[f]) for f in files)
    return 100 * (raw - base) / (perfect - base)


def per_file_scores(path: Path) -> dict[str, float]:
    with path.open() as f:
        return {
            r["File"]: float(r["Score"])
            for r in csv.DictReader(f)
            if r["File"] != "Totals" and r["File"]
        }


def nab_runner(nab: Path, out: Path, corpus: Path | None = None) -> Any:
    """NAB's own ``Runner`` over the results in ``out`` (with the null detector's results from
    NAB's, which normalisation needs, unless ``out`` has its own), initialised. Imports NAB from the
    checkout ``nab``; the data files and labels are ``corpus``'s (NAB's layout), else NAB's."""
    corpus = corpus or nab
    out.mkdir(parents=True, exist_ok=True)
    null_link = out / "null"
    if not null_link.exists():
        null_link.symlink_to(nab / "results" / "null")
    sys.path.insert(0, str(nab))
    from nab.runner import Runner  # type: ignore[import-not-found]

    thresholds_path = out / "thresholds.json"
    if not thresholds_path.exists():
        thresholds_path.write_text("{}")
    runner = Runner(
        dataDir=str(corpus / "data"),
        labelPath=str(corpus / "labels" / "combined_windows.json"),
        resultsDir=str(out),
        profilesPath=str(nab / "config" / "profiles.json"),
        thresholdPath=str(thresholds_path),
        numCPUs=1,
    )
    runner.initialize()
    return runner


def split(windows: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The tuning files and the held-out rest."""
    tuning = [f for f in windows if f.split("/")[0] in TUNING]
    return tuning, [f for f in windows if f not in tuning]


def nab_scores(
    runner: Any, out: Path, name: str, threshold: float, windows: dict[str, Any]
) -> dict[str, Any]:
    """Detector ``name``'s results files in ``out``, scored by NAB: per profile, with NAB's
    threshold optimisation and at ``threshold``, normalised on the tuning files, the
    held-out files and the corpus."""
    tuning, held_out = split(windows)
    optimised = runner.optimize([name])
    fixed = {name: {p: {"threshold": threshold, "score": 0.0} for p in PROFILES}}
    entry: dict[str, Any] = {}
    for label, thresholds in (("optimised", optimised), ("default", fixed)):
        runner.score([name], thresholds)
        for profile in PROFILES:
            mine = per_file_scores(out / name / f"{name}_{profile}_scores.csv")
            null = per_file_scores(out / "null" / f"null_{profile}_scores.csv")
            entry[f"{label}/{profile}"] = {
                "threshold": thresholds[name][profile]["threshold"],
                "tuning": round(normalised(mine, null, windows, tuning), 1),
                "held_out": round(normalised(mine, null, windows, held_out), 1),
                "corpus": round(normalised(mine, null, windows, list(windows)), 1),
            }
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nab", type=Path, required=True, help="a numenta/NAB checkout")
    parser.add_argument("--results", type=Path, help="results dir (default NAB/results-pushsvc)")
    parser.add_argument("--candidate", action="append", choices=sorted(CANDIDATES))
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    nab: Path = args.nab.resolve()
    out: Path = (args.results or nab / "results-pushsvc").resolve()
    runner = nab_runner(nab, out)
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    names = args.candidate or list(CANDIDATES)
    report: dict[str, Any] = {}
    for name in names:
        params = replace(CANDIDATES[name], threshold=args.threshold)
        points, seconds = write_results(nab, out, name, params)
        entry: dict[str, Any] = {"us_per_point": 1e6 * seconds / points, "params": repr(params)}
        entry.update(nab_scores(runner, out, name, args.threshold, windows))
        report[name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
    (out / "pushsvc_report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
