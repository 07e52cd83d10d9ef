"""What the Python client pays to decode one `stats` message into a `StreamUpdate`.

One update of three windows with a distinct count and a top list, decoded by
`pushsvc.client.models.typed_message` as a subscription does; the minimum of 7 repeats of
20,000 decodes. With `--before`, another tree's `src/` is measured too, the two taking turns:

    python -m bench.client_decode
    python -m bench.client_decode --before /tmp/before/src --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import timeit
from pathlib import Path

import orjson

DECODES = 20_000
WINDOW = {
    "count": 20,
    "sum": 139.0,
    "mean": 6.95,
    "min": 0.0,
    "max": 14.0,
    "p50": 6.0,
    "p90": 14.1,
    "p99": 14.9,
    "distinct_user": 5,
    "top_product": [{"value": "p0", "count": 5}, {"value": "p1", "count": 5}],
}
UPDATE = orjson.dumps(
    {
        "id": "b2a407b0:1795895884114-41",
        "topic": "shop.a",
        "ts": 1763700114.0,
        "reason": "event",
        "event": {"value": 13.0, "ts": 1763700114.0, "tags": {"user": "u3", "product": "p2"}},
        "windows": {label: WINDOW for label in ("10s", "1m", "5m")},
    }
)


def measure() -> float:
    """µs per decoded update, in this process (whatever `pushsvc` it imports)."""
    from pushsvc.client.models import typed_message

    best = min(
        timeit.repeat(lambda: typed_message("stats", None, UPDATE), number=DECODES, repeat=7)
    )
    return best / DECODES * 1e6


def _in(src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{Path(__file__).parents[1]}"}
    code = "from bench.client_decode import measure; print(measure())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).parents[1] / "src")
    parser.add_argument("--before", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = [("after", args.src)] + ([("before", args.before)] if args.before else [])
    for round_ in range(1, args.rounds + 1):
        for name, src in trees if round_ % 2 else trees[::-1]:
            print(f"round {round_} {name:6} {_in(src):5.2f} µs/update ({len(UPDATE)} B)  {src}")


if __name__ == "__main__":
    main()
