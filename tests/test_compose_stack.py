"""docker-compose.yml, run without Docker: each pushsvc service becomes a local process.

The services get the command the compose file and the Dockerfile give them and the
environment the compose file gives them, except that Redis is the test's own
redis-server, hosts are 127.0.0.1, ports are free ports, key prefixes start with one
unique to the test, and the demo gets `--count` so that it ends and `--seed` so that the test
knows which events it posts (the scenario, made from the compose file's settings, says).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import yaml

from pushsvc.config import parse_duration_us
from pushsvc.demo.clock import SimClock, parse_time_of_day
from pushsvc.demo.scenario import DemoEvent, Scenario, topic_names
from pushsvc.testing.live import SRC, PushsvcProcess, SSEClient, request, wait_until
from pushsvc.testing.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PUSHSVC_SERVICES = ("web1", "web2", "aggregator", "aggregator-standby", "demo")
# `scheme://service:port` inside a value of a service's environment.
_SERVICE_ADDRESS = re.compile(r"//([A-Za-z0-9_.-]+):(\d+)")
# `${NAME:-default}`: compose substitutes the default when NAME is unset or empty.
_DEFAULTED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")


# ---------------------------------------------------------------- reading the files


def compose() -> dict[str, Any]:
    """The compose file as users run it: every `${NAME:-default}` is its default."""
    with COMPOSE.open() as file:
        return dict(with_defaults(yaml.safe_load(file)))


def with_defaults(value: Any) -> Any:
    if isinstance(value, str):
        return _DEFAULTED.sub(lambda match: match[1], value)
    if isinstance(value, dict):
        return {key: with_defaults(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_defaults(item) for item in value]
    return value


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON array of `ENTRYPOINT [...]` or `CMD [...]` in the Dockerfile."""
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(instruction + " "):
            value = json.loads(line[len(instruction) :])
            assert isinstance(value, list), f"{instruction} must be in exec form"
            return [str(part) for part in value]
    raise AssertionError(f"no {instruction} in the Dockerfile")


def container_argv(service: Mapping[str, Any]) -> list[str]:
    """What the container runs: compose's entrypoint/command over the image's.

    As in Docker: an `entrypoint` in the compose file also clears the image's CMD.
    """
    entrypoint, command = dockerfile_exec_form("ENTRYPOINT"), dockerfile_exec_form("CMD")
    if "entrypoint" in service:
        entrypoint, command = service["entrypoint"], []
    if "command" in service:
        command = service["command"]
    assert isinstance(entrypoint, list) and isinstance(command, list), "use exec-form lists"
    return [str(part) for part in [*entrypoint, *command]]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items() if value is not None}


def container_port(service: Mapping[str, Any]) -> int:
    """The port the service listens on inside its container."""
    return int(environment(service).get("PUSHSVC_PORT", "8000"))


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency → condition (the list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def start_order(all_services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Services after their dependencies, as compose starts them."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        if name in order:
            return
        for dep in depends_on(all_services[name]):
            visit(dep, (*path, name))
        order.append(name)

    for name in all_services:
        visit(name, ())
    return order


# ---------------------------------------------------------------- running them locally


class DemoProcess:
    """`pushsvc demo ...` with its log lines collected as they come."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.argv = [sys.executable, "-m", "pushsvc", "demo", *args]
        self.output: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.output.append(line)
                self._changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 20) -> None:
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(re.search(pattern, line) for line in self.output), timeout
            )
        assert found, f"no demo log line matching {pattern!r}:\n{self.log}"

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv} still running:\n{self.log}") from None
        self._release()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._release()

    def _release(self) -> None:
        self._pumper.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    @property
    def log(self) -> str:
        return "".join(self.output)

    @property
    def posted(self) -> int:
        """How many events the demo said, as it ended, the server accepted."""
        match = re.search(r"posted (\d+) events", self.log)
        assert match, f"the demo did not say what it posted:\n{self.log}"
        return int(match[1])


class LocalStack:
    """The compose services as local processes, sharing the test's redis-server."""

    def __init__(self, redis_server: RedisServer, prefix: str) -> None:
        self.services = services()
        self.prefix = prefix
        # (compose service, port inside its container) → where that is locally
        self.addresses = {("redis", 6379): f"127.0.0.1:{redis_server.port}"}
        self.procs: dict[str, PushsvcProcess] = {}
        self.demos: list[DemoProcess] = []

    def env(self, name: str) -> dict[str, str]:
        service = self.services[name]
        env = {key: self._localize(value) for key, value in environment(service).items()}
        # Prepended, not replaced: services the compose file gives different prefixes stay apart.
        env["PUSHSVC_PREFIX"] = self.prefix + env.get("PUSHSVC_PREFIX", "pushsvc:")
        if service.get("ports"):
            env |= {"PUSHSVC_HOST": "127.0.0.1", "PUSHSVC_PORT": "0"}
        return env

    def _localize(self, value: str) -> str:
        def local(match: re.Match[str]) -> str:
            key = (match[1], int(match[2]))
            assert key in self.addresses, f"{match[0]} is not a started service's port"
            return "//" + self.addresses[key]

        return _SERVICE_ADDRESS.sub(local, value)

    def start(self, *names: str) -> None:
        """Start `names` and what they depend on, in dependency order."""
        wanted = set(names)
        for name in names:
            wanted |= set(_transitive_deps(self.services, name))
        for name in start_order(self.services):
            if name in wanted and name not in self.procs and name != "redis":
                self._start_pushsvc(name)

    def _start_pushsvc(self, name: str) -> None:
        service = self.services[name]
        program, command, *args = container_argv(service)
        assert program == "pushsvc", f"{name} does not run the pushsvc entrypoint"
        # start() returns once a web is listening or an aggregator is running, which is
        # what service_healthy / service_started wait for in compose.
        proc = PushsvcProcess(command, *args, env=self.env(name), http=bool(service.get("ports")))
        self.procs[name] = proc.start()
        if proc.http:
            self.addresses[(name, container_port(service))] = f"127.0.0.1:{proc.port}"

    def demo(self, count: int, seed: int) -> DemoProcess:
        program, command, *args = container_argv(self.services["demo"])
        assert [program, command] == ["pushsvc", "demo"], "the demo runs `pushsvc demo`"
        demo = DemoProcess(*args, "--count", str(count), "--seed", str(seed), env=self.env("demo"))
        self.demos.append(demo)
        return demo

    def demo_events(self, count: int, seed: int) -> list[DemoEvent]:
        """The events `demo(count, seed)` posts, in order: the first `count` of the scenario the
        compose file's settings make (it sets the start, so the day is the same whenever)."""
        env = environment(self.services["demo"])
        clock = SimClock(
            parse_time_of_day(env["PUSHSVC_DEMO_START"]), float(env["PUSHSVC_DEMO_SPEED"])
        )
        prefix = env.get("PUSHSVC_DEMO_PREFIX", "")
        scenario = Scenario(clock, float(env["PUSHSVC_DEMO_RATE"]), seed, prefix)
        events = list(islice(scenario.events(), count))
        assert {event.topic for event in events} <= set(topic_names(prefix))
        return events

    def stop(self) -> None:
        for demo in self.demos:
            demo.kill()  # it would retry forever once web1 is gone
        for proc in reversed(self.procs.values()):
            proc.stop()


def _transitive_deps(all_services: Mapping[str, Mapping[str, Any]], name: str) -> list[str]:
    deps = list(depends_on(all_services[name]))
    return deps + [d for dep in deps for d in _transitive_deps(all_services, dep)]


def event_updates(stream: SSEClient, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The next `n` updates caused by events (tick updates may come in between)."""
    updates: list[tuple[str, dict[str, Any]]] = []
    while len(updates) < n:
        update_id, update = stream.next_data(timeout=15)
        if update["reason"] == "event":
            updates.append((update_id, update))
    return updates


def widest_window(update: Mapping[str, Any]) -> dict[str, Any]:
    label = max(update["windows"], key=parse_duration_us)
    return dict(update["windows"][label])


def assert_streamed(
    updates: Sequence[tuple[str, Mapping[str, Any]]], events: Sequence[DemoEvent]
) -> None:
    """`updates` (a stream's, as they came) are `events` (what the demo posted): one update per
    event, distinct ids, each topic's events in the order posted, and each topic's widest
    window counting them one by one (nothing missed, nothing twice, from a topic's first)."""
    assert len({update_id for update_id, _ in updates}) == len(updates) == len(events)
    for topic in {event.topic for event in events}:
        posted = [(event.value, event.tags) for event in events if event.topic == topic]
        streamed = [u for _, u in updates if u["topic"] == topic]
        assert [(u["event"]["value"], u["event"]["tags"]) for u in streamed] == posted, topic
        counts = [widest_window(u)["count"] for u in streamed]
        assert counts == list(range(1, len(posted) + 1)), (topic, counts)


def demo_ended(demo: DemoProcess, count: int) -> None:
    """The demo exited 0 having posted `count` events, none dropped as too late."""
    assert demo.wait() == 0, demo.log
    assert demo.posted == count, demo.log
    assert "dropped" not in demo.log, demo.log


def holds_lease(aggregator: PushsvcProcess) -> bool:
    took = [line for line in aggregator.output if re.search(r"(took|lost) the lease", line)]
    return bool(took) and "took" in took[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- the compose file itself


def test_compose_file_runs_one_image_wired_by_service_names() -> None:
    """What only Docker would notice: the local runs below replace hosts and ports."""
    assert "${" not in json.dumps(compose()), "every variable in the compose file has a default"
    all_services = services()
    assert set(all_services) == {"redis", *PUSHSVC_SERVICES}
    assert str(all_services["redis"]["image"]).startswith("redis:7")
    builds = {json.dumps(all_services[name].get("build")) for name in PUSHSVC_SERVICES}
    images = {all_services[name].get("image") for name in PUSHSVC_SERVICES}
    assert len(builds) == len(images) == 1 and builds != {"null"}, "one image built for all"

    host_ports = []
    for name in ("web1", "web2"):
        service = all_services[name]
        assert environment(service)["PUSHSVC_HOST"] == "0.0.0.0"
        port = container_port(service)
        [mapping] = service["ports"]
        host, inside = str(mapping).rsplit(":", 1)
        assert int(inside) == port
        host_ports.append(host)
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert len(set(host_ports)) == 2

    listening = {(n, container_port(s)) for n, s in all_services.items() if s.get("ports")}
    listening.add(("redis", 6379))
    for name in PUSHSVC_SERVICES:
        deps = depends_on(all_services[name])
        assert set(deps) <= set(all_services)
        for value in environment(all_services[name]).values():
            for host, port in _SERVICE_ADDRESS.findall(value):
                assert (host, int(port)) in listening, f"{name}: nothing listens on {host}:{port}"
                assert host in deps, f"{name} uses {host} but does not depend on it"
    assert depends_on(all_services["demo"])["web1"] == "service_healthy"
    start_order(all_services)  # no cycle


# ---------------------------------------------------------------- the stack, locally


@pytest.fixture
def stack(redis_server: RedisServer, prefix: str) -> Iterator[LocalStack]:
    local = LocalStack(redis_server, prefix)
    try:
        local.start("web1", "web2", "aggregator", "aggregator-standby")
        # Up means updates flow: until an aggregator holds the lease, events are consumed
        # silently (by design, see lease.py).
        aggregators = [local.procs["aggregator"], local.procs["aggregator-standby"]]
        wait_until(lambda: any(holds_lease(p) for p in aggregators), timeout=20)
        yield local
    finally:
        local.stop()


@pytest.mark.redis
def test_subscriber_on_web2_sees_every_update_the_demo_posts_to_web1(stack: LocalStack) -> None:
    web1, web2 = stack.procs["web1"], stack.procs["web2"]
    count, seed = 60, 1
    events = stack.demo_events(count, seed)
    stream = SSEClient(web2.port, "/stream?topic=*")
    stream.next_data("snapshot")

    demo = stack.demo(count, seed)
    updates = event_updates(stream, count)
    demo_ended(demo, count)

    assert_streamed(updates, events)
    for topic in {event.topic for event in events}:
        last_id = [i for i, u in updates if u["topic"] == topic][-1]
        # web1 serves the same state web2 streamed: both read it from Redis.
        status, _, body = request(web1.port, "GET", f"/topics/{topic}/stats")
        assert status == 200 and json.loads(body)["id"] == last_id
    stream.close()


@pytest.mark.redis
@pytest.mark.slow
def test_standby_aggregator_takes_over_when_the_active_one_dies(stack: LocalStack) -> None:
    aggregators = [stack.procs["aggregator"], stack.procs["aggregator-standby"]]
    lease_s = parse_duration_us(stack.env("aggregator").get("PUSHSVC_LEASE", "5s")) / 1e6
    [active] = [p for p in aggregators if holds_lease(p)]
    [standby] = [p for p in aggregators if p is not active]
    # Enough events for the demo to post on (page views come every second) from before the
    # crash until after the standby took over: ~20 s of them at the compose file's rate.
    count, seed = 160, 2
    events = stack.demo_events(count, seed)
    stream = SSEClient(stack.procs["web2"].port, "/stream?topic=*")
    stream.next_data("snapshot")

    demo = stack.demo(count, seed)
    before = event_updates(stream, 10)  # flowing, through the active aggregator
    active.kill()  # a crash: the lease is not released, it has to expire
    standby.wait_for_log("took the lease", timeout=lease_s + 10)
    # So web1 acknowledged events while no aggregator was active: they waited in the log.
    assert demo.proc.poll() is None, f"the demo ended before the standby took over:\n{demo.log}"
    after = event_updates(stream, count - len(before))
    demo_ended(demo, count)

    # Every event, in order per topic; the counts run on across the crash because the
    # standby's windows were warm: they hold the events from before it too.
    assert_streamed(before + after, events)
    stream.close()


# ---------------------------------------------------------------- the demo producer alone


def test_demo_waits_for_the_server_then_posts_count_events() -> None:
    """What the compose stack's demo does when web1 restarts, or is not up yet."""
    port = free_port()
    demo = DemoProcess(
        "--url", f"http://127.0.0.1:{port}",
        "--start", "12:30", "--speed", "60", "--rate", "50", "--count", "40",
    )  # fmt: skip
    server = None
    try:
        demo.wait_for_log("not ready .* retrying")
        server = PushsvcProcess("serve", "--port", str(port), "--tick", "0").start()
        assert demo.wait() == 0, demo.log
        assert demo.posted == 40
        # Events that fell due while nothing answered were dropped (the server would refuse
        # them as late); what the demo counts as posted is all there.
        counts = {}
        for topic in topic_names():
            status, _, body = request(port, "GET", f"/topics/{topic}/stats")
            counts[topic] = widest_window(json.loads(body))["count"] if status == 200 else 0
        assert sum(counts.values()) == 40, counts
    finally:
        demo.kill()
        if server is not None:
            server.stop()


def test_the_random_walk_waits_for_the_server_then_posts_to_each_topic_in_turn() -> None:
    port = free_port()
    demo = DemoProcess(
        "--url", f"http://127.0.0.1:{port}", "--topics", "d.a,d.b", "--rate", "50", "--count", "6"
    )
    server = None
    try:
        demo.wait_for_log("not ready .* retrying")
        server = PushsvcProcess("serve", "--port", str(port), "--tick", "0").start()
        assert demo.wait() == 0, demo.log
        for topic in ("d.a", "d.b"):
            status, _, body = request(port, "GET", f"/topics/{topic}/stats")
            assert status == 200
            assert widest_window(json.loads(body))["count"] == 3
    finally:
        demo.kill()
        if server is not None:
            server.stop()


def test_demo_exits_cleanly_on_sigterm(server: PushsvcProcess, topic: str) -> None:
    """`docker compose stop` sends SIGTERM (through the container's init)."""
    stream = SSEClient(server.port, f"/stream?topic={topic}.*")
    stream.next_data("snapshot")
    demo = DemoProcess("--url", server.base, "--prefix", f"{topic}.", "--speed", "60")
    try:
        stream.next_data()  # it is posting, and would go on forever
        demo.proc.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=5) == 0, demo.log
        assert "Traceback" not in demo.log
    finally:
        demo.kill()
        stream.close()


def test_demo_stops_with_an_error_when_the_server_rejects_its_events(
    server: PushsvcProcess,
) -> None:
    # A path the server does not know is a 404, which no amount of retrying fixes.
    demo = DemoProcess("--url", f"{server.base}/nowhere", "--count", "1")
    try:
        assert demo.wait(timeout=10) == 1
        assert "HTTP 404" in demo.log
    finally:
        demo.kill()
