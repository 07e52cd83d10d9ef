"""docker-compose.yml run for real: the image built from the Dockerfile, every service in a
container, reached through the published ports.

The test machines reach no image registry, so the base images are local stand-ins made from
Debian's packages (support.docker; made once, then kept), handed to the build and to
compose through the file's PUSHSVC_PYTHON_IMAGE / PUSHSVC_REDIS_IMAGE. The pushsvc image is
built with no network, from wheels made on the host. The project has a name of its own, the
image a tag of its own and the web ports are free ones; everything else is the compose file
as users run it. Skipped where no Docker daemon answers and none can be started (set
CI_REQUIRE_DOCKER=1 to fail instead, as CI does).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.live import PARTITION_DETAILS, SSEClient, request, wait_until

from pushsvc.core.durations import parse_duration_us
from pushsvc.demo.scenario import topic_names
from support.docker import (
    PYTHON_STAND_IN,
    REDIS_STAND_IN,
    ComposeProject,
    DockerDaemon,
    DockerError,
    DockerUnavailable,
    build_image,
    ensure_stand_ins,
    run,
)
from support.redis_keys import server_keys

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
REQUIRE_DOCKER_ENV = "CI_REQUIRE_DOCKER"
WEBS = ("web1", "web2")
AGGREGATORS = ("aggregator", "aggregator-standby")
# The compose file starts the demo's day before the lunch rush, when every topic has events
# every few seconds (the rarest, tiramisu ratings, every 5 to 10 s): all are seen well within this.
DEMO_TOPICS_SEEN_S = 60


@pytest.fixture(scope="module")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    try:
        daemon = DockerDaemon.ensure(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
        ensure_stand_ins()
    except DockerUnavailable as exc:
        if os.environ.get(REQUIRE_DOCKER_ENV):
            pytest.fail(f"{REQUIRE_DOCKER_ENV} is set, but: {exc}")
        pytest.skip(f"no Docker here: {exc}")
    try:
        yield daemon
    finally:
        daemon.stop()  # only if started here


class Stack:
    """The compose project, built and up, with the test's view of it."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.config: dict[str, Any] = yaml.safe_load(project("config"))
        self.ports: dict[str, int] = {}  # the web ports Docker published, once up
        aggregator_env = self.config["services"]["aggregator"]["environment"]
        self.prefix = str(aggregator_env.get("PUSHSVC_PREFIX", "pushsvc:"))
        self.lease_s = parse_duration_us(str(aggregator_env.get("PUSHSVC_LEASE", "5s"))) / 1e6
        demo_env = self.config["services"]["demo"]["environment"]
        self.demo_prefix = str(demo_env.get("PUSHSVC_DEMO_PREFIX", ""))

    @property
    def image(self) -> str:
        return str(self.config["services"]["web1"]["image"])

    def published(self, web: str) -> int:
        """The host port of a web service's container port (its PUSHSVC_PORT)."""
        port = int(self.config["services"][web]["environment"]["PUSHSVC_PORT"])
        return self.project.published_port(web, port)

    def build(self) -> None:
        """What `docker-compose build` does, with no network and the host's wheels (once a
        run: `support.docker.image`)."""
        build = self.config["services"]["web1"]["build"]
        build_image(Path(build.get("context", ".")), self.image, build.get("args", {}))

    def wait_until_up(self, timeout: float = 90) -> None:
        """Every service up (healthy, where it has a healthcheck) and an aggregator active."""
        expected = {"redis": "healthy", **dict.fromkeys(WEBS, "healthy")}
        expected |= dict.fromkeys((*AGGREGATORS, "demo"), "running")

        def up() -> bool:
            return all(self.project.status(name) == want for name, want in expected.items())

        wait_until(up, timeout=timeout, interval=0.5)
        wait_until(lambda: self.active_aggregator() is not None, timeout=self.lease_s * 3)

    def wait_until_ready(self, timeout: float = 30) -> None:
        """Both web processes ready: Redis answers them and an aggregator holds the lease."""

        def ready() -> bool:
            try:
                return all(
                    request(port, "GET", "/readyz")[0] == 200 for port in self.ports.values()
                )
            except OSError:
                return False

        wait_until(ready, timeout=timeout, interval=0.2)

    @property
    def lease_key(self) -> str:
        return server_keys(self.prefix).partition(0).lease  # the compose file keeps 16 partitions

    def redis(self, *command: str) -> str:
        """A redis-cli command in the Redis container (its port is not published)."""
        return run(
            ["docker", "exec", self.project.container("redis"), "redis-cli", *command]
        ).stdout.strip()

    def active_aggregator(self) -> str | None:
        """The aggregator service that said last that it took the shard's lease, and runs."""
        key = self.lease_key
        holders = []
        for service in AGGREGATORS:
            if self.project.status(service) != "running":
                continue
            said = [line for line in self.project.logs(service).splitlines() if key in line]
            if said and f"took the lease {key}" in said[-1]:
                holders.append(service)
        return holders[0] if len(holders) == 1 else None

    def post(self, topic: str, value: float, timeout: float = 30) -> None:
        """POST one event to web1 until it is acknowledged (202); 503s are retried."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _, body = request(
                    self.ports["web1"], "POST", f"/topics/{topic}/events", {"value": value}
                )
            except OSError as exc:
                status, body = 0, str(exc).encode()
            if status == 202:
                return
            assert status in (0, 503), (status, body)
            assert time.monotonic() < deadline, f"no 202 for {topic} in {timeout} s: {body!r}"
            time.sleep(0.2)

    def stream(self, topic: str, last_event_id: str | None = None) -> SSEClient:
        """An SSE stream of `topic` on web2, through its published port."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return SSEClient(self.ports["web2"], f"/topics/{topic}/stream", headers, timeout=30)

    def post_and_see(self, topic: str, value: float) -> str:
        """POST `value` to web1 and await its update on web2: the update's id."""
        with self.stream(topic) as stream:
            stream.next_data("snapshot")
            self.post(topic, value)
            [(update_id, _)] = event_updates(stream, 1)
        return update_id


@pytest.fixture(scope="module")
def stack(docker_daemon: DockerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = f"pushsvc-test-{uuid.uuid4().hex[:8]}"
    env = {
        "PUSHSVC_PYTHON_IMAGE": PYTHON_STAND_IN.name,
        "PUSHSVC_REDIS_IMAGE": REDIS_STAND_IN.name,
        "PUSHSVC_IMAGE": f"pushsvc-test/pushsvc:{name}",
        # Loopback only: nothing here is for another host. No port: Docker picks free ones
        # as it starts the containers (ComposeProject.published_port).
        "PUSHSVC_WEB1_PORT": "127.0.0.1:",
        "PUSHSVC_WEB2_PORT": "127.0.0.1:",
        # Each partition's lease taken or given up, a line of its own: `active_aggregator`.
        "PUSHSVC_LOG_LEVEL": PARTITION_DETAILS,
    }
    stack = Stack(ComposeProject(COMPOSE, name, env))
    try:
        started = time.monotonic()
        stack.build()
        built = time.monotonic()
        stack.project("up", "-d", "--no-build")
        stack.ports = {web: stack.published(web) for web in WEBS}
        stack.wait_until_up()
        stack.wait_until_ready()
        print(f"built in {built - started:.1f} s, up in {time.monotonic() - built:.1f} s")
        yield stack
    finally:
        logs = tmp_path_factory.mktemp("compose")
        for service in stack.config["services"]:
            try:
                (logs / f"{service}.log").write_text(stack.project.logs(service))
            except DockerError as exc:
                print(exc)
        print(f"the services' logs: {logs}")
        stack.project("down", "--volumes", "--remove-orphans", "--timeout", "5")
        run(["docker", "image", "rm", "--force", stack.image], check=False)


def event_updates(stream: SSEClient, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The next `n` updates caused by events, skipping idle ticks; no snapshot on the way."""
    updates: list[tuple[str, dict[str, Any]]] = []
    while len(updates) < n:
        message = stream.next()
        assert message.event == "stats", f"{message.event}: {message.data}"
        update = json.loads(message.data)
        if update["reason"] == "event":
            updates.append((message.id, update))
    return updates


def widest_count(update: dict[str, Any]) -> int:
    label = max(update["windows"], key=parse_duration_us)
    return int(update["windows"][label]["count"])


def assert_exactly(updates: list[tuple[str, dict[str, Any]]], values: list[float]) -> None:
    """One update per value, in order, with strictly increasing ids and counts."""
    assert [u["event"]["value"] for _, u in updates] == values
    ids = [i for i, _ in updates]
    assert len(set(ids)) == len(ids)
    counts = [widest_count(u) for _, u in updates]
    assert counts == list(range(counts[0], counts[0] + len(values)))


def new_topic() -> str:
    return f"docker.{uuid.uuid4().hex[:10]}"


def test_web2_streams_the_demo_and_what_is_posted_to_web1(stack: Stack) -> None:
    # The restaurant and the shop, as a dashboard on web2 watches them: every topic live.
    prefix = stack.demo_prefix
    demo_topics = set(topic_names(prefix))
    path = f"/stream?topic={prefix}restaurant.*&topic={prefix}shop.*"
    seen: set[str] = set()
    with SSEClient(stack.ports["web2"], path, timeout=30) as demo:
        demo.next_data("snapshot")
        deadline = time.monotonic() + DEMO_TOPICS_SEEN_S
        while seen != demo_topics:
            missing = sorted(demo_topics - seen)
            assert time.monotonic() < deadline, f"no update in {DEMO_TOPICS_SEEN_S} s: {missing}"
            _, update = demo.next_data()
            assert update["topic"] in demo_topics, update["topic"]
            if update["reason"] == "event":
                seen.add(update["topic"])
    print(f"every demo topic seen in {time.monotonic() - deadline + DEMO_TOPICS_SEEN_S:.1f} s")

    topic = new_topic()
    with stack.stream(topic) as stream:
        stream.next_data("snapshot")
        for value in (1, 2, 3):
            stack.post(topic, value)
        assert_exactly(event_updates(stream, 3), [1, 2, 3])
    status, _, body = request(stack.ports["web1"], "GET", f"/topics/{topic}/stats")
    assert status == 200 and widest_count(json.loads(body)) == 3


def test_standby_takes_over_from_a_killed_aggregator_and_nothing_acknowledged_is_lost(
    stack: Stack,
) -> None:
    active = stack.active_aggregator()
    assert active is not None
    [standby] = [service for service in AGGREGATORS if service != active]
    topic = new_topic()
    with stack.stream(topic) as stream:
        stream.next_data("snapshot")
        for value in range(1, 4):
            stack.post(topic, value)
        [*_, (last_id, _)] = event_updates(stream, 3)

    token = stack.redis("GET", stack.lease_key)
    assert token, "the active aggregator holds the lease in Redis"
    stack.project("kill", active)  # SIGKILL: the lease is not given up, it has to expire
    killed = time.monotonic()
    for value in range(4, 7):  # acknowledged while no aggregator is active: they wait in the log
        stack.post(topic, value)
    wait_until(
        lambda: stack.active_aggregator() == standby, timeout=stack.lease_s * 2 + 10, interval=0.2
    )
    took_over_s = time.monotonic() - killed
    assert stack.redis("GET", stack.lease_key) not in ("", token)  # the standby's token now
    # The lease expires within its time to live; the standby tries every third of it.
    assert took_over_s < stack.lease_s * 4 / 3 + 2, took_over_s
    for value in range(7, 10):
        stack.post(topic, value)

    with stack.stream(topic, last_event_id=last_id) as resumed:
        updates = event_updates(resumed, 6)
    assert_exactly(updates, [4, 5, 6, 7, 8, 9])
    assert widest_count(updates[-1][1]) == 9  # the standby's windows were warm


def test_a_restarted_redis_keeps_every_acknowledged_event(stack: Stack) -> None:
    topic = new_topic()
    last_id = stack.post_and_see(topic, 1)
    stack.post(topic, 2)  # acknowledged; Redis goes down right after
    stack.project("restart", "redis")
    stack.wait_until_ready()
    stack.post(topic, 3)

    with stack.stream(topic, last_event_id=last_id) as resumed:
        updates = event_updates(resumed, 2)
    assert_exactly(updates, [2, 3])
    assert widest_count(updates[-1][1]) == 3  # the windows carry on as if nothing happened


def test_a_redis_that_lost_its_data_is_signalled_as_a_gap(stack: Stack) -> None:
    topic = new_topic()
    last_id = stack.post_and_see(topic, 1)

    # What `docker compose down -v` does to Redis: the container and its volume go.
    stack.project("rm", "--stop", "--force", "-v", "redis")
    run(["docker", "volume", "rm", stack.project.volume("redis-data")])
    stack.project("up", "-d", "--no-build", "redis")
    stack.wait_until_ready()

    with stack.stream(topic, last_event_id=last_id) as resumed:
        first = resumed.next()
        assert first.event == "snapshot" and json.loads(first.data)["gap"] is True, first
        stack.post(topic, 2)  # the stack works on: a new event reaches the resumed stream
        [(_, update)] = event_updates(resumed, 1)
        assert update["event"]["value"] == 2
