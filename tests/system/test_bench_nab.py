"""`bench/nab.py` on a tiny corpus in NAB's layout: the scores it reads back from a real
`pushsvc serve` are `pushsvc.series.anomaly`'s scores of those bucket values, exactly, and its
results files are NAB's. NAB's scorer runs too when `NAB_CHECKOUT` names a numenta/NAB
checkout (with its venv in .venv, as bench/README.md says); without one only that step is
left out. Timings are never asserted."""

from __future__ import annotations

import csv
import json
import math
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench import nab
from research.nab_offline import PROFILES

from pushsvc.series.anomaly import Detector, Params
from support.bench_run import json_rows, run_bench

ROWS = 600  # past the default `learn` (288 buckets), so that scores are not all 0
T0 = 1_396_310_400  # 2014-04-01T00:00:00Z, when NAB's artificial files start
FILES = {
    # category/file: (seconds between rows, offset of the first row, the spike's row, its size)
    "artificialWithAnomaly/spike_up.csv": (300, 0, 480, 60.0),
    # Twitter's files are at 5 minutes, 53 s past the bucket's start.
    "realTweets/dip_offset.csv": (300, 53, 500, -60.0),
    # Two rows a bucket: the server scores each bucket's mean.
    "realTweets/two_per_bucket.csv": (150, 0, 1000, 60.0),
}


def _stamp(seconds: int) -> str:
    """As NAB spells a time: naive, UTC."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _corpus(root: Path) -> Path:
    """Daily waves with noise and one spike each, and their labelled windows."""
    windows: dict[str, list[list[str]]] = {}
    rng = random.Random(7)
    for relative, (step, offset, spike, size) in FILES.items():
        rows = ROWS * 300 // step
        path = root / "data" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value"])
            for i in range(rows):
                seconds = T0 + offset + i * step
                wave = 50 + 20 * math.sin(2 * math.pi * (seconds - T0) / 86_400)
                value = wave + rng.gauss(0, 1) + (size if i == spike else 0.0)
                writer.writerow([_stamp(seconds), round(value, 4)])
        at = T0 + offset + spike * step
        windows[relative] = [[f"{_stamp(at - 3600)}.000000", f"{_stamp(at + 3600)}.000000"]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return root


def _params() -> Params:
    """What the server scores with: the rule names the module's default learn and threshold."""
    default = Params()
    return Params(learn=default.learn, threshold=default.threshold)


def test_read_back_scores_are_the_detector_modules_and_results_are_nabs(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    files = nab.load_corpus(corpus)
    results, _ = nab.through_http(files, nab.defaults(), tmp_path / "rules.toml", batch=250)
    windows = json.loads((corpus / "labels" / "combined_windows.json").read_text())
    for result in results:
        file = result.file
        buckets = sorted(set(file.buckets))
        assert [int(p["t"]) for p in result.points] == buckets
        detector = Detector(_params())
        assert [p["anomaly"] for p in result.points] == [
            detector.score(p["mean"]) for p in result.points
        ]
        assert [p["anomalous"] for p in result.points] == [
            p["anomaly"] >= _params().threshold for p in result.points
        ]
        if len(buckets) == len(file.values):
            # A bucket per row: the server scores the file's own values, as offline.
            offline = Detector(_params())
            assert result.row_scores == [offline.score(v) for v in file.values]
            # Not vacuous: the spike is flagged.
            assert max(result.row_scores) >= _params().threshold
        assert result.mismatch_buckets == 0
        target = nab.write_results(tmp_path / "results", result, windows[file.relative])
        category, name = file.relative.split("/")
        assert target == tmp_path / "results" / nab.NAME / category / f"{nab.NAME}_{name}"
        with target.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "label"]
        assert [r["timestamp"] for r in rows] == file.timestamps
        assert sum(int(r["label"]) for r in rows) > 0


def test_the_bench_runs_whole_and_scores_with_nab_when_it_has_a_checkout(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "results"
    checkout = os.environ.get("NAB_CHECKOUT")
    args = ["--corpus", str(corpus), "--results", str(out), "--json"]
    if checkout:
        args += ["--nab", checkout]
    done = run_bench("nab", *args, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = json_rows(done)
    assert summary["files"] == 3
    assert summary["mismatch_buckets"] == summary["mismatch_offline"] == 0
    assert summary["files_one_row_per_bucket"] == 2
    assert summary["points"] == 3 * ROWS  # two rows a bucket in the third file
    assert len(list((out / nab.NAME).glob("*/*.csv"))) == 3  # category/detector_file.csv
    if not checkout:
        pytest.skip("NAB's scorer: no NAB_CHECKOUT (the rest ran)")
    scores = summary["scores"]
    assert set(scores) == {f"{k}/{p}" for k in ("optimised", "default") for p in PROFILES}
    assert all(set(s) == {"threshold", "tuning", "held_out", "corpus"} for s in scores.values())
