"""An application beside pushsvc, as a real process: a small web app (the auth proxy's
backend) that prints `listening on http://HOST:PORT` once it serves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"listening on (https?://[^\s]+)")


class AppProcess:
    """`python ARGS...` with src/ and tests/ importable; `url` once it listens."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.argv: Sequence[str] = [sys.executable, *args]
        path = os.pathsep.join([str(_ROOT / "src"), str(_ROOT / "tests"), str(_ROOT)])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.url = ""
        self.output: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 20) -> AppProcess:
        self._proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.argv} did not listen: {''.join(self.output[-20:])}")
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.output.append(line)
            found = _LISTENING.search(line)
            if found and not self.url:
                self.url = found[1]
                self._ready.set()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._pumper.join(5)  # it reads the pipe to its end, then the pipe can close
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
