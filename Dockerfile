# One image for every pushsvc process: `serve` by default; docker-compose.yml runs
# `web`, `aggregate` and the demo producer from it.
#
# Build arguments (both optional):
#   PYTHON_IMAGE  the base: CPython 3.11 with pip on PATH (default python:3.11-slim).
#   WHEELS        a directory of the build context holding wheels of pushsvc and of every
#                 dependency; pip then installs from it alone, with no network. Unset, pip
#                 builds pushsvc from src/ and takes its dependencies from PyPI.
#                 tests/system/test_docker_stack.py builds with both set, and `--network none`.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG WHEELS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# .dockerignore lets through only pyproject.toml, README.md, src/ and docker-wheels/ (when
# present), so this copies what the install needs and no more.
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
COPY . /tmp/pushsvc/
RUN if [ -n "$WHEELS" ]; then \
        pip install --no-index --find-links "/tmp/pushsvc/$WHEELS" pushsvc; \
    else \
        pip install /tmp/pushsvc; \
    fi \
    && rm -rf /tmp/pushsvc

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pushsvc
USER pushsvc

EXPOSE 8000
ENTRYPOINT ["pushsvc"]
CMD ["serve", "--host", "0.0.0.0"]
