"""Local stand-ins for the base images, made from Debian's packages (see the package's
docstring)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from support.docker.daemon import DockerError, DockerUnavailable, run

# The Debian release the stand-ins come from: CPython 3.11 and Redis 7.0, like the
# official images they stand in for.
SUITE = "bookworm"
# Where the Debian mirror comes from when the apt sources are not the place (see debian_mirror).
MIRROR_ENV = "TEST_PUSHSVC_DEBIAN_MIRROR"
# The label that records which recipe made a stand-in, so a changed recipe makes it again.
RECIPE_LABEL = "io.pushsvc.test.stand-in-recipe"


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

    $TEST_PUSHSVC_DEBIAN_MIRROR wins. Otherwise the first apt source whose release file,
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

    def recipe(self, made_with: Sequence[StandIn]) -> str:
        """A digest of what makes this image: its own changes, and the root file system it
        shares with `made_with` (every package and preparation of theirs)."""
        shared = [(*s.packages, s.prepare.__name__, s.extra) for s in made_with]
        text = "\n".join([SUITE, repr(shared), *self.changes])
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


LOCK = Path(tempfile.gettempdir(), "pushsvc-test-stand-ins.lock")
"""Held while the stand-ins are checked and made (see `ensure_stand_ins`)."""


@contextlib.contextmanager
def _made_by_one() -> Iterator[None]:
    """The machine's lock on making the stand-ins. Docker's images are the machine's, and the
    two Docker test modules may start on two workers at once (or two checkouts' suites on
    one machine): each would find the images missing and make them, two debootstraps of
    each. The second waits, and finds them made."""
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_stand_ins(
    stand_ins: Sequence[StandIn] = STAND_INS, *, mirror: str | None = None
) -> list[str]:
    """Make the stand-ins that are missing or from an older recipe; their names are returned.

    Needs root (debootstrap, chroot), `debootstrap` and the Debian mirror apt uses. The first
    run takes a minute or so. One process at a time on a machine: another that is making them
    is waited for.
    """
    with _made_by_one():
        return _ensure(stand_ins, mirror)


def _ensure(stand_ins: Sequence[StandIn], mirror: str | None) -> list[str]:
    missing = [s for s in stand_ins if image_label(s.name, RECIPE_LABEL) != s.recipe(stand_ins)]
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
        # One root file system for all of them: each debootstrap unpacks and configures
        # Debian's base anew (25 of the 75 s that two took on a 2-core VM), and an image
        # holding the other's few packages as well stands in just as well.
        rootfs = Path(work, "rootfs")
        packages = sorted({package for s in stand_ins for package in s.packages})
        _debootstrap(packages, rootfs, mirror)
        for stand_in in stand_ins:
            stand_in.prepare(rootfs)
        for stand_in in missing:
            _import(rootfs, stand_in, stand_in.recipe(stand_ins))
    return [s.name for s in missing]


def _debootstrap(packages: Sequence[str], rootfs: Path, mirror: str) -> None:
    run(
        [
            "debootstrap",
            "--variant=minbase",
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


def _import(rootfs: Path, stand_in: StandIn, recipe: str) -> None:
    changes = [
        *stand_in.changes,
        f"LABEL {RECIPE_LABEL}={recipe}",
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
