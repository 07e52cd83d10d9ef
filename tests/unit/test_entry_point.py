"""`pushsvc`'s entry point stopped while it starts: one line, never an import's traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")

# Ctrl-C (or `serve --workers` stopping a worker it just started) while the entry point is
# still importing the command line: made certain by an import that raises it.
INTERRUPTED_WHILE_STARTING = """
import builtins, sys
real = builtins.__import__
def interrupting(name, *args, **kwargs):
    if name == "pushsvc.cli":
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = interrupting
sys.argv = ["pushsvc", "serve"]
from pushsvc.__main__ import main
main()
"""


def test_an_interrupt_while_starting_is_one_line_and_exit_130() -> None:
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_STARTING],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": SRC},
    )
    assert done.returncode == 130
    assert done.stderr == "Aborted!\n"
