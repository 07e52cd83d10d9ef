"""The Numenta Anomaly Benchmark through pushsvc's HTTP API: what a rule's `anomaly` gives.

Every NAB data file is posted to a `pushsvc serve` (the embedded broker) as events of one
topic, `POST /topics/nab.<category>.<file>/events` in NDJSON batches, each row's timestamp
(UTC) its event time; the rule scores the `5m` tier's means (`every = "5m"`, the corpus'
interval) with the detector's defaults (`learn` and `threshold` of
`pushsvc.series.anomaly.Params()`, whatever they are when this runs). The scores are read back
from `GET /topics/{topic}/series?resolution=5m` over the file's range, written as NAB's results
files (results/<detector>/<category>/<detector>_<file>.csv: timestamp, value, anomaly_score,
label) and scored by NAB's own scorer (its threshold optimisation per profile, and at the
rule's threshold), through `research/nab_offline.py`'s functions, from a checkout of numenta/NAB
(never copied here):

    .venv/bin/python -m bench.nab --nab /work/nab                # the whole corpus
    .venv/bin/python -m bench.nab --nab /work/nab --only realKnownCause/nyc_taxi.csv
    .venv/bin/python -m bench.nab --corpus DIR --results OUT     # no scorer: a corpus only

It prints, per NAB profile, the normalised score with NAB's threshold optimisation and at the
default threshold, on the tuning files (artificial*, realKnownCause, realAWSCloudwatch), the
held-out rest and the whole corpus; the wall-clock µs per point end to end (posting, closing,
reading back) and the server's CPU µs per point; and two mismatch counts, which must be 0:

* `mismatch_buckets`: read-back scores that differ from `pushsvc.series.anomaly`'s scores of
  the read-back bucket means, in order (every file);
* `mismatch_offline`: read-back scores that differ from research/nab_offline.py's scores of the
  file's values (the files where every row has a bucket of its own: there a bucket's mean is
  the row's value, so the server must score exactly what the offline runner scores).

What the server is told, and why:

* `--tick 0`: an idle tick moves a topic's clock by the wall time since its last event; the
  clock must be the file's timestamps alone.
* `--grace 1h`: machine_temperature_system_failure repeats an hour (02:00 to 02:55 on
  2014-01-07, 55 minutes behind its clock); with the default 5 s those 12 rows would go to the
  topic's late stream. Within the grace they land in their (still open) buckets.
* No `--max-future`: it bounds event times ahead of the server's clock only; 2011 to 2015 are
  accepted as they are (event times may go back to the year 1).
* `series = ["5m:400d"]` in the rule: a tier keeps `retention` back from the topic's clock;
  the longest file (ambient_temperature_system_failure) spans 328 days.
* `--topic-ttl 0`: a topic is never forgotten while the run goes on.
* The last buckets close only once the topic's clock passes their end plus the lateness: after
  a file, one more event (its last value, a lateness and 5 minutes after its last bucket) closes
  them; it opens a bucket after the file's range, which is never read.

Files that are not at 5-minute spacing (realAdExchange hourly, nyc_taxi 30 min,
ambient_temperature hourly, realTraffic irregular, a few AWS files with repeated timestamps):
a bucket with no event makes no point and is not scored, so an hourly file is scored point by
point as the offline runner scores it (`learn` then counts hourly points, as it does offline).
Where several rows share a bucket, the bucket's mean is scored once, when the bucket closes, and
each row gets its bucket's score (NAB needs a score per row): a row early in a bucket thus
shares a score that saw the rest of its bucket, and the rows of a flagged bucket are all flagged.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from research.nab_offline import PROFILES, nab_runner, nab_scores, run_detector

from pushsvc.series.anomaly import Detector, Params

# Only the standard library, pushsvc's pure detector and research.nab_offline at the top: NAB's
# scorer runs this module in NAB's own environment (pandas < 3, none of pushsvc's dependencies),
# `--score-only`. The server side (harness.live, bench.common) is imported where it is used.

NAME = "pushsvcHTTP"  # NAB's detector name: its file names allow no "_" in it
EVERY_S = 300
LATENESS = "1h"
LATENESS_S = 3600
RETENTION = "400d"
BATCH = 1000
REPO = Path(__file__).resolve().parents[1]
NULL_SCORE = 0.5  # NAB's null detector scores every row 0.5: the floor normalisation starts at


def defaults() -> Params:
    """The detector module's defaults, read when the bench runs: the rules file spells out their
    `learn` and `threshold` (the server builds the rest of `Params` from its defaults too)."""
    return Params()


def rules_text(params: Params, scored: bool = True) -> str:
    """The rules file: `learn` and `threshold` spelled out from `params` (the module's
    defaults), so that a change of the defaults is what this measures; without `scored`, the
    same rule without `anomaly` (`--plain`: what the scoring costs)."""
    learn = f"{params.learn * EVERY_S // 60}m"
    anomaly = f'every = "5m", stat = "mean", learn = "{learn}", threshold = {params.threshold!r}'
    return f"""
[[rule]]
topics = ["nab.*"]
windows = ["5m"]
stats = ["count", "mean"]
series = ["5m:{RETENTION}"]
{f"anomaly = {{ {anomaly} }}" if scored else ""}
"""


@dataclass(frozen=True, slots=True)
class NabFile:
    """One data file: its path in the corpus (`category/file.csv`) and its rows."""

    relative: str
    timestamps: list[str]
    """As the file spells them: NAB's results files repeat them."""
    seconds: list[int]
    values: list[float]

    @property
    def topic(self) -> str:
        return "nab." + self.relative.removesuffix(".csv").replace("/", ".")

    @property
    def buckets(self) -> list[int]:
        """Each row's 5-minute bucket (its start, epoch seconds)."""
        return [s - s % EVERY_S for s in self.seconds]


def epoch_seconds(timestamp: str) -> int:
    """NAB's naive `2014-04-01 00:00:00` as UTC epoch seconds (its timestamps are whole)."""
    return int(datetime.fromisoformat(timestamp).replace(tzinfo=UTC).timestamp())


def load_corpus(corpus: Path, only: Sequence[str] = ()) -> list[NabFile]:
    """The files the labels name (NAB's `labels/combined_windows.json`), sorted."""
    windows = json.loads((corpus / "labels" / "combined_windows.json").read_text())
    files = []
    for relative in sorted(windows):
        if only and relative not in only:
            continue
        with (corpus / "data" / relative).open(newline="") as f:
            rows = list(csv.DictReader(f))
        stamps = [r["timestamp"] for r in rows]
        files.append(
            NabFile(
                relative,
                stamps,
                [epoch_seconds(t) for t in stamps],
                [float(r["value"]) for r in rows],
            )
        )
    return files


def start_server(rules: Path) -> Any:
    from harness.live import PushsvcProcess

    return PushsvcProcess(
        "serve",
        "--tick", "0",
        "--grace", LATENESS,
        "--topic-ttl", "0",
        "--rules", str(rules),
    ).start()  # fmt: skip


def _post(port: int, topic: str, lines: list[str]) -> None:
    from harness.live import request

    status, _, body = request(
        port,
        "POST",
        f"/topics/{topic}/events",
        "\n".join(lines).encode(),
        content_type="application/x-ndjson",
    )
    if status != 202:
        raise RuntimeError(f"POST {topic}: {status} {body[:300]!r}")


def post_file(port: int, file: NabFile, batch: int = BATCH) -> None:
    """The file's rows as events, in file order, then the event that closes its last buckets."""
    lines = [
        json.dumps({"value": v, "ts": s}) for s, v in zip(file.seconds, file.values, strict=True)
    ]
    for start in range(0, len(lines), batch):
        _post(port, file.topic, lines[start : start + batch])
    last = max(file.buckets)
    closer = last + EVERY_S + LATENESS_S + EVERY_S
    _post(port, file.topic, [json.dumps({"value": file.values[-1], "ts": closer})])


def read_points(port: int, file: NabFile, timeout: float = 120) -> list[dict[str, Any]]:
    """The file's closed 5m buckets from `GET /series`, once all of them have closed (the
    aggregator applies posted events after the 202; buckets close in order, so the last one
    is the one to wait for, asked alone: polling the whole range would serialise thousands
    of points per poll and count that as the server's cost)."""
    from harness.live import request, wait_until

    first, last = min(file.buckets), max(file.buckets)
    series = f"/topics/{file.topic}/series?resolution=5m&format=json"

    def last_closed() -> bool:
        status, _, body = request(port, "GET", f"{series}&since={last}&until={last + EVERY_S}")
        return status == 200 and bool(json.loads(body)["points"])

    wait_until(last_closed, timeout, 0.05, what=f"{file.topic}'s last bucket closed")
    status, _, body = request(
        port, "GET", f"{series}&since={first}&until={last + EVERY_S}&limit=100000"
    )
    answer = json.loads(body)
    points: list[dict[str, Any]] = answer["points"]
    want = len(set(file.buckets))
    if status != 200 or answer["more"] or len(points) != want:
        raise RuntimeError(f"{file.topic}: {status}, {len(points)} points of {want}")
    return points


@dataclass(frozen=True, slots=True)
class FileResult:
    file: NabFile
    points: list[dict[str, Any]]
    row_scores: list[float]
    mismatch_buckets: int
    mismatch_offline: int | None
    """None: some bucket holds more than one row."""


def check(file: NabFile, points: list[dict[str, Any]], params: Params) -> FileResult:
    """Each row's score (its bucket's) and the agreement with the detector module."""
    read = [float(p["anomaly"]) for p in points]
    detector = Detector(params)  # what the server must have given the bucket means
    expected = [detector.score(float(p["mean"])) for p in points]
    mismatch_buckets = sum(a != b for a, b in zip(read, expected, strict=True))
    by_bucket = {int(p["t"]): float(p["anomaly"]) for p in points}
    row_scores = [by_bucket[b] for b in file.buckets]
    mismatch_offline = None
    if len(points) == len(file.values):
        offline, _ = run_detector(params, file.values)
        mismatch_offline = sum(a != b for a, b in zip(row_scores, offline, strict=True))
    return FileResult(file, points, row_scores, mismatch_buckets, mismatch_offline)


def labels(file: NabFile, windows: list[list[str]]) -> list[int]:
    """1 inside a labelled window (NAB's scorer reads the windows, not this column)."""
    spans = [(epoch_seconds(a[:19]), epoch_seconds(b[:19])) for a, b in windows]
    return [int(any(a <= s <= b for a, b in spans)) for s in file.seconds]


def write_results(out: Path, result: FileResult, windows: list[list[str]]) -> Path:
    """NAB's results file of one data file."""
    scores = result.row_scores
    return _write(out, NAME, result.file, scores, labels(result.file, windows))


def _write(
    out: Path, detector: str, file: NabFile, scores: Sequence[float], labels: Sequence[int]
) -> Path:
    category, filename = file.relative.split("/")
    target = out / detector / category / f"{detector}_{filename}"
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = zip(file.timestamps, file.values, scores, labels, strict=True)
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "value", "anomaly_score", "label"])
        # Six decimals, as research/nab_offline.py writes them: the same scores, the same figures.
        for stamp, value, score, label in rows:
            writer.writerow([stamp, repr(value), f"{score:.6f}", label])
    return target


def through_http(
    files: list[NabFile], params: Params, rules: Path, batch: int = BATCH, scored: bool = True
) -> tuple[list[FileResult], dict[str, Any]]:
    """Post every file to one fresh server, read its scores back and check them; with the
    wall-clock and server CPU seconds of it all. Without `scored`, the rule has no `anomaly`
    and the points are read back unchecked (no results)."""
    from bench.common import CpuMeter

    rules.write_text(rules_text(params, scored))
    server = start_server(rules)
    try:
        meter = CpuMeter({"server": server.pid}).start()
        results = []
        for file in files:
            post_file(server.port, file, batch)
            points = read_points(server.port, file)
            if not scored:
                continue
            result = check(file, points, params)
            results.append(result)
            print(
                f"{file.relative}: {len(file.values)} rows, {len(result.points)} points, "
                f"mismatch {result.mismatch_buckets}/{result.mismatch_offline}",
                file=sys.stderr,
                flush=True,
            )
        used = meter.stop()
    finally:
        server.stop()
    return results, used


def nab_python(nab: Path) -> str:
    """NAB's own environment where it has one (its scorer needs pandas < 3)."""
    venv = nab / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def score_with_nab(
    nab: Path, corpus: Path, out: Path, threshold: float, python: str
) -> dict[str, Any]:
    """NAB's scorer over the results in `out`, in `python` (this module, `--score-only`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run(
        [python, "-m", "bench.nab", "--score-only", "--nab", str(nab), "--corpus", str(corpus),
         "--results", str(out), "--threshold", repr(threshold)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"NAB's scorer failed:\n{done.stderr[-3000:]}")
    scores: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return scores


def _score_only(nab: Path, corpus: Path, out: Path, threshold: float) -> None:
    windows = json.loads((corpus / "labels" / "combined_windows.json").read_text())
    if corpus != nab:
        # NAB's null detector's results are NAB's corpus': another corpus gets its own, from
        # that detector's one constant, scored by NAB like any detector.
        for file in load_corpus(corpus):
            _write(out, "null", file, [NULL_SCORE] * len(file.values), [0] * len(file.values))
    runner = nab_runner(nab, out, corpus)
    if corpus != nab:
        runner.score(["null"], runner.optimize(["null"]))
    print(json.dumps(nab_scores(runner, out, NAME, threshold, windows)))


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "| profile | optimised: tuning | held-out | corpus | at the default: tuning | held-out "
        "| corpus |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for profile in PROFILES:
        opt, fix = (
            summary["scores"][f"optimised/{profile}"],
            summary["scores"][f"default/{profile}"],
        )
        lines.append(
            f"| {profile} | {opt['tuning']} | {opt['held_out']} | {opt['corpus']} "
            f"| {fix['tuning']} | {fix['held_out']} | {fix['corpus']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.score_only:
        nab = args.nab.resolve()
        _score_only(nab, (args.corpus or nab).resolve(), args.results.resolve(), args.threshold)
        return 0
    if args.nab is None and args.corpus is None:
        raise SystemExit("give --nab (a numenta/NAB checkout) or --corpus (NAB's layout)")
    corpus: Path = (args.corpus or args.nab).resolve()
    out: Path = (args.results or corpus / "results-pushsvc-http").resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = defaults()
    windows = json.loads((corpus / "labels" / "combined_windows.json").read_text())
    files = load_corpus(corpus, args.only or ())
    rows = sum(len(f.values) for f in files)
    if args.plain:
        _, used = through_http(files, params, out / "rules-plain.toml", args.batch, False)
        plain = {
            "rule": "without anomaly",
            "rows": rows,
            "wall_us_per_point": round(used["wall_s"] / rows * 1e6, 1),
            "server_cpu_us_per_point": round(used["cpu_s"]["server"] / rows * 1e6, 1),
        }
        print(json.dumps(plain))
        return 0
    results, used = through_http(files, params, out / "rules.toml", args.batch)
    for result in results:
        write_results(out, result, windows[result.file.relative])
    one_per_bucket = [r for r in results if r.mismatch_offline is not None]
    summary: dict[str, Any] = {
        "detector": NAME,
        "params": {"learn": params.learn, "threshold": params.threshold},
        "files": len(files),
        "rows": rows,
        "points": sum(len(r.points) for r in results),
        "mismatch_buckets": sum(r.mismatch_buckets for r in results),
        "files_one_row_per_bucket": len(one_per_bucket),
        "mismatch_offline": sum(r.mismatch_offline or 0 for r in one_per_bucket),
        "wall_us_per_point": round(used["wall_s"] / rows * 1e6, 1),
        "server_cpu_us_per_point": round(used["cpu_s"]["server"] / rows * 1e6, 1),
        "results": str(out),
    }
    if args.nab is not None and not args.no_score:
        if len(files) != len(windows):
            # NAB's scorer reads every file its labels name.
            print("--only: NAB's scorer needs every file; not scored", file=sys.stderr)
        else:
            python = args.nab_python or nab_python(args.nab.resolve())
            summary["scores"] = score_with_nab(
                args.nab.resolve(), corpus, out, params.threshold, python
            )
    ok = summary["mismatch_buckets"] == 0 and summary["mismatch_offline"] == 0
    (out / "pushsvc_http_report.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
    else:
        print(json.dumps({k: v for k, v in summary.items() if k != "scores"}, indent=1))
        if "scores" in summary:
            print(_table(summary))
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    from_doc = (__doc__ or "").split("\n\n")[0]
    out = argparse.ArgumentParser(description=from_doc)
    out.add_argument("--nab", type=Path, help="a numenta/NAB checkout: its corpus and scorer")
    out.add_argument("--corpus", type=Path, help="data/ and labels/ in NAB's layout (else --nab)")
    out.add_argument(
        "--results", type=Path, help="results dir (default CORPUS/results-pushsvc-http)"
    )
    out.add_argument("--only", action="append", help="category/file.csv (repeatable)")
    out.add_argument("--batch", type=int, default=BATCH, help="events per POST")
    out.add_argument("--no-score", action="store_true", help="leave NAB's scorer out")
    out.add_argument(
        "--plain", action="store_true", help="the same rule without anomaly: its cost only"
    )
    out.add_argument("--nab-python", help="the Python with NAB's dependencies (default NAB/.venv)")
    out.add_argument("--json", action="store_true", help="the summary as one JSON line")
    out.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)
    out.add_argument(
        "--threshold", type=float, default=defaults().threshold, help=argparse.SUPPRESS
    )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
