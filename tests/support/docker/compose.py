"""One docker-compose project, run as the tests run it."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping
from pathlib import Path

from support.docker.daemon import DockerError, run
from support.host_network import changing_the_network

# The subcommands that start or stop containers, each adding or removing a network interface.
_NETWORK_CHANGING = frozenset({"up", "down", "kill", "restart", "rm", "start", "stop"})


def compose_command() -> list[str]:
    """`docker-compose` (v1, Debian's package) if installed, else the `docker compose` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


class ComposeProject:
    """One compose project: the file, a project name of its own, and its environment."""

    def __init__(self, file: Path, name: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.name = name
        self.env = dict(env)
        self._base = [*compose_command(), "--project-name", name, "--file", str(file)]

    def __call__(self, *args: str, timeout: float = 180) -> str:
        # Not while a browser test runs (support.host_network).
        changing = _subcommand(args) in _NETWORK_CHANGING
        with changing_the_network() if changing else contextlib.nullcontext():
            return run([*self._base, *args], env=self.env, timeout=timeout).stdout

    def container(self, service: str) -> str:
        """The id of the service's (one) container, running or not; DockerError when it has
        none. Found by the labels compose v1 and v2 both set (quicker than `compose ps`)."""
        labels = [
            f"com.docker.compose.project={self.name}",
            f"com.docker.compose.service={service}",
        ]
        filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
        ids = run(["docker", "ps", "--all", "--quiet", *filters]).stdout.split()
        if len(ids) != 1:
            raise DockerError(f"{service}: {len(ids)} containers")
        return ids[0]

    def status(self, service: str) -> str:
        """`healthy`/`unhealthy`/`starting` where the service has a healthcheck, else the
        container's state (`running`, `exited`, …)."""
        status = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        inspect = ["docker", "inspect", "--format", status, self.container(service)]
        return run(inspect).stdout.strip()

    def logs(self, service: str) -> str:
        """What the service's container wrote, stdout and stderr, without compose's prefix."""
        done = run(["docker", "logs", self.container(service)])
        return done.stdout + done.stderr

    def published_port(self, service: str, port: int) -> int:
        """The host port Docker published the service's container `port` on. The tests leave
        the choice to Docker (an address and no port: `127.0.0.1::8000`), which binds it at
        once and tries another when it is taken; a free port picked by the test could be taken
        by any process in the minute the build took (a bind that failed the whole module)."""
        published = run(["docker", "port", self.container(service), f"{port}/tcp"]).stdout
        return int(published.split()[0].rsplit(":", 1)[-1])  # e.g. "127.0.0.1:49153"

    def exec(self, service: str, *argv: str) -> str:
        return self("exec", "-T", service, *argv)

    def volume(self, name: str) -> str:
        """The Docker name of a volume the compose file declares."""
        return f"{self.name}_{name}"


def _subcommand(args: tuple[str, ...]) -> str:
    """The compose subcommand among `args`, after the global options (`--profile P`, ...)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("--profile", "--env-file", "--project-directory") and rest:
            rest.pop(0)  # its value
    return rest[0] if rest else ""
