"""The helper of harness.forked_starts: `python harness/fork_helper.py FD`.

It patches the standard library as `python -m pushsvc` does for a serving command, before it
imports anything else of its own, then imports pushsvc's server and forks a child for each
request on the control socket FD until that closes. A child becomes what the request says (its
command line, environment, directory, standard error) and runs pushsvc's command line there,
as `pushsvc/__main__.py` does after its patching.
"""

import sys

from gevent import monkey

from pushsvc.__main__ import entry_points_read_once

with entry_points_read_once():
    monkey.patch_all()

import atexit
import contextlib
import gc
import json
import os
import random
import socket
import struct
from collections.abc import Mapping
from typing import Any

import pushsvc.__main__
import pushsvc.cli
import pushsvc.server  # what a serving command imports first

# Written for each ended child: its wait status and CPU seconds. harness.forked_starts reads
# it (`_END`); the two cannot share a module, since importing this one patches the library.
END = struct.Struct("=id")

# The helper's own blocking calls. gevent's patched versions would make it a hub, which every
# child would then share with it.
_fork = monkey.get_original("os", "fork")
_select = monkey.get_original("select", "select")
_Socket = monkey.get_original("socket", "socket")


def serve(control_fd: int) -> dict[str, Any] | None:
    """Forks a child for each request until the control socket closes: the request in the
    child, None in the helper once done."""
    control = _Socket(fileno=control_fd)
    ends: dict[int, tuple[int, int]] = {}  # a child's pipe end -> (pid, the test's pipe)
    while True:
        readable, _, _ = _select([control.fileno(), *ends], [], [])
        for fd in readable:
            if fd in ends:
                pid, ended = ends.pop(fd)
                os.close(fd)
                _, status, usage = os.wait4(pid, 0)
                with contextlib.suppress(OSError):
                    os.write(ended, END.pack(status, usage.ru_utime + usage.ru_stime))
                os.close(ended)
                continue
            message, fds, _, _ = socket.recv_fds(control, 1 << 20, 2)
            if not message:
                return None
            stderr, ended = fds
            request: dict[str, Any] = json.loads(message)
            # The child holds the write side alone, so that it closes when the child ends.
            # Close-on-exec: whatever the child execs does not hold it.
            child_end, held = os.pipe()
            pid = _fork()
            if pid == 0:
                for other, (_, other_ended) in ends.items():
                    os.close(other)
                    os.close(other_ended)
                os.close(child_end)
                os.close(ended)
                control.close()
                become(request, stderr)
                return request
            os.close(held)
            os.close(stderr)
            control.send(str(pid).encode())
            ends[child_end] = (pid, ended)


def become(request: Mapping[str, Any], stderr: int) -> None:
    """In the child: the environment, directory, output and command line that `exec` of
    `python -m pushsvc ...` would give."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(stderr, 2)
    os.close(devnull)
    os.close(stderr)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    # `python -m` puts the working directory first; a script, its own folder.
    sys.path[0] = os.getcwd()
    sys.argv = [pushsvc.__main__.__file__, *request["args"]]
    random.seed()  # each child its own sequence, not the helper's


def run_command() -> int:
    """pushsvc's command line, and the exit status `python -m pushsvc` would end with.

    Then the child ends as a forked worker does (multiprocessing's, gunicorn's): the exit
    handlers run (logging's flush among them), and no interpreter teardown follows. That
    teardown releases every module and object, and each object it touches is a page copied
    from the helper: half of what a child still cost with the heap frozen (below). An
    uncaught exception is not caught here, and ends the child as it ends the program."""
    try:
        pushsvc.cli.main(prog_name="pushsvc")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # What the helper imported is never collected, and no collection in a child looks at it:
    # the collector otherwise writes to every object it scans, and each page written is
    # copied from the helper into the child. A `serve` started and stopped cost 0.17 s of
    # CPU, 0.05 s after this (Python's gc docs: freeze before forking), 0.025 s ending as
    # run_command says.
    gc.freeze()
    if serve(int(sys.argv[1])) is None:
        sys.exit(0)
    status = run_command()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
