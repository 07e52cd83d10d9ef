"""The producer and subscriber tools against a real server: publish, subscribe, replay."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from harness.live import (
    SRC,
    PushsvcProcess,
    SSEClient,
    request,
    run_tool,
    start_tool,
    wait_published,
)
from harness.net import free_port

from pushsvc.client.models import history_dataframe
from pushsvc.config import Settings
from pushsvc.extras import MissingExtra


def test_publish_values_and_ndjson(server: PushsvcProcess, topic: str) -> None:
    url = f"--url={server.base}"
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        done = run_tool("publish", url, topic, "1.5", "2.5", "--tag", "site=a")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "accepted 2"
        done = run_tool("publish", url, topic, stdin='{"value": 7}\n{"value": 8}\n')
        assert done.stdout.strip() == "accepted 2"
        got = [(u["event"]["value"], u["event"]["tags"]) for _, u in stream.take(4)]
        assert got == [(1.5, {"site": "a"}), (2.5, {"site": "a"}), (7.0, {}), (8.0, {})]


def test_publish_reports_the_servers_error(server: PushsvcProcess, topic: str) -> None:
    done = run_tool("publish", f"--url={server.base}", topic, stdin='{"value": "x"}\n')
    assert done.returncode != 0
    assert "invalid_event" in done.stderr


def test_publish_names_the_line_of_standard_input_that_is_not_json(
    server: PushsvcProcess, topic: str
) -> None:
    stdin = '{"value": 1}\n\n{"value": 2}\n{"value" 3}\n{"value": 4}\n'
    done = run_tool("publish", f"--url={server.base}", topic, stdin=stdin)
    assert done.returncode == 1
    assert done.stderr == (
        "Error: standard input line 4 is not JSON (unexpected character, expected ':' after "
        "key at column 10): '{\"value\" 3}'\n"
    )
    assert request(server.port, "GET", f"/topics/{topic}/stats")[0] == 404  # nothing sent


def test_serve_help_says_what_each_setting_takes() -> None:
    from click.testing import CliRunner

    from pushsvc.cli import main

    shown = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    metavars = dict(re.findall(r"^  (--[a-z-]+) (\S+)", shown, re.MULTILINE))
    assert metavars["--port"] == "PORT" and metavars["--redis-url"] == "URL"
    assert metavars["--tick"] == metavars["--lease"] == "DURATION"
    assert metavars["--max-body"] == "BYTES" and metavars["--history"] == "INTEGER"
    assert metavars["--max-stream-buffer"] == "BYTES"
    assert metavars["--rules"] == metavars["--data-dir"] == "PATH"
    assert metavars["--windows"] == "DURATION[,...]" and metavars["--log-format"] == "[text|json]"
    flag = r"^  --token-query / --no-token-query\s+\[env PUSHSVC_TOKEN_QUERY"
    assert re.search(flag, shown, re.MULTILINE)


@pytest.mark.parametrize("command", ["serve", "web", "aggregate"])
def test_no_setting_is_shown_as_bare_text_in_help(command: str) -> None:
    from click.testing import CliRunner

    from pushsvc.cli import main

    shown = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    metavars = dict(re.findall(r"^  (--[a-z-]+) (\S+)", shown, re.MULTILINE))
    assert [flag for flag, metavar in metavars.items() if metavar == "TEXT"] == []


def test_the_disabled_query_token_advice_names_a_flag_serve_accepts() -> None:
    import shlex

    from pushsvc.cli import serve
    from pushsvc.security.access import QUERY_DISABLED

    # The 401 a ?token= gets tells the operator how to turn query tokens on; what it quotes
    # must work when pasted onto the command line.
    advised = re.search(r"\((--token-query[^)]*)\)", QUERY_DISABLED)
    assert advised is not None, QUERY_DISABLED
    flags = serve.make_context("serve", shlex.split(advised[1])).params
    assert flags["token_query"] == "true"


@pytest.mark.parametrize(
    ("args", "given"),
    [(["--token-query"], "true"), (["--no-token-query"], "false"), ([], None)],
)
def test_token_query_is_a_flag_as_documented(args: list[str], given: str | None) -> None:
    from pushsvc.cli import serve

    flags = serve.make_context("serve", [*args, "--tick", "0"]).params
    assert flags.pop("listen_fd") is None  # serve --workers' own, not a setting
    assert flags["token_query"] == given and flags["tick"] == "0"
    if given is not None:  # query tokens are an auth setting: they need a key
        with_auth = {"PUSHSVC_JWT_KEY": "k" * 32}
        assert Settings.load(flags, with_auth).token_query is (given == "true")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_publish_refuses_a_value_json_cannot_carry_and_names_it(
    server: PushsvcProcess, topic: str, value: str
) -> None:
    done = run_tool("publish", f"--url={server.base}", topic, "1", value)
    assert done.returncode == 2
    assert f"{value} is not a finite number" in done.stderr
    assert "null" not in done.stderr and "Traceback" not in done.stderr
    assert request(server.port, "GET", f"/topics/{topic}/stats")[0] == 404  # nothing sent


def test_subscribe_prints_updates_as_json_lines(server: PushsvcProcess, topic: str) -> None:
    proc = start_tool(
        "subscribe", f"--url={server.base}", topic, "--count", "2", "--stats", "count"
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # the snapshot: subscribed before we publish
    assert first["event"] == "snapshot"
    request(server.port, "POST", f"/topics/{topic}/events", [{"value": 1}, {"value": 2}])
    lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    assert proc.wait(30) == 0
    proc.stdout.close()
    assert [line["data"]["windows"]["1m"] for line in lines] == [{"count": 1}, {"count": 2}]
    assert all(line["event"] == "stats" and line["id"] == line["data"]["id"] for line in lines)


_CANNOT_REACH = re.compile(
    r"pushsvc subscribe: cannot reach http://127\.0\.0\.1:\d+/: ConnectError: .*; "
    r"retrying in \d+\.\d s"
)
# A request's retry: the same reason, as the client's retries of a request say it.
_REQUEST_CANNOT_REACH = (
    r"pushsvc {command}: not ready \(cannot reach http://127\.0\.0\.1:\d+/: ConnectError: "
    r".*\); retrying in \d+\.\d s"
)


@pytest.mark.parametrize(
    ("command", "args", "said"),
    [
        ("subscribe", ["orders"], _CANNOT_REACH.pattern),
        ("publish", ["orders", "1"], _REQUEST_CANNOT_REACH.format(command="publish")),
        ("delete", ["orders"], _REQUEST_CANNOT_REACH.format(command="delete")),
    ],
)
def test_a_tool_pointed_at_a_closed_port_says_so_within_seconds(
    command: str, args: list[str], said: str
) -> None:
    """Each failed try is a line on standard error as it happens, not silence until the
    retries run out (some 30 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushsvc", command, f"--url=http://127.0.0.1:{free_port()}",
         *args],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    stderr = proc.stderr
    assert stderr is not None
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=lambda: lines.put(stderr.readline()), daemon=True).start()
    try:
        # The interpreter's start is most of it; retries wait 0.2 s, 0.4 s, ... at first.
        first = lines.get(timeout=20)
    finally:
        proc.kill()
        proc.wait()
        stderr.close()
    assert re.fullmatch(said, first.rstrip("\n")), first


def test_subscribe_with_max_retries_gives_up_with_exit_1() -> None:
    done = run_tool(
        "subscribe", f"--url=http://127.0.0.1:{free_port()}", "orders", "--max-retries", "2"
    )
    assert done.returncode == 1 and done.stdout == ""
    *retried, last = done.stderr.splitlines()
    assert len(retried) == 2 and all(_CANNOT_REACH.fullmatch(line) for line in retried), retried
    assert last.startswith("Error: cannot reach http://127.0.0.1:")


def test_replay_csv(server: PushsvcProcess, topic: str, tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2026-11-21T10:00:00Z", periods=2500, freq="100ms"),
            "amount": [float(i % 13) for i in range(2500)],
            "dish": ["noodles", "rice"] * 1250,
        }
    )
    frame.to_csv(csv, index=False)
    done = run_tool(
        "replay",
        f"--url={server.base}",
        str(csv),
        "--topic",
        topic,
        "--value-column",
        "amount",
        "--tag-columns",
        "dish",
        "--batch",
        "1000",
    )
    assert done.returncode == 0, done.stderr
    assert "replayed 2500 events" in done.stdout
    last = frame.iloc[-1]
    # Replayed is logged: the updates follow as the aggregator gets to them.
    wait_published(server.port, topic, {"value": last["amount"], "ts": last["ts"].timestamp()})
    latest = json.loads(request(server.port, "GET", f"/topics/{topic}/stats")[2])
    assert latest["event"] == {
        "value": last["amount"],
        "ts": last["ts"].timestamp(),
        "tags": {"dish": last["dish"]},
    }
    expected = frame.set_index("ts")["amount"].rolling("60s").agg(["count", "mean"]).iloc[-1]
    assert latest["windows"]["1m"]["count"] == expected["count"]
    assert latest["windows"]["1m"]["mean"] == pytest.approx(expected["mean"], rel=1e-12)


def test_replay_names_a_bad_row(server: PushsvcProcess, topic: str, tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("value\n1\n2\nlots\n")
    done = run_tool("replay", f"--url={server.base}", str(csv), "--topic", topic)
    assert done.returncode != 0
    assert "row 4" in done.stderr
    assert request(server.port, "GET", f"/topics/{topic}/stats")[0] == 404


# pandas, numpy and tqdm are the tools extra: the server and the demo never import them.
TOOLS_EXTRA = ("pandas", "numpy", "tqdm")
WITHOUT_THE_EXTRA = f"import sys\nfor name in {TOOLS_EXTRA!r}:\n    sys.modules[name] = None\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_server_and_the_demo_import_nothing_of_the_tools_extra() -> None:
    done = _python(
        "import sys\n"
        "import pushsvc.cli, pushsvc.server, pushsvc.app, pushsvc.demo.runner\n"
        f"print([name for name in {TOOLS_EXTRA!r} if name in sys.modules])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_tools_extra_replay_says_what_to_install(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text("value\n1\n")
    done = _python(
        WITHOUT_THE_EXTRA + "from pushsvc.cli import main\n"
        "main(['replay', sys.argv[1], '--topic', 't'], prog_name='pushsvc')",
        str(csv),
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "Error: pushsvc replay needs pandas, numpy and tqdm, which the tools extra installs: "
        "pip install 'pushsvc[tools]' (from a checkout: pip install '.[tools]')"
    ]


def test_without_pandas_client_history_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtra, match=r"Client.history\(\) needs pandas.*pushsvc\[tools\]"):
        history_dataframe([], ["10s"], ["count"])
