"""Where an idle SSE stream's bytes go, inside the server: a breakdown per stream.

Starts `pushsvc serve --tick 0 --heartbeat 600s` (or `web` on a Redis URL with `--redis-url`)
in a child process that traces its allocations (`tracemalloc`, `--depth` frames), opens
`--warm` streams (so that imports, caches and first-use allocations are in before the
count), asks the child for a snapshot (SIGUSR1), opens `--streams` more, asks again, and
prints, per stream:

* the child's RSS and its anonymous memory (/proc/PID/smaps_rollup) before and after;
* what tracemalloc saw allocated and not freed, by category: each allocation is put under
  the first frame of its traceback, innermost first, that a category names (the greenlet
  and its saved C stack, pywsgi's handler and its buffered reader, the WSGI environ, Flask
  and Werkzeug, the stream's generators, the hub's objects, the peer watch, ...);
* the top allocation sites (innermost frame);
* the live objects that grew, by type (`gc`), with their count per stream.

What tracemalloc does not see — the kernel's socket buffers (not RSS) and memory the
allocators hold but no object uses — shows as RSS over the traced bytes.

    python -m bench.stream_memory --streams 2000
    python -m bench.stream_memory --streams 2000 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import collections
import gc
import os
import pickle
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT_ENV = "STREAM_MEMORY_DUMP"

# (category, a piece of a frame's filename[, a function name]): the first that matches a
# frame, walking each traceback from its innermost frame out, names the allocation.
CATEGORIES: list[tuple[str, str, str | None]] = [
    ("peer watch", "deliver/peer_watch.py", None),
    ("hub: Subscriber, queue, DirectWay", "deliver/hub.py", None),
    ("hub: ConflatingQueue", "deliver/conflating_queue.py", None),
    ("live stream (LiveStream)", "deliver/live_stream.py", None),
    ("live stream (LiveStream)", "deliver/parked_stream.py", None),  # trees before it
    ("stream writes (StreamSocket, ServerWrites)", "deliver/stream_writes.py", None),
    ("stream writes (StreamSocket, ServerWrites)", "deliver/stream_socket.py", None),
    ("stream writes (StreamSocket, ServerWrites)", "deliver/server_writes.py", None),
    ("subscription (primed head)", "deliver/subscription.py", None),
    ("rendering", "deliver/rendering.py", None),
    ("stream generators (events)", "deliver/stream_response.py", None),
    ("stream generators (events)", "deliver/stream_loop.py", None),  # trees before it
    ("stream view (StreamRequest, matcher)", "http/api/streams.py", None),
    ("access gate, token", "security/", None),
    ("broker feed watch", "broker/", None),
    ("Werkzeug/Flask response", "werkzeug/wrappers/response.py", None),
    ("Werkzeug/Flask request", "werkzeug/wrappers/request.py", None),
    ("Werkzeug/Flask request", "werkzeug/sansio/request.py", None),
    ("Werkzeug datastructures (headers, args)", "werkzeug/datastructures", None),
    ("Werkzeug routing", "werkzeug/routing", None),
    ("Flask app/request context", "flask/", None),
    ("pushsvc app (middleware, limits)", "pushsvc/", None),
    ("pywsgi environ", "gevent/pywsgi.py", "get_environ"),
    ("pywsgi request head", "gevent/pywsgi.py", "read_request"),
    ("pywsgi request head", "gevent/pywsgi.py", "read_requestline"),
    ("pywsgi handler + rfile", "gevent/pywsgi.py", None),
    ("gevent socket", "gevent/_socket3.py", None),
    ("gevent socket", "gevent/_socketcommon.py", None),
    ("gevent server (accept, spawn)", "gevent/server.py", None),
    ("gevent server (accept, spawn)", "gevent/baseserver.py", None),
    ("gevent pool/greenlet", "gevent/pool.py", None),
    ("gevent pool/greenlet", "gevent/greenlet.py", None),
    ("gevent other", "gevent/", None),
]


def _category(traceback: tracemalloc.Traceback) -> str:
    for frame in reversed(traceback):  # innermost first (tracemalloc's order is oldest first)
        name = frame.filename.replace("\\", "/")
        for category, piece, _function in CATEGORIES:
            if piece in name:
                return category
    return f"other ({traceback[-1].filename.rsplit('/', 1)[-1]}:{traceback[-1].lineno})"


def _anonymous_kb() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("Rss:", "Anonymous:", "Private_Dirty:"):
            fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def _types() -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts


def _dump(_signum: int, _frame: Any) -> None:
    path = os.environ[SNAPSHOT_ENV]
    gc.collect()
    state = {
        "snapshot": tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None,
        "types": _types(),
        "smaps": _anonymous_kb(),
    }
    with open(path + ".tmp", "wb") as out:
        pickle.dump(state, out)
    os.replace(path + ".tmp", path)


def child(argv: list[str]) -> None:
    """`pushsvc <argv>`, traced, dumping its state to $STREAM_MEMORY_DUMP on SIGUSR1."""
    depth = int(os.environ.get("STREAM_MEMORY_DEPTH", "30"))
    if depth:
        tracemalloc.start(depth)
    signal.signal(signal.SIGUSR1, _dump)
    sys.argv = ["pushsvc", *argv]
    from pushsvc.__main__ import main as pushsvc

    pushsvc()


def _snapshot_of(pid: int, path: Path, timeout: float = 120) -> dict[str, Any]:
    if path.exists():
        path.unlink()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the server wrote no snapshot")
        time.sleep(0.05)
    with path.open("rb") as data:
        state: dict[str, Any] = pickle.load(data)
    return state


def main(argv: list[str] | None = None) -> int:
    from harness.live import PushsvcProcess
    from harness.raw_streams import close_all, open_streams, raise_fd_limit

    from bench.common import metric, parser

    cli = parser(__doc__ or "")
    cli.add_argument("--streams", "-n", type=int, default=2000)
    cli.add_argument("--warm", type=int, default=200, help="streams opened before the count")
    cli.add_argument("--depth", type=int, default=30, help="frames per traceback (0: untraced)")
    cli.add_argument("--redis-url", help="run `pushsvc web` on this Redis (default: serve)")
    cli.add_argument("--top", type=int, default=25)
    args = cli.parse_args(argv)
    raise_fd_limit(args.streams + args.warm + 1024)
    dump = Path(tempfile.mkdtemp()) / "state.pickle"
    env = {
        "PUSHSVC_MAX_STREAMS_PER_IP": str(args.streams + args.warm + 100),
        "PUSHSVC_MAX_STREAMS": str(args.streams + args.warm + 100),
        "PUSHSVC_LOG_FORMAT": "text",
        SNAPSHOT_ENV: str(dump),
        "STREAM_MEMORY_DEPTH": str(args.depth),
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    }
    command = ["serve", "--tick", "0"]
    if args.redis_url:
        command = ["web", "--redis-url", args.redis_url]
    proc = PushsvcProcess(*command, "--heartbeat", "600s", env=env)
    proc.argv = [sys.executable, "-m", "bench.stream_memory", "--child", *proc.argv[3:]]
    proc.start(timeout=180)
    path = "/topics/idle/stream"
    warm: list[Any] = []
    streams: list[Any] = []
    try:
        warm = open_streams(proc.port, path, args.warm, timeout=300)
        time.sleep(1)
        before = _snapshot_of(proc.pid, dump)
        streams = open_streams(proc.port, path, args.streams, timeout=600)
        deadline = time.monotonic() + 60
        while metric(proc.port, "pushsvc_subscribers") != args.streams + args.warm:
            if time.monotonic() > deadline:
                raise RuntimeError("the server does not count every stream")
            time.sleep(0.1)
        time.sleep(1)
        after = _snapshot_of(proc.pid, dump)
        _report(before, after, args)
    finally:
        close_all(warm + streams)
        proc.stop(30)
    return 0


def _report(before: dict[str, Any], after: dict[str, Any], args: Any) -> None:
    n = args.streams
    print(f"# {n} idle streams over {args.warm} warm ones; bytes per stream")
    for key in ("Rss", "Anonymous", "Private_Dirty"):
        grown = (after["smaps"].get(key, 0) - before["smaps"].get(key, 0)) * 1024 / n
        print(f"{key + ' (smaps)':<48} {grown:>9.0f}")
    if after["snapshot"] is not None:
        diff = after["snapshot"].compare_to(before["snapshot"], "traceback")
        by_category: collections.Counter[str] = collections.Counter()
        blocks: collections.Counter[str] = collections.Counter()
        for stat in diff:
            category = _category(stat.traceback)
            by_category[category] += stat.size_diff
            blocks[category] += stat.count_diff
        total = sum(by_category.values())
        print(f"{'traced by tracemalloc':<48} {total / n:>9.0f}  allocations/stream")
        for category, size in by_category.most_common():
            if abs(size) / n >= 8:
                print(f"  {category:<46} {size / n:>9.0f}  {blocks[category] / n:>6.1f}")
        print("# top allocation sites (innermost frame)")
        sites = after["snapshot"].compare_to(before["snapshot"], "lineno")
        for stat in sites[: args.top]:
            frame = stat.traceback[0]
            where = f"{'/'.join(frame.filename.split('/')[-2:])}:{frame.lineno}"
            print(f"  {where:<46} {stat.size_diff / n:>9.0f}  {stat.count_diff / n:>6.1f}")
    print("# live objects grown, per stream (gc)")
    grown_types = after["types"] - before["types"]
    for name, count in grown_types.most_common(args.top):
        if count / n >= 0.5:
            print(f"  {name:<60} {count / n:>6.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        sys.exit(main())
