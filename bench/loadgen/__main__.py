"""`python -m bench.loadgen` (with bench/ on PYTHONPATH): one run, JSON lines on stdout.

Prints `{"phase": "opened", ...}` once every subscriber is live (or failed). With `--publish`
it then publishes the events itself — after `--wait-go` reads a line on stdin, or `--settle`
seconds — else the driver publishes and writes a line on stdin when it is done (or closes
it). The drain ends when every subscriber has every update, after `--idle-timeout` without
one, or at `--drain-timeout`; then `{"phase": "drained", ...}` (times and counts, at once) and
`{"phase": "result", ...}` (every stream judged).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from bench.loadgen.kinds import KINDS, PAYLOADS
from bench.loadgen.process import emit, raise_fd_limit, run
from bench.loadgen.run import RunConfig, execute


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    rate = float(text)
    if rate <= 0:
        raise argparse.ArgumentTypeError("a rate is > 0 events/s, or 'max'")
    return rate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", choices=sorted(KINDS), default="pushsvc")
    parser.add_argument(
        "--mode", choices=("deliveries", "json", "ids"), default="deliveries",
        help="what a subscriber does per message (loadgen/modes.py); ids: pushsvc only",
    )  # fmt: skip
    parser.add_argument(
        "--stream", action="append", required=True, metavar="URL", dest="stream_urls",
        help="SSE URL; repeat to spread subscribers round-robin over several",
    )  # fmt: skip
    parser.add_argument(
        "--publish", metavar="URL", dest="publish_url", help="publish the events to this POST URL"
    )
    parser.add_argument(
        "--publish-header", action="append", default=[], metavar="'NAME: VALUE'",
        dest="publish_headers", help="a header line sent with every publication; repeatable",
    )  # fmt: skip
    parser.add_argument("--subscribers", "-n", type=int, required=True)
    parser.add_argument(
        "--events", "-m", type=int, required=True, help="updates every subscriber should receive"
    )
    parser.add_argument(
        "--reference", type=int, default=1, dest="references",
        help="ids: how many subscribers also check event values (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--payload", choices=sorted(PAYLOADS), default="plain",
        help="plain: the event; stats: the event and three windows of statistics, as large "
        "as a pushsvc update (to publish to a peer)",
    )  # fmt: skip
    parser.add_argument("--rate", "-r", type=_rate, default=None, help="events/s, or max")
    parser.add_argument(
        "--source", metavar="ADDRESS",
        help="connect the streams from this local address (e.g. 127.0.0.2)",
    )  # fmt: skip
    parser.add_argument("--http10", action="store_true", help="HTTP/1.0 streams (no chunking)")
    parser.add_argument(
        "--gzip", action="store_true",
        help="offer gzip (Accept-Encoding), as browsers and httpx do; decode what comes gzipped",
    )  # fmt: skip
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--publish-timeout", type=float, default=None)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--wait-go", action="store_true", help="publish after a line on stdin")
    parser.add_argument(
        "--hold", action="store_true",
        help="after the drained record, keep the streams open until a line on stdin",
    )  # fmt: skip
    parser.add_argument(
        "--settle", type=float, default=0.0, help="seconds between connect and publish"
    )
    parser.add_argument(
        "--quickack", action="store_true",
        help="publisher sets TCP_QUICKACK before each response (see README: Nagle)",
    )  # fmt: skip
    parser.add_argument(
        "--persist", action="store_true",
        help="publisher posts each event until accepted, under an Idempotency-Key "
        "(through a restart of the server)",
    )  # fmt: skip
    parser.add_argument("--no-uvloop", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "ids" and args.kind not in ("pushsvc", "pushsvc-messages"):
        raise SystemExit("--mode ids reads pushsvc update ids: --kind pushsvc(-messages) only")
    raise_fd_limit()
    options = vars(args)
    config = RunConfig(**{
        **{f.name: options[f.name] for f in fields(RunConfig) if f.name in options},
        "kind": KINDS[args.kind],
        "stream_urls": tuple(args.stream_urls),
        "publish_headers": tuple(args.publish_headers),
        "references": min(args.references, args.subscribers),
    })  # fmt: skip
    run(
        execute(config, emit, wait_go=args.wait_go, settle=args.settle, hold=args.hold),
        uvloop_allowed=not args.no_uvloop,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
