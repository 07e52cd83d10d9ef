"""Shared fixtures: the app in-process with Flask's test client (request/response checks),
and real pushsvc processes, real redis-server processes and real sockets (streams, Redis,
faults)."""

from __future__ import annotations

import compileall
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from harness.forked_starts import Forker
from harness.live import SRC, PushsvcProcess
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer
from hypothesis import settings
from xdist.scheduler import LoadFileScheduling

from pushsvc.app import create_app
from pushsvc.deliver.hub import Hub
from support.auth_tokens import CREDENTIALS
from support.cpu_limit import cpu_limited, limits
from support.reruns import register as register_rerun_log
from support.settling import SettlingClient, settle

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from xdist.workermanage import WorkerController

    from support.browser import SharedChromium

# Tests never time anything: a property test that meets a loaded machine (the suite runs on
# every core, beside browsers and servers) must not fail on Hypothesis's 200 ms deadline.
settings.register_profile("pushsvc", deadline=None)
settings.load_profile("pushsvc")


def pytest_configure(config: pytest.Config) -> None:
    """Bytecode is written and read, whatever PYTHONDONTWRITEBYTECODE says (it is set on the
    machines the suite was timed on). The suite starts hundreds of Python processes from
    src/ and bench/, and each compiled every module anew: a third of what starting a pushsvc
    process cost. pytest rewrote every test module on each worker at each run: three
    quarters of the 15 s a worker took to collect. So: src/, bench/ and tests/ compiled
    once, before any worker starts, and every process after writes what it compiles."""
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and _is_filler(workerinput):
        os.nice(10)  # computes in the other workers' waits (_ByFileButPure)
    PushsvcProcess.forker = Forker(SRC)
    register_rerun_log(config)  # every rerun listed for .ci/run (support.reruns)
    if not hasattr(config, "workerinput"):
        root = Path(__file__).parents[1]
        for folder in ("src", "harness", "bench", "tests"):
            compileall.compile_dir(root / folder, quiet=1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if PushsvcProcess.forker is not None:
        PushsvcProcess.forker.stop()
        PushsvcProcess.forker = None


class _ByFileButPure(LoadFileScheduling):
    """pyproject's `--dist loadfile`: a file's tests on one worker, so that the servers its
    module fixtures start, start once; but the tests of tests/unit and tests/simulation,
    which start nothing, each go to whichever worker is free. One worker ran the
    simulation's four slices in a row, the fast tier's longest pole.

    And with three workers or more, the last is a filler (`_is_filler`): it runs only those
    pure tests, at a lower priority, while the others take the files first and the pure
    tests once no file is left. The files wait, on leases, paced scenarios, a process's
    start or the network; where all the workers waited at once, a core stood idle, and the
    pure tests, all computing, came last, after every file. The filler computes in those
    idle stretches and yields the cores to the files' servers when they want them.

    The file that builds Docker's images goes first (`_FIRST`). xdist hands out the files
    with the most tests first, and it has four: on a fresh machine its setup (debootstrap,
    then the image) waited two minutes from the fourth minute on, and was the run's tail."""

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.startswith(_PURE):
            return nodeid
        return super()._split_scope(nodeid)

    def _assign_work_unit(self, node: WorkerController) -> None:
        filler = _is_filler(node.workerinput)
        chosen = None if filler else next((s for s in self.workqueue if s in _FIRST), None)
        if chosen is None:
            chosen = next((s for s in self.workqueue if s.startswith(_PURE) == filler), None)
        if chosen is None and not filler:
            chosen = next(iter(self.workqueue), None)  # no file left: a pure test
        if chosen is None:
            return  # the filler, and no pure test left: the others finish the files
        self.workqueue.move_to_end(chosen, last=False)
        super()._assign_work_unit(node)


_PURE = ("tests/unit/", "tests/simulation/")
_FIRST = ("tests/system/test_docker_stack.py",)


def _is_filler(workerinput: dict[str, object]) -> bool:
    count = int(str(workerinput["workercount"]))
    return count >= 3 and workerinput["workerid"] == f"gw{count - 1}"


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    if config.getoption("dist") != "loadfile":
        return None  # another --dist, as asked
    return _ByFileButPure(config, log)


# What a test starts, told by its fixtures (the markers are described in pyproject.toml).
_STARTS_BY_FIXTURE = {
    "redis_server": ("redis",),
    "own_redis": ("redis",),
    "sentinel": ("redis",),
    "redis_cluster": ("redis", "cluster"),
    "browser": ("browser",),
    "page": ("browser",),
    "newcomer": ("install", "process"),
    "server": ("process",),
}
_HEAVY = ("process", "redis", "cluster", "browser", "docker", "install")
_SYSTEM = Path(__file__).parent / "system"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m fast` does not import tests/system: every test there is marked `process`, so
    none could be picked, and importing its modules (Playwright, Schemathesis) is a second
    and a half of every worker's start."""
    if config.getoption("markexpr") == "fast" and collection_path == _SYSTEM:
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with what it starts, and `fast` the tests that start nothing: tests
    under tests/system start processes; fixtures say the rest; a test parametrized over
    backends starts the Redis or Cluster its id names."""
    for item in items:
        starts: set[str] = set()
        if _SYSTEM in Path(item.path).parents:
            starts.add("process")
        for name in getattr(item, "fixturenames", ()):
            starts.update(_STARTS_BY_FIXTURE.get(name, ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            words = set(re.split(r"[^a-z]+", callspec.id.lower()))
            if words & {"redis", "sentinel"}:
                starts.add("redis")
            if "cluster" in words:
                starts.update(("redis", "cluster"))
        starts.update(m.name for m in item.iter_markers() if m.name in _HEAVY)
        for name in sorted(starts):
            item.add_marker(name)
        # Longer than pyproject's `timeout`: a base image made by debootstrap, a cold pip.
        if starts & {"docker", "install"}:
            item.add_marker(pytest.mark.timeout(1200 if "docker" in starts else 900))
        if not starts and item.get_closest_marker("slow") is None:
            item.add_marker("fast")
        if not starts and (limited := limits(item)) is not None:
            cpu, wall = limited  # computes only: its limit is on CPU (support.cpu_limit)
            item.stash[_CPU_LIMIT] = cpu
            item.add_marker(pytest.mark.timeout(wall), append=False)


_CPU_LIMIT = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    cpu = item.stash.get(_CPU_LIMIT, None)
    if cpu is None:
        yield
        return
    with cpu_limited(cpu):
        yield


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def browser_apart_from_network_changes(request: pytest.FixtureRequest) -> Iterator[None]:
    """A browser test runs while no Docker test adds or removes a network interface, which
    would abort its page's requests (support.host_network)."""
    if request.node.get_closest_marker("browser") is None:
        yield
        return
    from support.host_network import using_the_network

    with using_the_network():
        yield


@pytest.fixture(scope="session", autouse=True)
def no_credential_in_any_log() -> Iterator[None]:
    """Tokens, secrets and `?token=` values never appear in a log line: every record logged in
    this process and every line a pushsvc process printed, over the whole session, is searched
    for every credential the tests used (tests/support/auth_tokens.py)."""
    collected = _Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(collected)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(collected)
    root.setLevel(level)
    lines = collected.lines + [line for p in PushsvcProcess.started for line in p.output]
    leaks = [line for line in lines if any(c in line for c in CREDENTIALS)]
    assert not leaks, f"credentials in {len(leaks)} log line(s), e.g. {leaks[0][:200]!r}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of our own on a free port (never the machine's 6379)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of our own: 3 primaries with one replica each (harness/redis_cluster.py).
    Started only for a session that asks for it; tests that do are marked `cluster` and kept
    in few modules, since a module runs on one worker and each worker that runs one starts
    one. Shared: a test that kills or stops nodes starts a cluster of its own."""
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop, restart or read the counts of."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A unique key prefix, so tests sharing a Redis never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="module")
def server() -> Iterator[PushsvcProcess]:
    """`pushsvc serve` on the embedded broker, shared by a module's tests (use distinct topics)."""
    proc = PushsvcProcess("serve", "--tick", "0", "--heartbeat", "1s").start()
    yield proc
    proc.stop()


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """`make_app(**settings)`: the app on the embedded broker, aggregating in-process (no idle
    ticks unless asked), its core settled (`support.settling`), closed after the test."""
    made: list[Flask] = []

    def make(**settings: object) -> Flask:
        app = create_app({"tick": 0, **settings})
        app.config["TESTING"] = True
        app.test_client_class = SettlingClient
        made.append(app)
        settle(app.extensions["pushsvc"])
        return app

    yield make
    for app in made:
        app.extensions["pushsvc"].close()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def _chromium() -> Iterator[SharedChromium]:
    from support.browser import SharedChromium

    shared = SharedChromium()
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def browser(_chromium: SharedChromium) -> Iterator[Browser]:
    """A headless Chromium, the worker's one, lent to a module (support/browser.py)."""
    with _chromium.lent() as lent:
        yield lent


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page of it whose console errors fail the test."""
    from support.browser import page_of

    with page_of(browser) as opened:
        yield opened


@pytest.fixture(autouse=True)
def hubs_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every `Hub` a test makes is closed when it ends. A hub's sweeper outlives a test that
    leaves it open, and once it judged a stream of that test slow it raised ECONNRESET in
    the stream's writer: the greenlet that had last taken its runs, the main one in a test,
    by then running a later test ("stream closed: slow" in a parked-stream test)."""
    made: list[Hub] = []
    make = Hub.__init__

    def recorded(self: Hub, *args: Any, **kwargs: Any) -> None:
        make(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Hub, "__init__", recorded)
    yield
    for hub in made:
        hub.close()
