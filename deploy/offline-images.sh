#!/bin/sh
# The images docker-compose.yml needs, made where no image registry is reachable: stand-ins
# for python:3.11-slim and redis:7 from Debian's packages, and the pushsvc image built on them
# with no network. Run as root from a checkout with its test environment
# (python3 -m venv .venv-test && .venv-test/bin/pip install -e '.[test]'); it prints the
# variables to export for docker compose. Options: --tag NAME, --no-build (docs/deploy.md).
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=tests exec "${PYTHON:-.venv-test/bin/python}" -m support.docker "$@"
