"""The server's CPU per single-event POST, on one keep-alive connection.

`pushsvc serve` (embedded broker, `--tick 0`) from a tree's `src/` is started fresh, given
`--warmup` POSTs, then `--posts` more, one at a time from one client on one keep-alive
connection, each a `{"value": 1.5}` answered 202. The figure is the server process's CPU
(user + system, from /proc/<pid>/stat) over those `--posts`, per POST, in µs, beside how
often it blocked per POST (voluntary context switches: its waits for the next request).

With `--before` another tree's `src/` runs too, the two taking turns in `--rounds` rounds (the
order swapped each round, so that a drift of the machine's load favours neither): each
round's figure, then each tree's median and their ratio.

    python -m bench.post_cost                                   # this tree, one round
    python -m bench.post_cost --before /tmp/post-before/src --rounds 4
    python -m bench.post_cost --src /tmp/post-4af/src --before /tmp/post-before/src --json
    python -m bench.post_cost --mercure --before /tmp/post-before/src --rounds 4
    python -m bench.post_cost --batch 1000 --posts 200 --before /tmp/post-before/src --rounds 4

`--batch N` posts a JSON array of N events instead, each `{"value": i, "ts": …, "tags":
{"dish": "noodles", "site": "s7"}}`, and the figure is per event: what the decoding and
checking of a producer's body costs shows there, beside the aggregation of each event.

`--message` posts the relay fan-out's publication instead (`bench.fanout --messages`): a
message whose data is the same 100 bytes of JSON, `{"type": "message", "data": {...}}`.

`--pace R` sends at most R POSTs a second instead of back to back: at the fan-out's 50 a
second every POST is the aggregator's only event when it wakes, and the process sleeps
between requests, as it does there.

`--callgrind` runs each server under `valgrind --tool=callgrind` and reports the
instructions (user space, the server's own) per POST instead of its CPU: the counters are
zeroed after the warm-up and dumped after the measured POSTs (`callgrind_control`), then once
more after as long again idle, which is taken off (the loop's timers; both figures are
given). Valgrind's start-up takes a minute or two; a hundred `--posts` suffice. Back to back,
the aggregator takes however many events arrived while it worked, which valgrind's pace and
the machine's load decide: the count moves with them by 5-8 %. With `--pace` (3 a second
leaves valgrind the time a POST and its aggregation take) every POST is the aggregator's only
event, as at the fan-out's 50 a second: the count with the idle span's agreed within 0.7 %
run to run, the idle span's own count less well on a loaded machine (10-22 M in 30 s).

    python -m bench.post_cost --message --callgrind --pace 3 --posts 90 --warmup 30 \
        --before /tmp/post-before/src
    python -m bench.post_cost --message --pace 50 --posts 3000 --rounds 6 \
        --before /tmp/post-before/src

`--floors` measures, in turns with the tree's server, the floor under its POST: gevent's
pywsgi answering 202 once it has read the body, bare and through a one-route Flask app
(`bench.peers.post_floor`), given the same requests.

    python -m bench.post_cost --message --pace 50 --posts 1000 --warmup 200 --rounds 3 --floors

`--mercure` measures a Mercure publication instead (`serve --mercure on`): a form body of one
topic and 100 bytes of data, with a publisher's HS256 token, answered 200, as Symfony's
component publishes.

Stand-alone on purpose: the server from any tree, the client from the standard library.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TextIO
from urllib.parse import urlencode

import jwt
from harness.procfs import cpu_seconds

from bench.loadgen.kinds import as_message, message_body
from bench.standalone import LISTENING, SRC, pushsvc_env, started

FLOORS = ("pywsgi", "flask")
"""The servers of `--floors` (`bench.peers.post_floor`), measured in place of a tree's."""
ROOT = Path(__file__).resolve().parents[1]

BODY = b'{"value": 1.5}'
HEADERS = {"Content-Type": "application/json"}
PATH = "/topics/bench.post/events"
MERCURE_KEY = "bench-mercure-key-of-at-least-32-bytes"


class Post(NamedTuple):
    """What each measured request sends, and the status that answers it."""

    path: str
    body: bytes
    headers: dict[str, str]
    status: int


def _message_post(batch: int = 0, *, message: bool = False) -> Post:
    if message:
        return Post(PATH, as_message(message_body(1, time.time())), HEADERS, 202)
    if not batch:
        return Post(PATH, BODY, HEADERS, 202)
    ts = int(time.time()) - 60
    events = [
        {"value": i * 0.5, "ts": ts + i / batch, "tags": {"dish": "noodles", "site": "s7"}}
        for i in range(batch)
    ]
    return Post(PATH, json.dumps(events).encode(), HEADERS, 202)


def _mercure_post() -> Post:
    claims = {"mercure": {"publish": ["*"]}, "exp": int(time.time()) + 3600}
    token = jwt.encode(claims, MERCURE_KEY, algorithm="HS256")
    form = urlencode({"topic": "https://example.com/books/1", "data": "x" * 100})
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": f"Bearer {token}",
    }
    return Post("/.well-known/mercure", form.encode(), headers, 200)


def _post_many(
    conn: http.client.HTTPConnection, count: int, post: Post, pace: float | None = None
) -> list[float]:
    """`count` POSTs one after the other (at most `pace` a second); each one's latency (s):
    sent to answer read."""
    latencies = []
    start = time.perf_counter()
    for number in range(count):
        if pace is not None:
            # Paced by the clock, not by sleeps of a fixed length: a slow answer is not
            # followed by a longer gap.
            time.sleep(max(0.0, start + number / pace - time.perf_counter()))
        sent = time.perf_counter()
        conn.request("POST", post.path, post.body, post.headers)
        answer = conn.getresponse()
        answer.read()
        latencies.append(time.perf_counter() - sent)
        if answer.status != post.status:
            raise RuntimeError(f"POST {post.path}: {answer.status}")
    return latencies


def _sleeps(pid: int) -> int:
    """How often the process has blocked so far (all its threads' voluntary context
    switches): the server's waits for its client's next request show here."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


def _callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def _instructions(dump: Path) -> int:
    """The instructions a callgrind dump counted (its `totals:` line)."""
    found = re.search(r"^totals:\s+(\d+)", dump.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {dump}")
    return int(found.group(1))


def measure_instructions(
    src: Path,
    posts: int,
    warmup: int,
    post: Post,
    argv: list[str],
    env: dict[str, str],
    pace: float | None,
) -> dict[str, object]:
    """One fresh server from `src` under callgrind: its instructions per POST over `posts`
    after `warmup`."""
    env = {**env, "PYTHONHASHSEED": "0"}  # the same dict and set layouts every run
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
        with started(grind, env, LISTENING, timeout=600) as (proc, found):
            conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=120)
            _post_many(conn, warmup, post, pace)
            _callgrind_control("-z", proc.pid)
            wall = time.perf_counter()
            _post_many(conn, posts, post, pace)
            wall = time.perf_counter() - wall
            _callgrind_control("-d", proc.pid)
            # The same time idle: what the process does whether or not anyone posts (its
            # timers), taken off. The wait is the measured span itself, not a wait for an event.
            time.sleep(wall)
            _callgrind_control("-d", proc.pid)
            conn.close()
            dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda dump: int(dump.suffix[1:]))
            if len(dumps) < 2:
                raise RuntimeError(f"callgrind wrote no dumps for {src}")
            posted, idle = _instructions(dumps[-2]), _instructions(dumps[-1])
    return {
        "src": str(src),
        "posts": posts,
        "instructions": posted,
        "idle_instructions": idle,
        "instructions_per_post": round((posted - idle) / posts),
        "instructions_per_post_with_idle": round(posted / posts),
    }


def measure(
    src: Path,
    posts: int,
    warmup: int,
    *,
    mercure: bool = False,
    batch: int = 0,
    message: bool = False,
    pace: float | None = None,
    callgrind: bool = False,
    floor: str | None = None,
) -> dict[str, object]:
    """One fresh server from `src` (or the `floor` server of `FLOORS`): its CPU per POST
    over `posts` after `warmup` (with `batch`, per event; with `callgrind`, its instructions
    instead)."""
    argv = [sys.executable, "-m", "pushsvc", "serve", "--port", "0", "--tick", "0"]
    env = pushsvc_env(src)
    if floor is not None:
        argv = [sys.executable, "-m", "bench.peers.post_floor", floor]
        env["PYTHONPATH"] = str(ROOT)
    if mercure:
        argv += ["--mercure", "on"]
        env["PUSHSVC_JWT_KEY"] = MERCURE_KEY
    post = _mercure_post() if mercure else _message_post(batch, message=message)
    if callgrind:
        return measure_instructions(src, posts, warmup, post, argv, env, pace)
    with started(argv, env, LISTENING) as (proc, found):
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=30)
        # Imports done lazily, caches filled, the topic made: not what a POST costs.
        _post_many(conn, warmup, post, pace)
        before, sleeps = cpu_seconds(proc.pid), _sleeps(proc.pid)
        wall = time.perf_counter()
        latencies = sorted(_post_many(conn, posts, post, pace))
        wall = time.perf_counter() - wall
        after, sleeps = cpu_seconds(proc.pid), _sleeps(proc.pid) - sleeps
        conn.close()
    if before is None or after is None:
        raise RuntimeError(f"the server from {src} ended during the run")
    return {
        "src": str(src),
        "posts": posts,
        "server_cpu_s": round(after - before, 3),
        "cpu_us_per_post": round((after - before) / posts / max(batch, 1) * 1e6, 2),
        "wall_us_per_post": round(wall / posts * 1e6, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        # A server that finishes a request before its client sends the next one sleeps in
        # epoll and wakes for it, which costs CPU too: a faster path can show more of it.
        "sleeps_per_post": round(sleeps / posts, 2),
    }


def run(
    trees: dict[str, Path],
    posts: int,
    warmup: int,
    rounds: int,
    out: TextIO,
    *,
    mercure: bool = False,
    batch: int = 0,
    message: bool = False,
    pace: float | None = None,
    callgrind: bool = False,
) -> dict[str, object]:
    """`rounds` rounds over `trees` (name: src), the order swapped every round; each
    round's line to `out` as it ends."""
    names = list(trees)
    figure = "instructions_per_post" if callgrind else "cpu_us_per_post"
    rows: list[dict[str, object]] = []
    for number in range(1, rounds + 1):
        for name in names if number % 2 else names[::-1]:
            measured = measure(
                trees[name], posts, warmup, mercure=mercure, batch=batch, message=message,
                pace=pace, callgrind=callgrind, floor=name if name in FLOORS else None,
            )  # fmt: skip
            row = {"round": number, "tree": name, **measured}
            rows.append(row)
            if callgrind:
                line = (
                    f"{row[figure]:>10} instructions/POST "
                    f"({row['instructions_per_post_with_idle']} with the idle span's)"
                )
            else:
                line = (
                    f"{row[figure]:>7} µs server CPU/{'event' if batch else 'POST'} "
                    f"({row['wall_us_per_post']} µs wall, {row['sleeps_per_post']} sleeps)"
                )
            where = "bench.peers.post_floor" if name in FLOORS else row["src"]
            print(f"round {number} {name:<7} {line}  {where}", file=out, flush=True)
    medians = {
        name: statistics.median(
            float(r[figure])  # type: ignore[arg-type]
            for r in rows
            if r["tree"] == name
        )
        for name in names
    }
    summary: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "posts": posts,
        "mercure": mercure,
        "batch": batch,
        "message": message,
        "pace": pace,
        "warmup": warmup,
        "rounds": rounds,
        "rows": rows,
        f"median_{figure}": medians,
    }
    if "before" in medians:
        summary["after_over_before"] = round(medians["after"] / medians["before"], 3)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--posts", type=int, default=10_000, help="measured, per round and tree")
    cli.add_argument("--warmup", type=int, default=500, help="POSTs before measuring")
    cli.add_argument("--rounds", type=int, default=1)
    cli.add_argument("--src", type=Path, default=SRC, help="the src/ measured ('after')")
    cli.add_argument("--before", type=Path, help="another src/, measured in turns with --src")
    cli.add_argument("--mercure", action="store_true", help="Mercure publications instead")
    cli.add_argument("--batch", type=int, default=0, help="events per POST; figures per event")
    cli.add_argument("--message", action="store_true", help="the relay fan-out's message")
    cli.add_argument("--pace", type=float, help="POSTs a second at most (else back to back)")
    cli.add_argument("--callgrind", action="store_true", help="instructions per POST instead")
    cli.add_argument("--floors", action="store_true", help="pywsgi and Flask alone, in turns")
    cli.add_argument("--json", action="store_true", help="one JSON line (rounds on stderr)")
    args = cli.parse_args(argv)
    trees = {"after": args.src} if args.before is None else {
        "before": args.before, "after": args.src
    }  # fmt: skip
    if args.floors:
        trees = {floor: args.src for floor in FLOORS} | trees
    out = sys.stderr if args.json else sys.stdout
    summary = run(
        trees, args.posts, args.warmup, args.rounds, out, mercure=args.mercure,
        batch=args.batch, message=args.message, pace=args.pace, callgrind=args.callgrind,
    )  # fmt: skip
    if args.json:
        print(json.dumps(summary))
        return
    figure = "instructions_per_post" if args.callgrind else "cpu_us_per_post"
    medians = summary[f"median_{figure}"]
    assert isinstance(medians, dict)
    for name, median in medians.items():
        unit = "instructions/POST" if args.callgrind else (
            "µs server CPU/event" if args.batch else "µs server CPU/POST"
        )  # fmt: skip
        where = "bench.peers.post_floor" if name in FLOORS else trees[name]
        print(f"median {name:<7} {median:>10.2f} {unit}  {where}")
    if "after_over_before" in summary:
        print(f"after / before: {summary['after_over_before']}")


if __name__ == "__main__":
    main()
