"""The suite's reruns, run as CI runs them: pyproject's options, xdist workers, and the file
`.ci/run` prints (tests/support/reruns.py). A test that fails once and then passes does not
fail the run, and is listed; one that fails again fails it; a shared fixture's failed
teardown is never rerun."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

_CONFTEST = """
from support.reruns import register


def pytest_configure(config):
    register(config)
"""

_FLAKY = """
import os
from pathlib import Path


def test_fails_once():
    mark = Path(os.environ["MARKS"]) / "once"
    if not mark.exists():
        mark.touch()
        raise AssertionError("the first attempt fails")


def test_passes():
    pass
"""

_BROKEN = """
def test_fails_every_time():
    raise AssertionError("broken")
"""

_DEEP = """
import json


def test_fails_in_the_standard_library():
    json.loads("{")
"""

_SHARED = """
import pytest


@pytest.fixture(scope="module")
def server():
    yield
    raise AssertionError("the module's server exited 1")


def test_uses_the_server(server):
    pass


def test_last():
    pass
"""


def _run(folder: Path, *files: str) -> tuple[int, list[str], str]:
    """Runs pytest on `files` in `folder` with pyproject's options on two workers: its exit
    code, the reruns' lines and its output."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    ini = options["ini_options"]
    (folder / "pytest.ini").write_text(
        "[pytest]\n"
        f"pythonpath = {ROOT / 'tests'}\n"
        f"addopts = {ini['addopts']} -n 2 -p no:cacheprovider\n"
        "rerun_except =\n" + "".join(f"    {p}\n" for p in ini["rerun_except"])
    )
    reruns = folder / "reruns.txt"
    reruns.unlink(missing_ok=True)
    env = {**os.environ, "MARKS": str(folder), "TEST_PUSHSVC_RERUNS": str(reruns)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *files],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = reruns.read_text().splitlines() if reruns.exists() else []
    return done.returncode, lines, f"$ pytest {shlex.join(files)}\n{done.stdout}{done.stderr}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "conftest.py").write_text(_CONFTEST)
    (tmp_path / "test_flaky.py").write_text(_FLAKY)
    (tmp_path / "test_broken.py").write_text(_BROKEN)
    (tmp_path / "test_deep.py").write_text(_DEEP)
    (tmp_path / "test_shared.py").write_text(_SHARED)
    return tmp_path


def test_a_test_that_fails_once_passes_the_run_and_is_listed(folder: Path) -> None:
    code, lines, output = _run(folder, "test_flaky.py")
    assert code == 0, output
    assert lines == [
        "RERUN: test_flaky.py::test_fails_once: failed in call"
        " (AssertionError: the first attempt fails) at test_flaky.py:10, then passed"
    ], output
    assert "RERUN test_flaky.py::test_fails_once" in output  # pytest's own summary


def test_a_test_that_fails_again_fails_the_run(folder: Path) -> None:
    code, lines, output = _run(folder, "test_broken.py", "test_flaky.py")
    assert code == 1, output
    assert sorted(lines) == [
        "RERUN: test_broken.py::test_fails_every_time: failed in call"
        " (AssertionError: broken) at test_broken.py:3, then failed again",
        "RERUN: test_flaky.py::test_fails_once: failed in call"
        " (AssertionError: the first attempt fails) at test_flaky.py:10, then passed",
    ], output


def test_a_rerun_names_the_suites_line_an_error_from_deeper_passed(folder: Path) -> None:
    code, lines, output = _run(folder, "test_deep.py")
    assert code == 1, output
    assert len(lines) == 1, output
    assert lines[0].startswith("RERUN: test_deep.py::test_fails_in_the_standard_library:"), lines
    assert lines[0].endswith(" at test_deep.py:6, then failed again"), lines


def test_a_shared_fixtures_failed_teardown_is_not_rerun(folder: Path) -> None:
    code, lines, output = _run(folder, "test_shared.py")
    assert code == 1, output
    assert lines == [], output
    assert "SharedFixtureTeardownFailed: AssertionError: the module's server exited 1" in output
