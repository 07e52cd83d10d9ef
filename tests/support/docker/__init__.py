"""Docker for tests: a daemon, local stand-ins for the base images, wheels, a compose project.

The test machines reach Debian's, PyPI's and npm's registries but no image registry, so the
base images the Dockerfile and docker-compose.yml name by default (`python:3.11-slim`,
`redis:7`) cannot be pulled there. `ensure_stand_ins()` makes local ones from Debian's
packages instead (`debootstrap --variant=minbase bookworm`, then `docker import`), under
names of their own, which the test hands to the build and to compose through
`PUSHSVC_PYTHON_IMAGE` / `PUSHSVC_REDIS_IMAGE`. They stay in Docker between runs and are
made again only when their recipe changes. Nothing here pulls or pushes an image.

`daemon` runs docker and starts a daemon where none runs; `stand_ins` makes the base images;
`wheels` builds the project's wheels for the image's interpreter; `image` builds pushsvc's
image from them (once a test run); `compose` drives a project.
"""

from support.docker.compose import ComposeProject, compose_command
from support.docker.daemon import (
    DockerDaemon,
    DockerError,
    DockerUnavailable,
    daemon_answers,
    run,
)
from support.docker.image import build_image, built_image
from support.docker.stand_ins import (
    PYTHON_STAND_IN,
    REDIS_STAND_IN,
    STAND_INS,
    StandIn,
    ensure_stand_ins,
)
from support.docker.wheels import PythonTarget, build_wheels, missing_requirements

__all__ = [
    "PYTHON_STAND_IN",
    "REDIS_STAND_IN",
    "STAND_INS",
    "ComposeProject",
    "DockerDaemon",
    "DockerError",
    "DockerUnavailable",
    "PythonTarget",
    "StandIn",
    "build_image",
    "build_wheels",
    "built_image",
    "compose_command",
    "daemon_answers",
    "ensure_stand_ins",
    "missing_requirements",
    "run",
]
