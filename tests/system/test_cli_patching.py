"""gevent patches the standard library for the commands that serve, and only for them."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from harness.live import SRC

from pushsvc.__main__ import command_of, entry_points_read_once

# Runs the real entry point with `argv`, with click's exit replaced by a report of whether the
# socket module was patched by then; the command itself never starts.
_PROBE = """
import sys
import click
from gevent import monkey

def report(self, *args, **kwargs):
    print("patched" if monkey.is_module_patched("socket") else "plain")
    sys.exit(0)

click.Group.invoke = report
sys.argv = ["pushsvc", *sys.argv[1:]]
from pushsvc.__main__ import main
main()
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "--port", "0"], "patched"),
        (["web"], "patched"),
        (["aggregate"], "patched"),
        (["publish", "t", "1"], "plain"),
        (["subscribe", "t"], "plain"),
        (["replay", "t", "x.csv"], "plain"),
    ],
)
def test_only_the_serving_commands_run_patched(argv: list[str], expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == expected, done.stderr


def test_the_command_is_the_first_argument_that_is_not_an_option() -> None:
    assert command_of(["--help"]) is None
    assert command_of(["serve", "--port", "8000"]) == "serve"
    assert command_of(["--version", "publish"]) == "publish"


def test_gevent_patches_with_entry_points_read_once_and_then_reads_them_anew() -> None:
    read = importlib.metadata.entry_points
    with entry_points_read_once():
        assert importlib.metadata.entry_points is not read
        for group in ("console_scripts", "pytest11", "gevent.plugins.monkey.will_patch_all"):
            assert list(importlib.metadata.entry_points(group=group)) == list(read(group=group))
    assert importlib.metadata.entry_points is read
