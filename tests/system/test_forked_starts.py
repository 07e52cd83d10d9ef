"""The suite forks most of its pushsvc servers from a helper that imported pushsvc once
(harness.forked_starts). A forked server must be what `python -m pushsvc` would have been:
the same environment, directory, open files, answers and ends. Each test here starts the
same command both ways and compares."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from harness.forked_starts import ForkedProcess
from harness.live import PushsvcProcess


def _start(
    how: str, monkeypatch: pytest.MonkeyPatch, make: Callable[[], PushsvcProcess]
) -> PushsvcProcess:
    with monkeypatch.context() as scoped:
        if how == "exec":
            scoped.setenv("TEST_PUSHSVC_EXEC", "1")
        else:  # even in a run told to exec every start
            scoped.delenv("TEST_PUSHSVC_EXEC", raising=False)
        server = make()
        with contextlib.suppress(RuntimeError):  # it exited: the test compares how
            server.start()
    assert isinstance(server.proc, ForkedProcess) == (how == "fork")
    return server


def _open_files(pid: int) -> list[str]:
    """What each of the process's descriptors is, without inode numbers, in order."""
    fds = sorted(os.listdir(f"/proc/{pid}/fd"), key=int)
    return [re.sub(r":\[\d+\]$", "", os.readlink(f"/proc/{pid}/fd/{fd}")) for fd in fds]


def _retry_ms(port: int) -> int:
    """The `retry:` a new stream is sent first (drawn per stream, docs/api.md)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/topics/forked/stream")
        first = conn.getresponse().readline().decode()
    finally:
        conn.close()
    match = re.fullmatch(r"retry: (\d+)\n", first)
    assert match, first
    return int(match[1])


def test_a_forked_server_has_the_settings_directory_and_files_exec_gives(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    seen = {}
    for how in ("exec", "fork"):
        server = _start(
            how, monkeypatch, lambda: PushsvcProcess("serve", env={"PUSHSVC_RETRY": "200ms"})
        )
        try:
            seen[how] = _open_files(server.pid)  # before a client's connection adds one
            # /proc/PID/environ is what the process was exec'd with: a fork's is its helper's.
            # So the server says which environment it read: the retry set there, not 3 s.
            assert 200 <= _retry_ms(server.port) < 400
            assert Path(f"/proc/{server.pid}/cwd").resolve() == tmp_path.resolve()
        finally:
            server.stop()
    # One more in the fork: the end of the pipe by which its helper learns that it ended.
    assert seen["fork"] == [*seen["exec"], "pipe"]
    assert seen["exec"][:3] == ["/dev/null", "/dev/null", "pipe"]


@pytest.mark.parametrize("end", ["SIGTERM", "kill -9", "a bad setting"])
def test_a_forked_server_ends_with_the_code_and_words_exec_gives(
    monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    env = {"PUSHSVC_HEARTBEAT": "forever"} if end == "a bad setting" else {}
    ended = {}
    for how in ("exec", "fork"):
        server = _start(how, monkeypatch, lambda: PushsvcProcess("serve", env=env))
        assert server.proc is not None
        if end == "SIGTERM":
            code = server.stop()
        elif end == "kill -9":
            server.proc.send_signal(signal.SIGKILL)
            code = server.proc.wait(10)
            server.kill()
        else:
            code = server.proc.wait(10)
            server.kill()
        words = [re.sub(r"^\S+ \S+ ", "", line) for line in server.output]  # no timestamps
        ended[how] = (code, [re.sub(r"\d+", "N", line) for line in words])
    assert ended["fork"] == ended["exec"]
    expected = {"SIGTERM": 0, "kill -9": -signal.SIGKILL, "a bad setting": 2}
    assert ended["exec"][0] == expected[end]
