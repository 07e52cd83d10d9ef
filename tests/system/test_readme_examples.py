"""The examples of README.md and of the reference pages, run as a newcomer runs them (STYLE.md,
"Examples that run").

A copy of the checkout (the files `git ls-files` lists) gets the README's first command as it
stands: a virtual environment, a real (not editable) `pip install .`, and `pushsvc serve`, on a
free port given by PUSHSVC_PORT. Then every other fenced `sh` and `python` block runs in order
in that copy — README.md's, then each page of PAGES in turn, as a newcomer who took the tour and
then read the reference would type them — sharing one shell's state (tests/support/newcomer.py
says how commands, servers and streams are taken): the ports they name (8000, 8001, 8002)
become free ones, and the Redis at localhost:6379 a redis-server of the test's own. A block that
cannot run here says so, and why, in a marker right before it (tests/support/readme_examples.py).
Each test is named by the file and line of its block (`test_example[docs/api.md:30]`).

The same fresh install then takes the operator's path (`test_the_operator_path`,
tests/support/operator_path.py): docs/security.md and docs/deploy.md with openssl, nginx,
TLS and gunicorn.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import request
from harness.net import free_port
from harness.redis_server import RedisServer

from support.newcomer import Newcomer
from support.nginx import NGINX, Nginx, render
from support.operator_path import LATER_STEPS, OperatorShell
from support.readme_examples import Block, ReadmeError, read_blocks, substitute_ports
from support.security_docs import blocks as security_blocks
from support.security_docs import expected

ROOT = Path(__file__).resolve().parents[2]
# In the order a newcomer reads them: the front page's tour, then the reference. State carries
# from one to the next (the servers left running, the shell's variables, the topics' data).
PAGES = (
    "README.md",
    "docs/api.md",
    "docs/rules.md",
    "docs/series.md",
    "docs/alerts.md",
    "docs/clients.md",
    "docs/dashboard.md",
    "docs/demo.md",
    "docs/configuration.md",
    "docs/deploy.md",
)
# Pages whose `sh` and `python` blocks are not a newcomer's to type here, and why.
OTHER_EXAMPLES = {
    "docs/security.md": "run by tests/system/test_security_docs.py, with its own markers",
    "docs/performance.md": "benchmark commands, each with its date; the bench smoke tests run them",
    "docs/reliability.md": "redis-cli against the operator's own Redis (HOST)",
    "docs/mercure.md": "a hub with a key of its own: tests/system/test_mercure.py publishes and "
    "subscribes as its examples do; its conformance suite runs outside this repository",
}
_FENCE_TO_RUN = re.compile(r"^```(?:sh|python)\s*$", re.MULTILINE)


def _read(page: str) -> list[Block] | ReadmeError:
    try:
        return read_blocks(ROOT / page, page)
    except ReadmeError as exc:  # reported by test_every_example_is_run_or_says_why_not
        return exc


READ = {page: _read(page) for page in PAGES}
BLOCKS = [block for found in READ.values() if isinstance(found, list) for block in found]
UNREADABLE = [str(found) for found in READ.values() if isinstance(found, ReadmeError)]
FIRST = READ["README.md"]
INSTALL = FIRST[0] if isinstance(FIRST, list) and FIRST else None
EXAMPLES = [block for block in BLOCKS if block is not INSTALL]


@pytest.mark.parametrize("page", PAGES)
def test_every_example_is_run_or_says_why_not(page: str) -> None:
    """A new `sh` or `python` block runs unless a marker right before it says why not: every
    such fence is the first command (the fixture's), an example below, or marked with a
    reason; and no fence is spelt so that it would slip past (`bash`, `py`, ...)."""
    found = READ[page]
    if isinstance(found, ReadmeError):
        pytest.fail(str(found))
    fences = [
        number
        for number, line in enumerate((ROOT / page).read_text(encoding="utf-8").splitlines(), 1)
        if line.rstrip() in ("```sh", "```python")
    ]
    assert [block.line for block in found] == fences
    if page == "README.md":
        assert INSTALL is not None and INSTALL.lang == "sh"
        assert INSTALL.not_run is None and INSTALL.error_expected is None, "the first runs"
    for block in found:
        if block is not INSTALL:
            assert block.not_run is None or block.not_run.strip(), f"{block.name}: no reason"


def test_every_page_with_examples_is_run_or_says_why_not() -> None:
    """A page of docs/ with `sh` or `python` blocks is one PAGES runs, or one whose examples
    are run elsewhere (OTHER_EXAMPLES, with the reason): a new reference page cannot hold
    examples that nothing runs. (docs/journal/ keeps commands as they were run, with dates.)"""
    with_examples = {
        f"docs/{path.name}"
        for path in (ROOT / "docs").glob("*.md")
        if _FENCE_TO_RUN.search(path.read_text(encoding="utf-8"))
    }
    assert with_examples - set(PAGES) - set(OTHER_EXAMPLES) == set()
    assert set(OTHER_EXAMPLES) <= with_examples, "a page listed here has no examples any more"


def _copy_checkout(destination: Path) -> None:
    """The files of the repository, as a clone has them (this work tree's versions)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet committed
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
    """A fresh copy of the checkout with the README's first command running in it."""
    if INSTALL is None:
        pytest.fail(f"README.md has no example to start with: {UNREADABLE}")
    home = tmp_path_factory.mktemp("readme") / "pushsvc"
    logs = tmp_path_factory.mktemp("readme-logs")
    _copy_checkout(home)
    redis: list[RedisServer] = []

    def redis_port() -> int:
        if not redis:
            redis.append(RedisServer().start())
        return redis[0].port

    session = Newcomer(home, logs, redis_port)
    problems: list[str] = []
    try:
        session.start_install(INSTALL)
        yield session
    finally:
        problems = session.close()
        for server in redis:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)
    assert not problems, "\n\n".join(problems)  # a server's traceback, e.g. when it stopped


@pytest.mark.slow
def test_the_first_command_installs_and_serves(newcomer: Newcomer) -> None:
    port = newcomer.http_port
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html"), (status, body)
    status, headers, body = request(port, "GET", "/static/pushsvc.js")
    assert status == 200 and b"export function subscribe" in body, (status, body[:200])
    status, _, body = request(port, "POST", "/topics/readme.first/events", {"value": 1})
    assert status == 202 and json.loads(body) == {"accepted": 1}, (status, body)
    # A real install: the package's files are in the venv's site-packages, not a link to src/.
    installed = list((newcomer.home / ".venv").glob("lib/python3*/site-packages/pushsvc"))
    assert installed and (installed[0] / "static" / "pushsvc.js").is_file(), installed


@pytest.mark.slow
@pytest.mark.parametrize("block", EXAMPLES, ids=lambda block: block.name)
def test_example(newcomer: Newcomer, block: Block) -> None:
    if block.not_run is not None:
        pytest.skip(f"not run: {block.not_run}")
    started = time.monotonic()
    problems = newcomer.run(block)
    took = time.monotonic() - started
    every = f"(every command's output so far: {newcomer.transcript})"
    # The first problem's first line leads: a rerun's line in CI's log keeps the first line.
    first = problems[0].strip().splitlines()[0] if problems else ""
    assert not problems, f"{block.name} ({took:.1f} s): {first} {every}:\n" + "\n\n".join(problems)


@pytest.mark.slow
@pytest.mark.skipif(
    NGINX is None or None in (shutil.which("curl"), shutil.which("openssl")),
    reason="the operator's path needs nginx, curl and openssl (apt install nginx curl openssl)",
)
def test_the_operator_path(newcomer: Newcomer, tmp_path: Path) -> None:
    """docs/security.md and docs/deploy.md as an operator follows them, in the tour's fresh
    install (tests/support/operator_path.py): a JWT secret made by openssl, a certificate
    made by openssl, pushsvc behind deploy/nginx.conf over TLS, then TLS served directly,
    then the web tier under gunicorn on Redis — each time the docs' token minted and a
    publish accepted with it and refused without. Neither the key nor a token is logged."""
    shell = OperatorShell(newcomer.home / ".venv" / "bin", tmp_path)
    doc = security_blocks()
    minted = expected("mint").split()
    *turn_on, serve = doc["server"].strip().splitlines()
    redis = RedisServer().start()
    nginx: Nginx | None = None
    try:
        # security.md, "Turning it on"; deploy.md, "Behind nginx": PUSHSVC_TRUSTED_PROXIES=1.
        shell.run("\n".join([*turn_on, "export PUSHSVC_TRUSTED_PROXIES=1"]))
        shell.run(doc["certificate"])
        web = shell.start(serve, port=free_port())
        https = free_port()
        site = render(
            (newcomer.home / "deploy" / "nginx.conf").read_text(),
            https=https, http=free_port(), upstream=web.port,
            cert=tmp_path / "cert.pem", key=tmp_path / "key.pem",
        )  # fmt: skip
        nginx = Nginx(tmp_path / "nginx", site, https).start()
        assert shell.run(_mint(doc, f"https://localhost:{https}")).split() == minted
        nginx.stop()
        shell.stop(web)

        # security.md, "TLS": served directly, auth still on.
        port = free_port()
        shell.start(doc["server-tls"].strip(), port=port, https=True)
        assert shell.run(_mint(doc, f"https://localhost:{port}")).split() == minted

        # deploy.md, "Gunicorn with gevent workers": its install, then its command.
        deploy = read_blocks(newcomer.home / "docs" / "deploy.md")
        [block] = [b for b in deploy if "gunicorn -k" in b.text]
        install, command = block.text.strip().split("\n", 1)
        shell.run(install, cwd=newcomer.home)
        port = free_port()
        shell.start(substitute_ports(command, {6379: redis.port, 8001: port}), port=port)
        assert shell.run(_mint(doc, f"localhost:{port}")).split() == minted

        for step in LATER_STEPS:
            step(shell)
        secrets = [shell.exported("PUSHSVC_JWT_KEY"), shell.exported("TOKEN")]
    finally:
        if nginx is not None:
            nginx.stop()
        problems = shell.close()
        redis.stop()
    assert not problems, "\n\n".join(problems)
    logs = [server.output() for server in shell.servers]
    logs.append((tmp_path / "nginx" / "access.log").read_text())
    assert all(secret and secret not in log for secret in secrets for log in logs)


def _mint(doc: dict[str, str], address: str) -> str:
    """security.md's `mint` block, its server at `address` instead of localhost:8000."""
    return doc["mint"].replace("localhost:8000", address)
