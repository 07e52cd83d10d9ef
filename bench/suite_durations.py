"""Compare two trees' test suites by per-test duration, joined by test name.

Run each tree's suite on its own core at the same time, then swap the cores, so both see the
same machine (a busy VM's speed swings ~2x over a day; two suites run one after the other
compare the machine, not the trees), and write JUnit XML:

    git worktree add /tmp/before <rev>; git worktree add /tmp/after <rev>
    (cd /tmp/before && PYTHONPATH=src taskset -c 0 python -m pytest -n 0 -p no:randomly \\
        --junitxml=r1.xml) & (cd /tmp/after && ... taskset -c 1 ... --junitxml=r1.xml); wait
    # then again with the cores swapped, into r2.xml

    python -m bench.suite_durations --before /tmp/before/r1.xml /tmp/before/r2.xml \\
        --after /tmp/after/r1.xml /tmp/after/r2.xml

Only the tests present and passing in every run count (a test module's name and the test's
name; folders moved between the trees). Prints each round's totals and ratio, both rounds
together, the geometric mean of per-test ratios (tests over 50 ms), and the largest moves.
"""

from __future__ import annotations

import argparse
import math
import statistics
import xml.etree.ElementTree as ET

Key = tuple[str, str]


def durations(path: str) -> dict[Key, tuple[float, bool]]:
    """(module, test) -> (seconds, passed) of one JUnit XML report."""
    found = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        passed = not any(child.tag in ("failure", "error", "skipped") for child in case)
        found[(module, case.get("name", ""))] = (float(case.get("time", "0")), passed)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", nargs="+", required=True, help="JUnit XML, one per round")
    parser.add_argument("--after", nargs="+", required=True, help="JUnit XML, one per round")
    args = parser.parse_args()
    if len(args.before) != len(args.after):
        parser.error("give as many --after reports as --before reports (one per round)")
    before = [durations(p) for p in args.before]
    after = [durations(p) for p in args.after]
    runs = before + after
    common = set.intersection(*(set(run) for run in runs))
    kept = sorted(k for k in common if all(run[k][1] for run in runs))
    print(f"tests: before {len(before[0])}, after {len(after[0])}; in both and passing in every")
    print(f"run: {len(kept)}")
    total_before = total_after = 0.0
    for index, (old, new) in enumerate(zip(before, after, strict=True), 1):
        b = sum(old[k][0] for k in kept)
        a = sum(new[k][0] for k in kept)
        total_before += b
        total_after += a
        print(f"round {index}: before {b:8.1f} s  after {a:8.1f} s  after/before {a / b:.3f}")
    print(
        f"all rounds: before {total_before:8.1f} s  after {total_after:8.1f} s  "
        f"after/before {total_after / total_before:.3f}"
    )
    ratios = []
    moves = []
    for key in kept:
        b = sum(run[key][0] for run in before)
        a = sum(run[key][0] for run in after)
        moves.append((a - b, key))
        if b > 0.05 * len(before):
            ratios.append(a / b)
    geomean = math.exp(statistics.mean(math.log(r) for r in ratios))
    print(f"per-test after/before, geometric mean over {len(ratios)} tests > 50 ms: {geomean:.3f}")
    moves.sort()
    for label, chosen in (("slower", moves[-5:][::-1]), ("faster", moves[:5])):
        print(f"most {label}:")
        for delta, (module, name) in chosen:
            print(f"  {delta:+7.2f} s  {module}::{name}")


if __name__ == "__main__":
    main()
