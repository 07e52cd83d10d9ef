"""pushsvc's image as the Docker tests build it: the Dockerfile with no network, pip taking the
host's wheels (`WHEELS`), from a copy of what `.dockerignore` lets into the build context.

The two Docker test modules run on two workers, often at once, and build the same image from
the same inputs: about 25 s each on a 2-core machine. The first build of a test run is kept
under a tag named after the run and a digest of its inputs (the files, the base image, the
build arguments); a later build of that run with the same inputs, on any worker, tags that
image instead of building it again, as Docker's own layer cache would if the wheels were
byte-identical from one build to the next (they are not: each carries its build time). The
key holds the run's id, so every run builds once: wheels of newer dependency releases, or a
changed tree, are never hidden by an image of an earlier run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from support.docker.daemon import run
from support.docker.wheels import PythonTarget, build_wheels, machine_lock

__all__ = ["BUILT", "WHEELS", "build_image", "built_image"]

WHEELS = "docker-wheels"
"""The wheels' directory in the build context (the Dockerfile's WHEELS argument)."""
BUILT = "pushsvc-test/pushsvc-built"
"""The repository of the images kept for the rest of a run."""
# What .dockerignore lets into the build context (besides the wheels).
_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "src")


def build_image(source: Path, tag: str, args: Mapping[str, str]) -> None:
    """Tag `tag` with the image `built_image` makes: built once per test run and set of
    inputs, whichever worker asks first."""
    with machine_lock("pushsvc-test-image"):
        kept = f"{BUILT}:{_digest(source, args)}"
        if not _exists(kept):
            built_image(source, kept, args)
            _forget_all_but(kept)
        run(["docker", "tag", kept, tag])


def built_image(source: Path, tag: str, args: Mapping[str, str]) -> None:
    """Build the Dockerfile in `source` as `tag` with `args` (PYTHON_IMAGE among them), no
    network and the host's wheels, from a copy of its build context."""
    args = {**args, "WHEELS": WHEELS}
    with tempfile.TemporaryDirectory(prefix="pushsvc-image-") as context:
        _copy_inputs(source, Path(context))
        build_wheels(source, Path(context) / WHEELS, PythonTarget.of_image(args["PYTHON_IMAGE"]))
        argv = ["docker", "build", "--network", "none", "--force-rm", "--tag", tag]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        run([*argv, context], timeout=900)


def _digest(source: Path, args: Mapping[str, str]) -> str:
    """The run's id and the inputs' digest: the files, the base image's id, the arguments."""
    digest = hashlib.sha256()
    for relative in _input_files(source):
        digest.update(f"{relative}\0".encode())
        digest.update(hashlib.sha256((source / relative).read_bytes()).digest())
    base = run(["docker", "image", "inspect", "--format", "{{.Id}}", args["PYTHON_IMAGE"]])
    digest.update(base.stdout.strip().encode())
    digest.update(repr(sorted(args.items())).encode())
    # xdist gives every worker of a run the same id; a run without xdist is a run of its own.
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    return f"{run_id[:12]}-{digest.hexdigest()[:16]}"


def _input_files(source: Path) -> list[Path]:
    """The build context's files (relative to `source`), without what a run of the tree
    leaves in it (bytecode, an editable install's egg-info)."""
    files = []
    for name in _INPUTS:
        path = source / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            relative = file.relative_to(source)
            generated = relative.suffix == ".pyc" or any(
                part == "__pycache__" or part.endswith(".egg-info") for part in relative.parts
            )
            if file.is_file() and not generated:
                files.append(relative)
    return files


def _copy_inputs(source: Path, context: Path) -> None:
    for relative in _input_files(source):
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, context / relative)


def _exists(image: str) -> bool:
    return run(["docker", "image", "inspect", image], check=False).returncode == 0


def _forget_all_but(kept: str) -> None:
    """Remove the images earlier runs kept (about 200 MB each)."""
    listed = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", BUILT])
    for image in listed.stdout.split():
        if image != kept:
            run(["docker", "image", "rm", "--force", image], check=False)
