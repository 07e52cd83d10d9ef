"""docker-compose.yml read as Docker would (tests/system/test_docker_stack.py runs it for real), and
the demo producer its `demo` service runs, against a local server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from harness.live import SRC, PushsvcProcess, SSEClient, request
from harness.net import free_port

from pushsvc.cli import main as pushsvc_cli
from pushsvc.core.durations import parse_duration_us
from pushsvc.demo.scenario import topic_names

ROOT = Path(__file__).resolve().parents[2]
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
    """The services `docker compose up` starts: those under a profile (`cluster`, run by
    tests/system/test_docker_cluster.py) only start when it is named."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if not service.get("profiles")
    }


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


# ---------------------------------------------------------------- the demo, as a process


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


def widest_window(update: Mapping[str, Any]) -> dict[str, Any]:
    label = max(update["windows"], key=parse_duration_us)
    return dict(update["windows"][label])


# ---------------------------------------------------------------- the compose file itself


def test_compose_file_runs_one_image_wired_by_service_names() -> None:
    """The wiring, checked without Docker: one image, every address a service uses is one
    that listens and that it depends on, and every pushsvc service runs a real command."""
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
    for name in PUSHSVC_SERVICES:
        program, command, *_ = container_argv(all_services[name])
        assert program == "pushsvc" and command in pushsvc_cli.commands, (name, command)


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
