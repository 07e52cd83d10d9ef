"""pushsvc's app factory under gunicorn's gevent worker, as the tests that need a real one
start it: on a free port, settings from `PUSHSVC_*` variables only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from harness.live import SRC, wait_until
from harness.net import free_port


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def gunicorn(
    settings: Mapping[str, str], log_dir: Path, *args: str, workers: int = 1
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """gunicorn with `workers` gevent workers on `pushsvc.app:create_app()`, given only the
    `PUSHSVC_*` `settings` (not the caller's own), its log in `log_dir/gunicorn.log`; yields
    its port, once it answers, and the process; terminates it on the way out."""
    command = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    assert command is not None, "gunicorn is a test dependency"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env |= {"PYTHONPATH": SRC, **settings}
    port = free_port()
    log_path = log_dir / "gunicorn.log"
    with log_path.open("w") as log:
        # A short graceful timeout: gunicorn waits that long for open streams to end.
        web = subprocess.Popen(
            [command, "-k", "gevent", "-w", str(workers), "-b", f"127.0.0.1:{port}",
             "--graceful-timeout", "2", *args, "pushsvc.app:create_app()"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        wait_until(lambda: web.poll() is not None or _answers(port), 30)
        assert web.poll() is None, log_path.read_text()
        yield port, web
    finally:
        web.terminate()
        web.wait(30)
