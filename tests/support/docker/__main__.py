"""`deploy/offline-images.sh` (`PYTHONPATH=tests python -m support.docker`): the images
docker-compose.yml needs, made where no image registry is reachable — what the Docker tests
do before they start a stack, as one command of its own.

1. The base images, made from Debian's packages (`ensure_stand_ins`: root, debootstrap):
   `pushsvc-test/python:3.11` for `python:3.11-slim` and `pushsvc-test/redis:7` for `redis:7`.
2. Unless `--no-build`: the pushsvc image (`--tag`, default `pushsvc:latest`) on the first,
   built with `--network none` from wheels made on this host for its interpreter
   (`docker-wheels/` in a copy of the build context, as docs/deploy.md describes).

It prints the variables to give docker compose (`--no-build` then, as the image is built).
It needs a Docker daemon that answers; as root it starts `dockerd` when none runs, and leaves
it running for the compose commands that follow. Exit status 1, with one line, when a step
cannot be done.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from support.docker.daemon import DockerDaemon, DockerError, DockerUnavailable
from support.docker.image import built_image
from support.docker.stand_ins import PYTHON_STAND_IN, REDIS_STAND_IN, ensure_stand_ins

ROOT = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/offline-images.sh",
        description="Make the images docker-compose.yml needs without an image registry.",
    )
    parser.add_argument("--tag", default="pushsvc:latest", help="the pushsvc image's name")
    parser.add_argument(
        "--no-build", action="store_true", help="make the base images only, not pushsvc's"
    )
    args = parser.parse_args(argv)
    try:
        log = Path(tempfile.gettempdir(), "pushsvc-dockerd.log")
        DockerDaemon.ensure(log)  # not stopped: the compose commands that follow need it
        made = ensure_stand_ins()
        for image in (PYTHON_STAND_IN.name, REDIS_STAND_IN.name):
            print(f"{image}: {'made' if image in made else 'already made'}", file=sys.stderr)
        if not args.no_build:
            _build(args.tag)
            print(f"{args.tag}: built", file=sys.stderr)
    except (DockerUnavailable, DockerError) as exc:
        print(f"offline-images: {exc}", file=sys.stderr)
        return 1
    print(f"export PUSHSVC_PYTHON_IMAGE={PYTHON_STAND_IN.name}")
    print(f"export PUSHSVC_REDIS_IMAGE={REDIS_STAND_IN.name}")
    print(f"export PUSHSVC_IMAGE={args.tag}")
    return 0


def _build(tag: str) -> None:
    """The Dockerfile's build as the Docker tests run it: no network, the host's wheels."""
    built_image(ROOT, tag, {"PYTHON_IMAGE": PYTHON_STAND_IN.name})


if __name__ == "__main__":
    sys.exit(main())
