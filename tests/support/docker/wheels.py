"""The project's wheels for an image's interpreter, so the image builds with no network."""

from __future__ import annotations

import contextlib
import email.parser
import fcntl
import hashlib
import json
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support.docker.daemon import DockerError, run

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
    with _building(project):
        run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(project)])
    wanted = [str(newest) for newest in sorted(dest.glob("pushsvc-*.whl"))[-1:]]
    for _ in range(10):
        download = [*pip, "download", "--quiet", *target.pip_args(), "--dest", str(dest)]
        run([*download, *wanted], timeout=600)
        wanted = missing_requirements(dest, target.markers)
        if not wanted:
            return sorted(dest.glob("*.whl"))
    raise DockerError(f"wheels for {target.interpreter}: still missing {wanted}")


def _building(project: Path) -> contextlib.AbstractContextManager[None]:
    """The machine's lock on building `project`'s wheel. pip builds it in the tree (its
    `build/` and `src/*.egg-info`), and the two Docker test modules may build it at once on
    two workers: one's build then deletes files under the other's (`[Errno 2] No such file
    or directory` while copying the egg-info)."""
    digest = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:16]
    return machine_lock(f"pushsvc-test-wheel-{digest}")


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """An exclusive lock of this machine's, held by one process (any test worker) at a time."""
    with Path(tempfile.gettempdir(), f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
