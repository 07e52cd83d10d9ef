"""Docker for tests: a daemon, local stand-ins for the base images, wheels, a compose project.

The test machines reach Debian's, PyPI's and npm's registries but no image registry, so the
base images the Dockerfile and docker-compose.yml name by default (`python:3.11-slim`,
`redis:7`) cannot be pulled there. `ensure_stand_ins()` makes local ones from Debian's
packages instead (`debootstrap --variant=minbase bookworm`, then `docker import`), under
names of their own, which the test hands to the build and to compose through
`PUSHSVC_PYTHON_IMAGE` / `PUSHSVC_REDIS_IMAGE`. They stay in Docker between runs and are
made again only when their recipe changes. Nothing here pulls or pushes an image.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pushsvc.children import terminate

# The Debian release the stand-ins come from: CPython 3.11 and Redis 7.0, like the
# official images they stand in for.
SUITE = "bookworm"
# Where the Debian mirror comes from when the apt sources are not the place (see debian_mirror).
MIRROR_ENV = "PUSHSVC_TEST_DEBIAN_MIRROR"
# The label that records which recipe made a stand-in, so a changed recipe makes it again.
RECIPE_LABEL = "io.pushsvc.test.stand-in-recipe"


class DockerUnavailable(Exception):
    """No Docker daemon answers and none could be started here; the message says why."""


class DockerError(Exception):
    """A docker, docker-compose or debootstrap command failed; the message has its output."""


def run(
    argv: Sequence[str],
    *,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end and capture its output as text; DockerError when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env} if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DockerError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from None
    except FileNotFoundError as exc:
        raise DockerError(f"{argv[0]}: not found ({exc})") from None
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise DockerError(f"{' '.join(argv)} exited with {done.returncode}:\n{output[-4000:]}")
    return done


# ---------------------------------------------------------------- the daemon


def daemon_answers() -> bool:
    """Whether a Docker daemon answers the `docker` client."""
    if shutil.which("docker") is None:
        return False
    return run(["docker", "info"], timeout=30, check=False).returncode == 0


class DockerDaemon:
    """The daemon the tests talk to: one already running, or one started by `ensure()`.

    `stop()` stops only a daemon this object started.
    """

    def __init__(self, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None):
        self.proc = proc
        self.log = log

    @classmethod
    def ensure(cls, log: Path, timeout: float = 60) -> DockerDaemon:
        """The running daemon, else `dockerd` started in the background (root only).

        Raises DockerUnavailable, saying why, when neither can be had.
        """
        if shutil.which("docker") is None:
            raise DockerUnavailable("no docker client on PATH (Debian: apt-get install docker.io)")
        if daemon_answers():
            return cls()
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerUnavailable(
                "no Docker daemon answers and there is no dockerd to start "
                "(Debian: apt-get install docker.io)"
            )
        if os.geteuid() != 0:
            raise DockerUnavailable("no Docker daemon answers, and only root can start dockerd")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [dockerd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches the tests, which take their containers down, not the daemon.
                start_new_session=True,
            )
        daemon = cls(proc, log)
        deadline = time.monotonic() + timeout
        while not daemon_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                daemon.stop()
                raise DockerUnavailable(f"dockerd did not start:\n{daemon.log_tail()}")
            time.sleep(0.5)
        return daemon

    def log_tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=30)
            self.proc = None


# ---------------------------------------------------------------- the base images


def apt_source_entries(etc_apt: Path = Path("/etc/apt")) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of every enabled `deb` entry, one-line `.list` and deb822 `.sources`."""
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            suites = fields.get("suites", "").split()
            for uri in fields.get("uris", "").split():
                yield uri, suites


def debian_mirror(
    etc_apt: Path = Path("/etc/apt"), lists: Path = Path("/var/lib/apt/lists")
) -> str:
    """The Debian archive this machine's apt uses, for debootstrap.

    $PUSHSVC_TEST_DEBIAN_MIRROR wins. Otherwise the first apt source whose release file,
    as apt last fetched it, says `Origin: Debian` and `Label: Debian` (the main archive: not
    security, not a third-party repository).
    """
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV]
    for uri, suites in apt_source_entries(etc_apt):
        for suite in suites:
            # apt names its lists after the URI without its scheme, "/" turned into "_".
            stem = re.sub(r"^[a-z+]+://", "", uri).rstrip("/").replace("/", "_")
            for name in ("InRelease", "Release"):
                release = lists / f"{stem}_dists_{suite}_{name}"
                if release.is_file() and _is_debian_archive(release.read_text(errors="replace")):
                    return uri
    raise DockerError(
        f"no Debian archive among the apt sources in {etc_apt} (run apt-get update, or set "
        f"{MIRROR_ENV} to a Debian mirror's URL)"
    )


def _is_debian_archive(release: str) -> bool:
    fields = dict(re.findall(r"^(Origin|Label): *(.*?)\s*$", release, re.MULTILINE))
    return fields.get("Origin") == "Debian" and fields.get("Label") == "Debian"


# What the official redis image's entrypoint does that matters here: a first argument that
# is an option or a config file means redis-server; the server runs as the redis user in
# /data; and protected mode is off unless a config file turns it on (the official image
# builds Redis with that default, since a container's port is only reachable where it is
# published). Without the last, every other container is refused.
_REDIS_ENTRYPOINT = """\
#!/bin/sh
# Stand-in for the official redis image's docker-entrypoint.sh (pushsvc's tests only).
set -e
case "$1" in
    -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
    shift
    case "$1" in
        *.conf) config="$1"; shift; set -- redis-server "$config" --protected-mode no "$@" ;;
        *) set -- redis-server --protected-mode no "$@" ;;
    esac
    if [ "$(id -u)" = 0 ]; then
        find . \\! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
"""


def _prepare_python(rootfs: Path) -> None:
    # The official image's pip installs into its Python; Debian's refuses (PEP 668) unless told.
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)


def _prepare_redis(rootfs: Path) -> None:
    entrypoint = rootfs / "usr/local/bin/docker-entrypoint.sh"
    entrypoint.write_text(_REDIS_ENTRYPOINT)
    entrypoint.chmod(0o755)
    (rootfs / "data").mkdir(exist_ok=True)
    run(["chroot", str(rootfs), "chown", "redis:redis", "/data"])


@dataclass(frozen=True)
class StandIn:
    """A local image standing in for an official one, made from Debian's packages."""

    name: str
    stands_for: str
    packages: tuple[str, ...]
    changes: tuple[str, ...]  # Dockerfile instructions for `docker import --change`
    prepare: Callable[[Path], None]  # adjusts the root file system before the import
    extra: str  # what `prepare` writes, for the recipe digest

    def recipe(self) -> str:
        text = "\n".join([SUITE, *self.packages, *self.changes, self.prepare.__name__, self.extra])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


PYTHON_STAND_IN = StandIn(
    name="pushsvc-test/python:3.11",
    stands_for="python:3.11-slim",
    packages=("python3", "python3-pip", "python-is-python3", "ca-certificates"),
    changes=(
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["python3"]',
    ),
    prepare=_prepare_python,
    extra="",
)
REDIS_STAND_IN = StandIn(
    name="pushsvc-test/redis:7",
    stands_for="redis:7",
    packages=("redis-server",),
    changes=(
        "WORKDIR /data",
        "VOLUME /data",
        'ENTRYPOINT ["docker-entrypoint.sh"]',
        'CMD ["redis-server"]',
        "EXPOSE 6379",
    ),
    prepare=_prepare_redis,
    extra=_REDIS_ENTRYPOINT,
)
STAND_INS = (PYTHON_STAND_IN, REDIS_STAND_IN)


def image_label(image: str, label: str) -> str | None:
    """A label of a local image; None when there is no such image (or label)."""
    template = f'{{{{index .Config.Labels "{label}"}}}}'
    done = run(["docker", "image", "inspect", "--format", template, image], check=False)
    if done.returncode != 0:
        return None
    value = done.stdout.strip()
    return None if value in ("", "<no value>") else value


def ensure_stand_ins(
    stand_ins: Sequence[StandIn] = STAND_INS, *, mirror: str | None = None
) -> list[str]:
    """Make the stand-ins that are missing or from an older recipe; their names are returned.

    Needs root (debootstrap, chroot), `debootstrap` and the Debian mirror apt uses. The first
    run takes a minute or two (the packages are downloaded once for all stand-ins).
    """
    missing = [s for s in stand_ins if image_label(s.name, RECIPE_LABEL) != s.recipe()]
    if not missing:
        return []
    if os.geteuid() != 0:
        names = ", ".join(s.name for s in missing)
        raise DockerUnavailable(f"making {names} needs root (debootstrap, chroot)")
    if shutil.which("debootstrap") is None:
        raise DockerError(
            "debootstrap is needed to make the base images (apt-get install debootstrap)"
        )
    mirror = mirror or debian_mirror()
    with tempfile.TemporaryDirectory(prefix="pushsvc-stand-ins-") as work:
        cache = Path(work, "debs")
        cache.mkdir()
        for stand_in in missing:
            rootfs = Path(work, stand_in.name.replace("/", "_").replace(":", "_"))
            _debootstrap(stand_in.packages, rootfs, cache, mirror)
            stand_in.prepare(rootfs)
            _import(rootfs, stand_in)
            shutil.rmtree(rootfs)
    return [s.name for s in missing]


def _debootstrap(packages: Sequence[str], rootfs: Path, cache: Path, mirror: str) -> None:
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={cache}",
            f"--include={','.join(packages)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        timeout=900,
    )
    # What an image does not need: downloaded packages and package lists.
    for leftover in ("var/cache/apt", "var/lib/apt/lists"):
        for path in (rootfs / leftover).rglob("*"):
            if path.is_file() or path.is_symlink():
                path.unlink()


def _import(rootfs: Path, stand_in: StandIn) -> None:
    changes = [
        *stand_in.changes,
        f"LABEL {RECIPE_LABEL}={stand_in.recipe()}",
        f'LABEL org.opencontainers.image.description="stand-in for {stand_in.stands_for}, '
        f'made by pushsvc tests from Debian {SUITE}"',
    ]
    argv = ["docker", "import", *(arg for c in changes for arg in ("--change", c)), "-"]
    argv.append(stand_in.name)
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
    )
    assert tar.stdout is not None
    try:
        imported = subprocess.run(
            argv, stdin=tar.stdout, capture_output=True, text=True, check=False
        )
    finally:
        tar.stdout.close()
        tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        raise DockerError(f"docker import {stand_in.name} failed:\n{imported.stderr}")


# ---------------------------------------------------------------- the project's wheels

# Run in the base image (which has pip, as the Dockerfile needs): what pip there would
# match wheels and evaluate requirement markers against.
_TARGET_PROBE = """
import json
from pip._vendor.packaging import markers, tags
print(json.dumps({
    "interpreter": tags.interpreter_name() + tags.interpreter_version(),
    "markers": markers.default_environment(),
    "platforms": list(tags.platform_tags()),
}))
"""


@dataclass(frozen=True)
class PythonTarget:
    """The interpreter of an image, as pip inside it sees it."""

    interpreter: str  # e.g. cp311
    markers: dict[str, str]  # PEP 508 marker environment
    platforms: list[str]  # e.g. manylinux_2_36_x86_64 ... linux_x86_64

    @classmethod
    def of_image(cls, image: str) -> PythonTarget:
        probe = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3"]
        found = json.loads(run([*probe, image, "-c", _TARGET_PROBE], timeout=60).stdout)
        return cls(found["interpreter"], found["markers"], found["platforms"])

    def pip_args(self) -> list[str]:
        """`pip download` options that pick wheels for this interpreter, not the host's."""
        args = ["--only-binary=:all:", "--implementation", self.interpreter[:2]]
        args += ["--python-version", self.markers["python_full_version"]]
        args += ["--abi", self.interpreter, "--abi", "abi3", "--abi", "none"]
        return args + [arg for tag in self.platforms for arg in ("--platform", tag)]


def build_wheels(project: Path, dest: Path, target: PythonTarget) -> list[Path]:
    """Wheels of `project` and of every dependency it has on `target`, into `dest`.

    For a build with no network (the Dockerfile's WHEELS argument). The project's own wheel
    is built here; its dependencies are downloaded from wherever this machine's pip finds
    them (PyPI, or its configured indexes), binary wheels only, for the image's interpreter
    and platform whatever the host runs. pip evaluates requirement markers against the host's
    Python even then, so the requirements the image's Python needs beyond those (e.g.
    `python_full_version < "3.11.3"`) are fetched in further rounds.
    """
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(project)])
    wanted = [str(newest) for newest in sorted(dest.glob("pushsvc-*.whl"))[-1:]]
    for _ in range(10):
        download = [*pip, "download", "--quiet", *target.pip_args(), "--dest", str(dest)]
        run([*download, *wanted], timeout=600)
        wanted = missing_requirements(dest, target.markers)
        if not wanted:
            return sorted(dest.glob("*.whl"))
    raise DockerError(f"wheels for {target.interpreter}: still missing {wanted}")


def missing_requirements(wheels: Path, environment: Mapping[str, str]) -> list[str]:
    """Requirements of the wheels in `wheels`, on `environment`, that no wheel there meets."""
    have: dict[str, str] = {}
    requires: list[Requirement] = []
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            metadata = email.parser.Parser().parsestr(archive.read(name).decode())
        have[canonicalize_name(metadata["Name"])] = metadata["Version"]
        requires += [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    missing = set()
    for requirement in requires:
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        version = have.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            requirement.marker = None
            missing.add(str(requirement))
    return sorted(missing)


# ---------------------------------------------------------------- compose


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

    def exec(self, service: str, *argv: str) -> str:
        return self("exec", "-T", service, *argv)

    def volume(self, name: str) -> str:
        """The Docker name of a volume the compose file declares."""
        return f"{self.name}_{name}"
