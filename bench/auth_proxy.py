"""The auth proxy (`--auth-url`, docs/security.md): what asking the application's backend adds
to a stream's start, and a reconnect storm of many clients asking it once per credential.

The backend is the Flask-Login example (examples/auth_backend/app.py, werkzeug's threaded
server) on the same machine; pushsvc (`serve`, the embedded broker) forwards its session
cookie. Users sign in first (each sign-in a distinct session cookie: a distinct credential).

* `start`: the time from connecting to a stream's first message (its snapshot), sequential
  streams, each closed before the next, the three kinds interleaved:
  - `anonymous`: a public topic, no cookie: nothing asked (the floor);
  - `warm`: a signed-in user whose grant pushsvc holds: nothing asked either;
  - `cold`: a credential pushsvc has not seen: one ask to the backend on the way.
  `added ms` is the median over the anonymous median.
* `storm`: `--clients` streams opened at once by `--users` signed-in users (as many tabs
  each), a fresh pushsvc whose cache is empty; `asks` is what pushsvc sent the backend
  (`pushsvc_auth_asks_total{outcome="granted"}`), at most one per credential (`--check`:
  exactly). Past `--auth-max-asks` (64) asks in flight a user's tabs get 503 (`503s`: how many
  times) and try again after its `Retry-After`, as EventSource does; `open s` is until every
  stream is open.

    python -m bench.auth_proxy --samples 300 --clients 2000 --users 20
"""

from __future__ import annotations

import http.client
import re
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.app_process import AppProcess
from harness.live import PushsvcProcess, metric_sample
from harness.raw_streams import StreamRefused, close_all, open_streams, raise_fd_limit

from bench.common import Column, Report, machine, parser, percentiles

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "auth_backend" / "app.py"
_FIRST_MESSAGE = b"\ndata:"

COLUMNS: list[Column] = [
    ("row", 9, "row"),
    ("n", 6, "n"),
    ("p50 ms", 7, "p50_ms"),
    ("p90 ms", 7, "p90_ms"),
    ("p99 ms", 7, "p99_ms"),
    ("added ms", 8, "added_ms"),
    ("asks", 5, "asks"),
    ("users", 5, lambda row: row.get("users")),
    ("open s", 6, lambda row: row.get("open_s")),
    ("503s", 5, lambda row: row.get("refused")),
]


def sign_in(app: AppProcess) -> str:
    """A fresh session cookie of alice's (`session=…`)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/login",
            body="username=alice&password=wonderland",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        return (response.getheader("Set-Cookie") or "").split(";")[0]
    finally:
        conn.close()


def start_ms(port: int, path: str, cookie: str | None) -> float:
    """From connecting to the stream's first message, in milliseconds."""
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while _FIRST_MESSAGE not in received:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError(f"no stream: {received[:300]!r}")
            received += data
        if not received.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"no stream: {received[:300]!r}")
        return (time.perf_counter() - began) * 1000


def _pushsvc(app: AppProcess) -> PushsvcProcess:
    return PushsvcProcess(
        "serve",
        "--tick", "0",
        "--auth-url", f"{app.url}/pushsvc/auth",
        "--auth-cookies", "session",
        "--anonymous", "public.*",
        "--max-streams-per-ip", "100000",
    ).start()  # fmt: skip


def _asks(proc: PushsvcProcess) -> int:
    return int(metric_sample(proc.port, "pushsvc_auth_asks_total", '{outcome="granted"}'))


def starts(app: AppProcess, samples: int) -> list[dict[str, Any]]:
    cold = [sign_in(app) for _ in range(samples)]
    warm = sign_in(app)
    proc = _pushsvc(app)
    try:
        start_ms(proc.port, "/topics/orders/stream", warm)  # the warm grant, asked once
        times: dict[str, list[float]] = {"anonymous": [], "warm": [], "cold": []}
        for cookie in cold:
            times["anonymous"].append(start_ms(proc.port, "/topics/public.news/stream", None))
            times["warm"].append(start_ms(proc.port, "/topics/orders/stream", warm))
            times["cold"].append(start_ms(proc.port, "/topics/orders/stream", cookie))
        asks = _asks(proc)
    finally:
        proc.stop()
    floor = statistics.median(times["anonymous"])
    rows = []
    for kind, values in times.items():
        p50, p90, p99 = percentiles(values, (0.5, 0.9, 0.99))
        rows.append(
            {
                "row": kind,
                "n": len(values),
                "p50_ms": p50,
                "p90_ms": p90,
                "p99_ms": p99,
                "added_ms": round(statistics.median(values) - floor, 3),
                "asks": {"anonymous": 0, "warm": 1, "cold": samples}[kind],
                "asks_sent": asks,
            }
        )
    return rows


def storm(app: AppProcess, clients: int, users: int) -> dict[str, Any]:
    cookies = [sign_in(app) for _ in range(users)]
    raise_fd_limit(clients * 2 + 1000)
    proc = _pushsvc(app)
    opened: list[list[Any]] = [[] for _ in cookies]
    errors: list[str] = []
    refused: list[str] = []
    try:
        tabs = [clients // users + (1 if i < clients % users else 0) for i in range(users)]

        def open_tabs(index: int) -> None:
            # As EventSource does, a 503 is retried after its Retry-After (the user's tabs
            # together: a refused batch is closed whole and opened again).
            deadline = time.monotonic() + 120
            while True:
                try:
                    opened[index] = open_streams(
                        proc.port,
                        "/topics/orders/stream",
                        tabs[index],
                        timeout=120,
                        headers={"Cookie": cookies[index]},
                    )
                    return
                except StreamRefused as exc:
                    if " 503 " not in str(exc).split("\r\n")[0]:
                        errors.append(str(exc)[:300])
                        return
                    found = re.search(r'"code":"(\w+)"', str(exc))
                    refused.append(found[1] if found else "?")
                    if time.monotonic() > deadline:
                        errors.append(f"still refused after 120 s: {str(exc)[-200:]}")
                        return
                    time.sleep(2)
                except Exception as exc:  # reported, not raised in a thread
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    return

        threads = [threading.Thread(target=open_tabs, args=(i,)) for i in range(users)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        open_s = time.perf_counter() - began
        asks = _asks(proc)
    finally:
        for socks in opened:
            close_all(socks)
        proc.stop()
    return {
        "row": "storm",
        "n": sum(len(socks) for socks in opened),
        "clients": clients,
        "users": users,
        "asks": asks,
        "open_s": round(open_s, 2),
        "refused": len(refused),
        "refused_codes": sorted(set(refused)),
        "errors": errors,
        "p50_ms": None,
        "p90_ms": None,
        "p99_ms": None,
        "added_ms": None,
    }


def main() -> int:
    cli = parser(__doc__, smoke="a few samples and a small storm")
    cli.add_argument("--samples", type=int, default=300, help="stream starts of each kind")
    cli.add_argument("--clients", type=int, default=2000, help="streams of the storm")
    cli.add_argument("--users", type=int, default=20, help="credentials of the storm")
    args = cli.parse_args()
    if args.smoke:
        args.samples, args.clients, args.users = 10, 100, 5
    report = Report(COLUMNS, json=args.json)
    report.say(f"# {machine('gevent', 'httpx', 'flask-login')}")
    report.header()
    with AppProcess(str(EXAMPLE), "--port", "0", env={"GRANT_TTL_S": "300"}) as app:
        started = starts(app, args.samples)
        for row in started:
            report.row(row)
        stormed = storm(app, args.clients, args.users)
        report.row(stormed)
    exact = (
        all(row["asks_sent"] == args.samples + 1 for row in started)
        and stormed["n"] == args.clients
        and stormed["asks"] == args.users
        and not stormed["errors"]
    )
    if (args.smoke or args.check) and not exact:
        shown = {key: value for key, value in stormed.items() if key != "errors"}
        print(f"not exact: {shown}, {len(stormed['errors'])} errors", file=sys.stderr)
        for error in stormed["errors"][:3]:
            print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
