"""A broken delivery promise fails the run on its first failure; a flake is rerun once.

Runs pytest in a child process on a two-test file with pyproject's own rerun settings, so
that what is checked is the configuration CI runs with, not a copy of it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_lost_update_is_not_rerun_and_a_flake_is(tmp_path: Path) -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    patterns = "".join(f"    {p}\n" for p in ini["rerun_except"])
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nrerun_except =\n{patterns}")
    (tmp_path / "test_child.py").write_text(
        textwrap.dedent(
            """
            import itertools
            from support.promise import promise_kept

            attempts = itertools.count()

            def test_lost() -> None:
                with promise_kept():
                    assert [1, 3] == [1, 2, 3], "watcher-0: missing updates [2]"

            def test_flake() -> None:
                assert next(attempts) > 0, "slow the first time"
            """
        )
    )
    child = ("-p", "no:xdist", "-p", "no:cacheprovider", "--reruns", "1", "-q", "-rR")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *child, str(tmp_path)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "tests"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 1, out
    assert "1 failed, 1 passed, 1 rerun" in out, out
    assert "RERUN test_child.py::test_flake" in out, out
    assert "RERUN test_child.py::test_lost" not in out, out
    assert "BrokenPromise: watcher-0: missing updates [2]" in out, out
