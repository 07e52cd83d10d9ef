"""docker-compose.yml's `cluster` profile run for real: pushsvc on a Redis Cluster of three
primaries with a replica each, formed by the one-shot `cluster-init` service.

Run like tests/system/test_docker_stack.py (its daemon fixture, its stand-ins for the base
images, an image built with no network from the host's wheels, a project name and a free port
of its own), but only the cluster's services: `--profile cluster up` names them, or the
default stack would start too. One stack start; `down -v` at the end. The image is the one
test_docker_stack builds, built once a run by whichever module asks first
(`support.docker.image`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.live import SSEClient, request, wait_until
from test_docker_stack import (  # noqa: F401  (docker_daemon is a fixture)
    COMPOSE,
    docker_daemon,
    widest_count,
)

from pushsvc.core.partitions import partition_of
from support.docker import (
    PYTHON_STAND_IN,
    REDIS_STAND_IN,
    ComposeProject,
    DockerDaemon,
    DockerError,
    build_image,
    run,
)
from support.redis_keys import partition_keys

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NODES = tuple(f"redis-node-{i}" for i in range(1, 7))
WEB = "cluster-web"
AGGREGATORS = ("cluster-aggregator-1", "cluster-aggregator-2")
# Naming what to start keeps the default stack's services out; compose adds the dependencies
# (cluster-init, then the six nodes).
STARTED = (WEB, *AGGREGATORS)


class ClusterStack:
    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.config: dict[str, Any] = yaml.safe_load(project("--profile", "cluster", "config"))
        self.port = 0  # the web port Docker published, once up
        env = self.config["services"][WEB]["environment"]
        self.prefix = str(env.get("PUSHSVC_PREFIX", "pushsvc:"))
        self.partitions = int(env["PUSHSVC_PARTITIONS"])

    @property
    def image(self) -> str:
        return str(self.config["services"][WEB]["image"])

    def build(self) -> None:
        """The image, as test_docker_stack builds it (the same, once a run)."""
        build = self.config["services"][WEB]["build"]
        build_image(Path(build.get("context", ".")), self.image, build.get("args", {}))

    def exit_code(self, service: str) -> str:
        inspect = ["docker", "inspect", "--format", "{{.State.ExitCode}}"]
        return run([*inspect, self.project.container(service)]).stdout.strip()

    def wait_until_ready(self, timeout: float = 180) -> None:
        """cluster-init done (exit 0), the web healthy, the aggregators running, and /readyz
        200: every partition's lease held."""

        def up() -> bool:
            try:
                init = self.project.status("cluster-init")
                if init == "exited":
                    assert self.exit_code("cluster-init") == "0", self.project.logs("cluster-init")
                    return self.project.status(WEB) == "healthy" and all(
                        self.project.status(a) == "running" for a in AGGREGATORS
                    )
            except DockerError:  # not created yet
                pass
            return False

        wait_until(up, timeout=timeout, interval=1)

        def ready() -> bool:
            try:
                return request(self.port, "GET", "/readyz")[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, interval=0.5)

    def redis(self, node: str, *command: str) -> str:
        container = self.project.container(node)
        return run(["docker", "exec", container, "redis-cli", *command]).stdout.strip()

    def post(self, topic: str, value: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _, body = request(
                    self.port, "POST", f"/topics/{topic}/events", {"value": value}
                )
            except OSError as exc:
                status, body = 0, str(exc).encode()
            if status == 202:
                return
            assert status in (0, 503), (status, body)
            assert time.monotonic() < deadline, f"no 202 for {topic} in {timeout} s: {body!r}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(
    docker_daemon: DockerDaemon,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterStack]:
    name = f"pushsvc-cluster-test-{uuid.uuid4().hex[:8]}"
    env = {
        "PUSHSVC_PYTHON_IMAGE": PYTHON_STAND_IN.name,
        "PUSHSVC_REDIS_IMAGE": REDIS_STAND_IN.name,
        "PUSHSVC_IMAGE": f"pushsvc-test/pushsvc:{name}",
        # No port: Docker picks a free one as it starts the container
        # (ComposeProject.published_port).
        "CLUSTER_WEB_PORT": "127.0.0.1:",
    }
    stack = ClusterStack(ComposeProject(COMPOSE, name, env))
    try:
        started = time.monotonic()
        stack.build()
        built = time.monotonic()
        stack.project("--profile", "cluster", "up", "-d", "--no-build", *STARTED, timeout=300)
        stack.port = stack.project.published_port(
            WEB, int(stack.config["services"][WEB]["environment"]["PUSHSVC_PORT"])
        )
        stack.wait_until_ready()
        print(f"built in {built - started:.1f} s, up in {time.monotonic() - built:.1f} s")
        yield stack
    finally:
        logs = tmp_path_factory.mktemp("compose-cluster")
        for service in (*NODES, "cluster-init", *STARTED):
            try:
                (logs / f"{service}.log").write_text(stack.project.logs(service))
            except DockerError as exc:
                print(exc)
        print(f"the services' logs: {logs}")
        stack.project(
            "--profile", "cluster", "down", "--volumes", "--remove-orphans", "--timeout", "5"
        )
        run(["docker", "image", "rm", "--force", stack.image], check=False)


def topics_one_per_partition(partitions: int) -> dict[int, str]:
    """A fresh topic in each partition."""
    run_id = uuid.uuid4().hex[:8]
    topics: dict[int, str] = {}
    n = 0
    while len(topics) < partitions:
        topic = f"cluster.{run_id}.{n}"
        topics.setdefault(partition_of(topic, partitions), topic)
        n += 1
    return topics


def test_pushsvc_runs_on_three_primaries_with_a_replica_each(cluster: ClusterStack) -> None:
    # The cluster cluster-init made: three primaries holding every slot, each with a replica.
    nodes = [line.split() for line in cluster.redis(NODES[0], "cluster", "nodes").splitlines()]
    primaries = {n[0]: n for n in nodes if "master" in n[2].split(",")}
    replicas = [n for n in nodes if "slave" in n[2].split(",")]
    assert len(primaries) == 3 and len(replicas) == 3, nodes
    assert sorted(r[3] for r in replicas) == sorted(primaries), "one replica per primary"
    assert all(len(n) > 8 for n in primaries.values()), "every primary holds slots"
    info = cluster.redis(NODES[0], "cluster", "info")
    assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info

    # Events to a topic in every partition, read back once each on one pattern stream.
    topics = topics_one_per_partition(cluster.partitions)
    expected = {topic: [1.0, 2.0] for topic in topics.values()}
    seen: dict[str, list[float]] = {topic: [] for topic in expected}
    run_prefix = next(iter(expected)).rsplit(".", 1)[0]
    with SSEClient(cluster.port, f"/stream?topic={run_prefix}.*", timeout=30) as stream:
        stream.next_data("snapshot")
        for value in (1.0, 2.0):
            for topic in expected:
                cluster.post(topic, value)
        ids: list[str] = []
        while sum(map(len, seen.values())) < 2 * len(expected):
            message = stream.next()
            assert message.event == "stats", f"{message.event}: {message.data}"
            update = json.loads(message.data)
            if update["reason"] == "event":
                seen[update["topic"]].append(update["event"]["value"])
                ids.append(message.id)
    assert seen == expected  # each event exactly once, in order per topic
    assert len(set(ids)) == len(ids)
    for topic in expected:
        status, _, body = request(cluster.port, "GET", f"/topics/{topic}/stats")
        assert status == 200 and widest_count(json.loads(body)) == 2, (topic, body)

    # pushsvc's keys are spread over the primaries: each partition's keys on exactly one,
    # every primary holding some.
    bases = {partition_keys(cluster.prefix, t, cluster.partitions).base for t in expected}
    holders: dict[str, set[str]] = {}
    for node in NODES:
        role = cluster.redis(node, "role").splitlines()[0]
        keys = cluster.redis(node, "--scan", "--pattern", f"{cluster.prefix}*").splitlines()
        if role == "master":
            assert int(cluster.redis(node, "dbsize")) > 0, node
            holders[node] = {b for b in bases if any(k.startswith(b) for k in keys)}
    assert len(holders) == 3, holders
    assert all(holders.values()), f"a primary holds no partition: {holders}"
    held = [b for bs in holders.values() for b in bs]
    assert sorted(held) == sorted(bases), "each partition's keys on one primary"


def test_the_offline_images_command_makes_what_compose_is_given(
    docker_daemon: DockerDaemon,  # noqa: F811
) -> None:
    """deploy/offline-images.sh, the standalone command docs/deploy.md gives where no image
    registry is reachable: the base images (made by the fixture already, so this run finds
    them) and the variables that point compose at them."""
    done = subprocess.run(
        [str(COMPOSE.parent / "deploy" / "offline-images.sh"), "--no-build"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"export PUSHSVC_PYTHON_IMAGE={PYTHON_STAND_IN.name}",
        f"export PUSHSVC_REDIS_IMAGE={REDIS_STAND_IN.name}",
        "export PUSHSVC_IMAGE=pushsvc:latest",
    ]
    assert f"{REDIS_STAND_IN.name}: already made" in done.stderr
    for image in (PYTHON_STAND_IN.name, REDIS_STAND_IN.name):
        run(["docker", "image", "inspect", image])
