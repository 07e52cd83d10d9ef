"""Every rerun of a failed test, listed where CI shows it.

pyproject runs the suite with `--reruns 1` (pytest-rerunfailures): a test that fails is run
once more, and the run passes if it passes then. That keeps one flaky test from failing a
whole CI run; this module keeps the flake from being hidden. pytest's summary (`-rR`)
names each rerun at the end of its output, and where `TEST_PUSHSVC_RERUNS` names a file
(`.ci/run` sets it), each rerun test gets a line there once its last attempt ends, which
`.ci/run` prints under "--- reruns" whatever the run's outcome:

    RERUN: tests/unit/test_x.py::test_y: failed in call (AssertionError: ...) at
      tests/unit/test_x.py:12, then passed

(on one line; `at` names the suite's last line the failure passed)

Only the process that reports writes the file: with xdist, the controller, which receives
every worker's reports (pytest-rerunfailures forwards the failed attempt as a report of
outcome "rerun"). A report carries its attempt (`report.rerun`, 0 for the first), so the
attempt after the last failed one is the test's final result.

One failure is never rerun: one in the teardown that ended a fixture shared beyond the test
(module, class or session scope), such as the session's check that no credential was logged
or a module's server that must exit cleanly. A rerun would set the fixture up anew for the
last test alone and check only that, so a real failure would pass on rerun. Such a failure
is raised as `SharedFixtureTeardownFailed`, which pyproject's `rerun_except` names."""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RERUNS_FILE_VARIABLE = "TEST_PUSHSVC_RERUNS"
"""Names the file the rerun lines are appended to; unset, pytest's summary alone lists them."""

_MESSAGE_CHARS = 800
"""How much of a failure's first line a rerun's line keeps: enough for a message that says
what differed (the failed attempt's traceback is not in the log when its rerun passes)."""


@dataclass
class _Rerun:
    first_failure: str
    """The phase that failed first and its message, e.g. `call (AssertionError: ...)`."""
    failed_attempts: set[int] = field(default_factory=set)
    final_failed: bool = False


class RerunLog:
    """Appends one line per rerun test to a file, when its last attempt ends."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._open: dict[str, _Rerun] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        attempt = getattr(report, "rerun", None)
        if not isinstance(attempt, int):
            return  # not run under pytest-rerunfailures' protocol
        rerun = self._open.get(report.nodeid)
        if str(report.outcome) == "rerun":
            if rerun is None:
                rerun = self._open[report.nodeid] = _Rerun(_failure(report))
            rerun.failed_attempts.add(attempt)
            return
        if rerun is None or attempt in rerun.failed_attempts:
            return  # a test that was not rerun, or the passing phases of a failed attempt
        rerun.final_failed |= report.failed
        if report.when == "teardown":
            self._write(report.nodeid, "failed again" if rerun.final_failed else "passed")

    def pytest_sessionfinish(self) -> None:
        for nodeid in list(self._open):
            self._write(nodeid, "did not finish")

    def _write(self, nodeid: str, then: str) -> None:
        rerun = self._open.pop(nodeid)
        line = f"RERUN: {nodeid}: failed in {rerun.first_failure}, then {then}\n"
        with self._path.open("a", encoding="utf-8") as out:
            out.write(line)


def _failure(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", "")).strip().splitlines()
    if not message:
        return report.when
    first = message[0]
    if len(first) > _MESSAGE_CHARS:
        first = first[: _MESSAGE_CHARS - 3] + "..."
    at = _where(report)
    return f"{report.when} ({first}){f' at {at}' if at else ''}"


def _where(report: pytest.TestReport) -> str:
    """The line of the project's own code the failure passed last (`tests/…:123`), deeper
    frames being the standard library's or a dependency's: which call of a test raised an
    error that many of its calls could have (a connection reset)."""
    entries = getattr(getattr(report.longrepr, "reprtraceback", None), "reprentries", ())
    for entry in reversed(entries):
        location = getattr(entry, "reprfileloc", None)
        path = str(getattr(location, "path", ""))
        if path and not path.startswith("/") and "site-packages" not in path:
            return f"{path}:{getattr(location, 'lineno', '?')}"
    return ""


class SharedFixtureTeardownFailed(Exception):
    """A fixture shared with other tests failed as it was torn down (the cause says how)."""


class SharedTeardowns:
    """Raises `SharedFixtureTeardownFailed` from a failed teardown that ended a shared fixture.

    pytest calls `pytest_fixture_post_finalizer` as each fixture's last finalizer, so a
    teardown that ended a shared fixture has called it with that fixture's scope."""

    def __init__(self) -> None:
        self._ended_shared = False

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[object]) -> None:
        if fixturedef.scope != "function":
            self._ended_shared = True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self) -> Generator[None, None, None]:
        self._ended_shared = False
        try:
            return (yield)
        except (Exception, pytest.fail.Exception) as failure:
            if not self._ended_shared:
                raise
            cause = (str(failure).strip().splitlines() or [""])[0][:_MESSAGE_CHARS]
            raise SharedFixtureTeardownFailed(
                f"{type(failure).__name__}: {cause} (in the teardown of a fixture shared with"
                " other tests: not rerun, as a rerun would set it up anew for this test alone)"
            ) from failure


def register(config: pytest.Config) -> None:
    """Keeps a shared fixture's failed teardown from being rerun, and writes the reruns to the
    file `TEST_PUSHSVC_RERUNS` names, from the reporting process. Under `--pdb` nothing is
    rerun (pytest-rerunfailures refuses the two together): the debugger is for the first
    failure. Called from conftest's `pytest_configure`, which pytest calls before the
    plugin's, where it checks its options."""
    if config.option.usepdb:
        config.option.reruns = 0
    config.pluginmanager.register(SharedTeardowns(), "pushsvc-shared-teardowns")
    path = os.environ.get(RERUNS_FILE_VARIABLE)
    if path and not hasattr(config, "workerinput"):
        config.pluginmanager.register(RerunLog(Path(path)), "pushsvc-rerun-log")
