"""The servers under test, started and stopped by the benchmarks: pushsvc (also as a Mercure
hub), Flask-SSE, nginx + nchan and sse-starlette.

Each deployment starts its own redis-server on a free port where it needs one
(never the machine's 6379), and reports what the benchmark measures about it:
its processes (for RSS), its Redis connections, and how many subscribers it has.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
import redis
from harness.live import PushsvcProcess
from harness.net import free_port
from harness.procfs import children, descendants
from harness.redis_server import RedisServer

from bench.common import metric
from bench.loadgen.kinds import MERCURE_TOPIC
from pushsvc.ops.children import terminate

REPO = Path(__file__).resolve().parents[1]
VENVS = REPO / ".bench-venvs"
TOPIC = "bench"
NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
"""Debian's libnginx-mod-nchan; a build with nchan compiled in needs no load_module."""


# Every subscriber of a benchmark connects from 127.0.0.1: the per-address stream limit
# (PUSHSVC_MAX_STREAMS_PER_IP, 256 by default) would refuse all but the first 256.
# PushsvcProcess passes on no PUSHSVC_* variable of ours, so each start names it.
PUSHSVC_ENV: dict[str, str] = {"PUSHSVC_MAX_STREAMS_PER_IP": "1000000"}


def use_pushsvc_src(src: str) -> None:
    """Run pushsvc from another tree's `src/` (to compare two versions in one session)."""
    PUSHSVC_ENV["PYTHONPATH"] = str(Path(src).resolve())


class ServerUnderTest:
    """A server under test. `kind` is the loadgen kind; URLs are for TOPIC."""

    name: str
    kind: str
    workers: int = 1
    venv: PeerVenv | None = None
    """A peer's own venv, built on first use."""

    def __init__(self) -> None:
        self.redis: RedisServer | None = None
        self._redis_client: redis.Redis | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self._redis_client is not None:
            self._redis_client.close()
            self._redis_client = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def bases(self) -> list[str]:
        """The web processes' base URLs (`http://host:port`)."""
        raise NotImplementedError

    def stream_urls(self) -> list[str]:
        return [f"{base}/topics/{TOPIC}/stream" for base in self.bases()]

    def message_urls(self) -> list[str]:
        """Where a subscriber reads the messages published: pushsvc's messages stream; a
        peer's one stream, which relays what is published as it is."""
        if self.kind == "pushsvc":
            return [f"{base}/topics/{TOPIC}/messages" for base in self.bases()]
        return self.stream_urls()

    def publish_url(self) -> str:
        return f"{self.bases()[0]}/topics/{TOPIC}/events"

    def publish_headers(self) -> list[str]:
        """More header lines a publication carries (a token), `Name: value` each."""
        return []

    def pids(self) -> list[int]:
        raise NotImplementedError

    def subscribed(self) -> int | None:
        """Subscribers the server itself reports, where it can tell us; else None."""
        return None

    def writes(self) -> int | None:
        """Socket writes to streams so far, where the server counts them; else None."""
        return None

    def _start_redis(self) -> str:
        # Flask-SSE holds a Redis connection per subscriber.
        self.redis = RedisServer(args=("--maxclients", "20000")).start()
        self._redis_client = redis.Redis.from_url(self.redis.url)
        return self.redis.url

    def redis_used_memory(self) -> int | None:
        """Redis's `used_memory` (INFO memory), bytes; None without a Redis."""
        if self._redis_client is None:
            return None
        return int(self._redis_client.info("memory")["used_memory"])

    def redis_clients(self) -> int | None:
        """Connections the servers hold to Redis (INFO clients, minus this one)."""
        if self._redis_client is None:
            return None
        return int(self._redis_client.info("clients")["connected_clients"]) - 1


class PushsvcServe(ServerUnderTest):
    """`pushsvc serve`: one process with the embedded broker (`pushsvc-memory`), or with
    `workers`, the one-command deployment (`pushsvc-workers-W`: W web workers on one port, an
    aggregator and a private redis-server, all children of the supervisor), or with `redis`,
    one process aggregating and serving on a redis-server of its own (`pushsvc-serve-redis`).
    `extra_args` go to `pushsvc serve` after ours (so they win)."""

    kind = "pushsvc"

    def __init__(
        self, workers: int | None = None, *, redis: bool = False, extra_args: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.workers = workers or 1
        self.name = "pushsvc-memory" if workers is None else f"pushsvc-workers-{workers}"
        self.args = () if workers is None else ("--workers", str(workers))
        self.on_redis = redis
        if redis:
            self.name = "pushsvc-serve-redis"
        self.extra_args = tuple(extra_args)
        self.env: dict[str, str] = {}
        """More environment for `pushsvc serve` (beside PUSHSVC_ENV)."""

    def start(self) -> None:
        redis_args = ("--redis-url", self._start_redis()) if self.on_redis else ()
        # W workers import the app at once: on two cores the rest of the machine also uses,
        # eight of them took over 20 s to the first "listening on".
        timeout = 30 + 5 * self.workers
        self.proc = PushsvcProcess(
            "serve", *self.args, *redis_args, "--tick", "0", "--port", "0", *self.extra_args,
            env={**PUSHSVC_ENV, **self.env},
        ).start(timeout=timeout)  # fmt: skip
        # Ready when every worker listens: each logs its own "listening on".
        deadline = time.monotonic() + timeout
        while sum("listening on" in line for line in self.proc.output) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start: {self.proc.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.stop()
        super().stop()

    def bases(self) -> list[str]:
        return [self.proc.base]  # with workers, the kernel spreads connections over them

    def writes(self) -> int | None:
        """`pushsvc_delivery_seconds`' count (one per write to a stream, however many updates
        it carries); one process only: with workers, a scrape reaches one of them."""
        if self.workers != 1:
            return None
        count = metric(self.proc.port, "pushsvc_delivery_seconds_count")
        return None if count is None else int(count)

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]


class PushsvcMercure(PushsvcServe):
    """`pushsvc serve --mercure anonymous` (`pushsvc-mercure`), embedded broker: the Mercure
    protocol adapter on the same core as `pushsvc-memory`, so that the two compare what the
    adapter costs. Subscribers match MERCURE_TOPIC without a token; the publisher POSTs with
    an HS256 token (`{"mercure": {"publish": ["*"]}}`) signed with a secret of this run's."""

    kind = "pushsvc-mercure"

    def __init__(self) -> None:
        super().__init__(extra_args=("--mercure", "anonymous"))
        self.name = "pushsvc-mercure"
        self.secret = uuid.uuid4().hex + uuid.uuid4().hex  # 64 bytes: HS256 wants >= 32
        self.env["PUSHSVC_JWT_KEY"] = self.secret

    def stream_urls(self) -> list[str]:
        raise ValueError("the Mercure hub relays messages only: run with --messages")

    def message_urls(self) -> list[str]:
        match = urllib.parse.quote(MERCURE_TOPIC, safe="")
        return [f"{base}/.well-known/mercure?match={match}" for base in self.bases()]

    def publish_url(self) -> str:
        return f"{self.bases()[0]}/.well-known/mercure"

    def publish_headers(self) -> list[str]:
        claims = {"mercure": {"publish": ["*"]}, "exp": int(time.time()) + 86_400}
        return [f"Authorization: Bearer {jwt.encode(claims, self.secret, algorithm='HS256')}"]


class PushsvcRedis(ServerUnderTest):
    """W `pushsvc web` processes on distinct ports plus one `pushsvc aggregate`, on Redis."""

    kind = "pushsvc"

    def __init__(
        self, workers: int, *, extra_args: Sequence[str] = (), profile_dir: Path | None = None
    ) -> None:
        """`extra_args` go to every pushsvc process; with `profile_dir`, each runs under
        cProfile and writes `aggregator.prof`, `web-0.prof`, ... there when stopped."""
        super().__init__()
        self.workers = workers
        self.name = f"pushsvc-redis-{workers}"
        self.extra_args = tuple(extra_args)
        self.profile_dir = profile_dir
        self.webs: list[PushsvcProcess] = []
        self.aggregator: PushsvcProcess | None = None
        self.prefix = f"b{uuid.uuid4().hex[:8]}:"

    def _python_args(self, name: str) -> tuple[str, ...]:
        if self.profile_dir is None:
            return ()
        return ("-m", "cProfile", "-o", str(self.profile_dir / f"{name}.prof"))

    def start(self) -> None:
        url = self._start_redis()
        common = ("--redis-url", url, "--prefix", self.prefix, "--tick", "0", *self.extra_args)
        profile = self._python_args("aggregator")
        self.aggregator = PushsvcProcess(
            "aggregate", *common, http=False, python_args=profile, env=PUSHSVC_ENV
        ).start()
        self.aggregator.wait_for_log("took the lease")
        for i in range(self.workers):
            self.webs.append(
                PushsvcProcess(
                    "web",
                    *common,
                    "--port",
                    "0",
                    python_args=self._python_args(f"web-{i}"),
                    env=PUSHSVC_ENV,
                ).start()
            )

    def stop(self) -> None:
        for proc in [*self.webs, self.aggregator]:
            if proc is not None:
                proc.stop()
        super().stop()

    def bases(self) -> list[str]:
        return [web.base for web in self.webs]

    def pids(self) -> list[int]:
        procs = [*self.webs, self.aggregator]
        return [p.pid for p in procs if p is not None]


@dataclass(frozen=True)
class PeerVenv:
    """A peer's own venv under .bench-venvs (its packages never meet pushsvc's), built from
    PyPI on first use; `reported`: the packages whose versions a row names."""

    name: str
    packages: tuple[str, ...]
    reported: frozenset[str]

    @property
    def path(self) -> Path:
        return VENVS / self.name


FLASK_SSE = PeerVenv(
    "flask-sse",
    # gunicorn 27.0.1's gevent worker imports `packaging` without declaring it.
    ("flask-sse==1.0.0", "gunicorn", "gevent", "redis", "packaging"),
    frozenset({"flask", "flask-sse", "gunicorn", "gevent", "redis"}),
)
SSE_STARLETTE = PeerVenv(
    "sse-starlette",
    # uvicorn's standard extra: uvloop and httptools, its fastest setup.
    ("sse-starlette>=3.0", "starlette>=0.41", "uvicorn[standard]>=0.30"),
    frozenset({"sse-starlette", "starlette", "uvicorn", "uvloop", "httptools"}),
)


def ensure_venv(peer: PeerVenv) -> Path:
    """The peer's venv, built on first use (needs PyPI); RuntimeError if it cannot be."""
    venv = peer.path
    ready = venv / ".ready"
    if ready.is_file():
        return venv
    VENVS.mkdir(exist_ok=True)
    python = venv / "bin" / "python"
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *peer.packages],
    ]  # fmt: skip
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{argv[:4]}: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(argv[:4])} failed: {' | '.join(tail)}")
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True)
    ready.write_text(freeze.stdout)
    return venv


def venv_versions(peer: PeerVenv) -> dict[str, str]:
    """Versions installed in the peer's venv (for the report)."""
    ready = peer.path / ".ready"
    out = {}
    for line in ready.read_text().splitlines() if ready.is_file() else ():
        name, _, version = line.partition("==")
        if name.lower().replace("_", "-") in peer.reported:
            out[name.lower().replace("_", "-")] = version
    return out


class FlaskSSE(ServerUnderTest):
    """Flask-SSE 1.0 under `gunicorn -k gevent -w W`, on its own Redis."""

    kind = "flask-sse"
    venv = FLASK_SSE

    def __init__(self, workers: int, worker_connections: int) -> None:
        super().__init__()
        self.workers = workers
        self.name = "flask-sse" if workers == 1 else f"flask-sse-{workers}"
        self.worker_connections = worker_connections
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 30) -> None:
        venv = ensure_venv(FLASK_SSE)
        url = self._start_redis()
        self.port = free_port()
        self._logdir = Path(tempfile.mkdtemp(prefix="bench-flask-sse-"))
        log = self._logdir / "gunicorn.log"
        argv = [
            str(venv / "bin" / "gunicorn"), "-k", "gevent", "-w", str(self.workers),
            "--worker-connections", str(self.worker_connections), "--backlog", "2048",
            "--timeout", "120", "-b", f"127.0.0.1:{self.port}", "--error-logfile", str(log),
            "--chdir", str(REPO / "bench" / "peers"), "flask_sse_app:app",
        ]  # fmt: skip
        env = {**os.environ, "REDIS_URL": url}
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            booted = len(children(self.proc.pid)) >= self.workers
            if booted and text.count("Booting worker") >= self.workers and self._answers():
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start:\n{text[-2000:]}")
            time.sleep(0.05)  # no event to wait on: poll the log and the port

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 15)
            self.proc = None
        super().stop()

    def stream_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}/stream"]

    def publish_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/publish"

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children(self.proc.pid)]

    def subscribed(self) -> int | None:
        # Flask-SSE sends no byte before the first message: ask Redis who listens on "sse".
        assert self._redis_client is not None
        return int(self._redis_client.pubsub_numsub("sse")[0][1])


class SseStarlette(ServerUnderTest):
    """sse-starlette (bench/peers/sse_starlette_app.py) under uvicorn: one process, asyncio on
    uvloop, no Redis. Its subscribers are counted by the app itself (GET /subscribers)."""

    kind = "sse-starlette"
    name = "sse-starlette"
    venv = SSE_STARLETTE

    def __init__(self) -> None:
        super().__init__()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 30) -> None:
        venv = ensure_venv(SSE_STARLETTE)
        self.port = free_port()
        argv = [
            str(venv / "bin" / "uvicorn"), "--host", "127.0.0.1", "--port", str(self.port),
            "--backlog", "2048", "--no-access-log", "--log-level", "warning",
            "--app-dir", str(REPO / "bench" / "peers"), "sse_starlette_app:app",
        ]  # fmt: skip
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self.subscribed() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("uvicorn did not start (its output is above)")
            time.sleep(0.05)  # no event to wait on: poll the port

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 15)
            self.proc = None
        super().stop()

    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}"]

    def stream_urls(self) -> list[str]:
        return [f"{self.bases()[0]}/stream"]

    def publish_url(self) -> str:
        return f"{self.bases()[0]}/publish"

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children(self.proc.pid)]

    def subscribed(self) -> int | None:
        try:
            url = f"{self.bases()[0]}/subscribers"
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(json.loads(response.read())["subscribers"])
        except OSError:
            return None


def nginx_version() -> dict[str, str]:
    """nginx's and nchan's versions (for the report): `nginx -v`, the module's Debian package."""
    versions = {}
    if NGINX is not None:
        text = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr
        versions["nginx"] = text.strip().rpartition("/")[2]
    with contextlib.suppress(OSError):
        package = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"],
            capture_output=True, text=True,
        )  # fmt: skip
        if package.returncode == 0:
            versions["libnginx-mod-nchan"] = package.stdout.strip()
    return versions


class Nchan(ServerUnderTest):
    """nginx with nchan (bench/peers/nchan.conf): `worker_processes W`, a publisher location and
    an EventSource subscriber location, on a free port, as a non-daemon child with a prefix
    directory of its own. Its CPU is the master's and every worker's."""

    kind = "nchan"

    def __init__(self, workers: int, connections: int) -> None:
        super().__init__()
        self.workers = workers
        self.name = "nchan" if workers == 1 else f"nchan-{workers}"
        self.connections = connections
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.ping_s = 0
        """Seconds between keep-alive comments on an idle stream (0: none, nchan's default)."""

    @staticmethod
    def missing() -> str | None:
        """Why nginx + nchan cannot run here, or None."""
        if NGINX is None:
            return "no nginx binary"
        if not NCHAN_MODULE.is_file():
            built_in = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr
            if "nchan" not in built_in:
                return f"no nchan module ({NCHAN_MODULE} missing: apt install libnginx-mod-nchan)"
        return None

    def render(self, prefix: Path) -> str:
        module = f"load_module {NCHAN_MODULE};" if NCHAN_MODULE.is_file() else ""
        # As root, workers would run as `nobody`, who cannot enter our private temp dir.
        values = {
            "MODULE": module,
            "USER": "user root;" if os.geteuid() == 0 else "",
            "WORKERS": str(self.workers),
            "CONNECTIONS": str(self.connections),
            "NOFILE": str(2 * self.connections + 100),
            "PREFIX": str(prefix),
            "PORT": str(self.port),
            "PING": str(self.ping_s),
        }
        conf = (REPO / "bench" / "peers" / "nchan.conf").read_text()
        for name, value in values.items():
            conf = conf.replace(f"@{name}@", value)
        return conf

    def start(self, timeout: float = 30) -> None:
        why = self.missing()
        if why is not None:
            raise RuntimeError(why)
        assert NGINX is not None
        self.port = free_port()
        prefix = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
        self._prefix = prefix
        (prefix / "nginx.conf").write_text(self.render(prefix))
        log = prefix / "error.log"
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(log),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while len(children(self.proc.pid)) < self.workers or self.subscribed() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                self.stop()
                raise RuntimeError(f"nginx did not start:\n{text[-2000:]}")
            time.sleep(0.05)  # no event to wait on: poll the port

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 15)  # fast shutdown: open streams are cut
            self.proc = None
            shutil.rmtree(self._prefix, ignore_errors=True)
        super().stop()

    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}"]

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children(self.proc.pid)]

    def subscribed(self) -> int | None:
        """The channel's subscribers, from nchan's channel info (None while nginx is not up)."""
        request = urllib.request.Request(self.publish_url(), headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(json.loads(response.read())["subscribers"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # nchan has no such channel until someone subscribes
                return 0
            raise RuntimeError(f"nchan channel info: {exc}") from None
        except OSError:
            return None
        except (ValueError, KeyError) as exc:
            raise RuntimeError(f"nchan channel info: {exc}") from None


def make_deployment(name: str, *, subscribers: int) -> ServerUnderTest:
    """`pushsvc-memory`, `pushsvc-mercure`, `pushsvc-workers-W`, `pushsvc-redis-W`, `flask-sse`
    (one worker), `flask-sse-W`, `nchan` (one nginx worker), `nchan-W` or `sse-starlette`."""
    if name == "pushsvc-memory":
        return PushsvcServe()
    if name == "pushsvc-mercure":
        return PushsvcMercure()
    if name == "sse-starlette":
        return SseStarlette()
    if name.startswith("pushsvc-workers-") and name.rpartition("-")[2].isdigit():
        return PushsvcServe(int(name.rpartition("-")[2]))
    match = re.fullmatch(r"(pushsvc-redis|flask-sse|nchan)(?:-(\d+))?", name)
    if match is None or (match[1] == "pushsvc-redis" and match[2] is None):
        raise ValueError(f"unknown server {name!r}")
    workers = int(match[2] or 1)
    if workers < 1:
        raise ValueError(f"{name!r}: at least one worker")
    if match[1] == "pushsvc-redis":
        return PushsvcRedis(workers)
    if match[1] == "nchan":
        # nginx ran out of its 5,100 at 5,000 subscribers ("worker_connections are not enough,
        # reusing connections"), closing streams: room for two per subscriber.
        return Nchan(workers, connections=max(1024, 2 * subscribers + 100))
    # Gunicorn's default of 1000 deadlocks publishing once streams hold every slot;
    # the benchmark asks for 2000, and one worker may end up holding every subscriber.
    return FlaskSSE(workers, worker_connections=max(2000, subscribers + 100))
