"""`python -m loadgen` (with bench/ on PYTHONPATH): one fan-out run, JSON lines on stdout.

Prints `{"phase": "opened", ...}` once the subscribers are connected, then, after
`--wait-go` reads a line on stdin (or `--settle` seconds pass), publishes, drains and
prints `{"phase": "result", ...}`.
"""

from __future__ import annotations

import argparse
import sys

from loadgen.kinds import KINDS
from loadgen.process import emit, raise_fd_limit, run
from loadgen.run import RunConfig, execute


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    rate = float(text)
    if rate <= 0:
        raise argparse.ArgumentTypeError("a rate is > 0 events/s, or 'max'")
    return rate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadgen", description=__doc__)
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument(
        "--stream", action="append", required=True, metavar="URL",
        help="SSE URL; repeat to spread subscribers round-robin over several",
    )  # fmt: skip
    parser.add_argument("--publish", required=True, metavar="URL", help="the POST URL")
    parser.add_argument("--subscribers", "-n", type=int, required=True)
    parser.add_argument("--events", "-m", type=int, required=True)
    parser.add_argument("--rate", "-r", type=_rate, default=None, help="events/s, or max")
    parser.add_argument("--http10", action="store_true", help="HTTP/1.0 streams (no chunking)")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--publish-timeout", type=float, default=None)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--wait-go", action="store_true", help="publish after a line on stdin")
    parser.add_argument(
        "--settle", type=float, default=0.0, help="seconds between connect and publish"
    )
    parser.add_argument(
        "--quickack", action="store_true",
        help="publisher sets TCP_QUICKACK before each response (see README: Nagle)",
    )  # fmt: skip
    parser.add_argument("--no-uvloop", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raise_fd_limit()
    config = RunConfig(
        kind=KINDS[args.kind],
        stream_urls=tuple(args.stream),
        publish_url=args.publish,
        subscribers=args.subscribers,
        events=args.events,
        rate=args.rate,
        http10=args.http10,
        quickack=args.quickack,
        connect_timeout=args.connect_timeout,
        publish_timeout=args.publish_timeout,
        drain_timeout=args.drain_timeout,
        idle_timeout=args.idle_timeout,
    )

    run(
        execute(config, emit, wait_go=args.wait_go, settle=args.settle),
        uvloop_allowed=not args.no_uvloop,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
