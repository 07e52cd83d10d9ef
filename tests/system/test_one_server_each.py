"""One server per port and per data directory: a second `serve`, `serve --data-dir` or
`serve --workers N` on the port of a running server, or a second process on a data directory
in use, stops at start with one line and exit status 2, and the first server keeps all its
traffic.

`serve --workers N` and `serve --data-dir` put their workers on one port with SO_REUSEPORT,
which the kernel lets any process of the same user join: a second server there would take a
share of the first one's connections (a subscriber missing messages, `/history` answers that
differ from call to call). The first server here is such a supervised one, and a plain one;
"all its traffic" is every one of a run of fresh connections reaching it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, post, request, run_tool, wait_caught_up

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CONNECTIONS = 20
BUSY = (
    "pushsvc: cannot listen on 127.0.0.1:{port}: address already in use; another server "
    "listens there; choose another port with --port or PUSHSVC_PORT"
)


def _serve(*args: str) -> PushsvcProcess:
    return PushsvcProcess("serve", "--tick", "0", *args).start()


def _refused(*args: str) -> str:
    """`pushsvc serve ARGS` run to its end: its one line (it must stop, status 2)."""
    done = run_tool("serve", "--tick", "0", *args, timeout=30)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def _keeps_all_its_traffic(server: PushsvcProcess, topic: str) -> None:
    """Each of a run of POSTs, each its own connection, reaches `server`: its windows count
    them all."""
    for value in range(CONNECTIONS):
        assert post(server.port, topic, {"value": float(value)})[0] == 202
    wait_caught_up(server.port)
    status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
    assert status == 200, body
    assert json.loads(body)["windows"]["5m"]["count"] == CONNECTIONS


@pytest.fixture(scope="module", params=["serve", "serve --workers 2 --data-dir"])
def first(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushsvcProcess]:
    """The server already running: a plain `serve`, or a supervised one whose web workers
    share their port."""
    args = () if request.param == "serve" else ("--workers", "2", "--data-dir")
    if args:
        args = (*args, str(tmp_path_factory.mktemp("first") / "data"))
    server = _serve(*args)
    yield server
    assert server.stop() == 0


@pytest.mark.parametrize(
    "second",
    [(), ("--data-dir", "{data}"), ("--workers", "2")],
    ids=["serve", "data-dir", "workers"],
)
def test_a_second_server_on_a_busy_port_stops_with_one_line(
    first: PushsvcProcess, second: tuple[str, ...], tmp_path: Path, topic: str
) -> None:
    args = [arg.format(data=tmp_path / "data") for arg in second]
    assert _refused("--port", str(first.port), *args) == BUSY.format(port=first.port)
    _keeps_all_its_traffic(first, topic)


@pytest.mark.parametrize("second", [(), ("--workers", "2")], ids=["data-dir", "workers"])
def test_a_second_server_on_a_data_dir_in_use_stops_naming_the_holder(
    second: tuple[str, ...], tmp_path: Path, topic: str
) -> None:
    data = tmp_path / "data"
    holder = _serve("--data-dir", str(data))
    try:
        line = _refused("--port", "0", "--data-dir", str(data), *second)
        assert line == (
            f"pushsvc: the data directory {data} is in use by another pushsvc serve (pid "
            f"{holder.pid}, http://127.0.0.1:{holder.port}); stop that server first, or give "
            "another --data-dir"
        )
        _keeps_all_its_traffic(holder, topic)
    finally:
        assert holder.stop() == 0
    # Stopped, it holds the directory no more: the next server starts on it.
    after = _serve("--data-dir", str(data))
    try:
        assert re.search(
            r"\bpid \d+, http://127\.0\.0\.1:\d+$", (data / "pushsvc.lock").read_text()
        )
    finally:
        assert after.stop() == 0
