"""Running a snippet in a fresh interpreter: which modules an import loads can only be seen in
a process that has imported nothing yet (the test process has loaded everything)."""

from __future__ import annotations

import subprocess
import sys


def printed_by(code: str) -> str:
    """What `code` prints, run by this environment's python in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
