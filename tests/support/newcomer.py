"""A newcomer at a terminal, following the examples of README.md and then of the reference pages
in order (tests/system/test_readme_examples.py): one shell's state from block to block and from
page to page, real processes, real HTTP.

What a person does, and what this does for it:

* types each command of an `sh` block, one logical line at a time (a trailing `\\` joins the
  next), in the directory of the checkout. `export`, `. .venv/bin/activate` and `cd` carry over
  to later commands and blocks, as in one shell;
* leaves a server running (`pushsvc serve|web|aggregate`, with or without `&`) until a later
  block starts another, and first waits for it to answer (`GET /healthz`; an aggregator: its
  "pushsvc aggregator sharing N partitions" log line), as a person waits for its log line;
  stops the ones still running when a later block starts a server (Ctrl-C, or `kill %1` for a
  `&` job);
* watches a stream (`curl -N`, `pushsvc subscribe`, `pushsvc alerts`, `pushsvc demo`, a Python
  block looping over `client.subscribe(...)` or `client.messages(...)`) until it printed a
  message, then stops it; one started with `&` is looked at when its block's last command has
  run. A `curl -N … &` is let show its first line before the next command is typed, as a
  person sees it start: a messages stream delivers what is published once its client has its
  head (`retry:`), and a POST typed sooner may come before;
* pastes a `python` block into `python3` (unbuffered, as on a terminal);
* reads what came out: a command must exit 0 (a stream: print a message), and nothing may print
  a traceback or an error body (`{"error": {...}}`) unless its page marks the block
  `error expected`; a server's log may not hold a traceback either.

Every problem names the file and line of its command (`docs/api.md:30`). The limits of the
model: one command per logical line (no heredocs or multi-line loops), and programs known by
name (anything else is run to completion and must exit 0).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from harness.net import free_port

from pushsvc.ops.children import die_with_parent
from support.readme_examples import Block, ports_named, substitute_ports

EXAMPLE_HTTP_PORT = 8000
EXAMPLE_REDIS_PORT = 6379

INSTALL_TIMEOUT = 600.0  # the first command: a venv, pip install (a cold pip cache)
COMMAND_TIMEOUT = 300.0  # a command run to completion (`pip install '.[tools]'`)
READY_TIMEOUT = 60.0  # a server, from its start to answering
MESSAGE_TIMEOUT = 30.0  # a stream, from its start to its first message (an idle tick: ~10 s)
STOP_TIMEOUT = 15.0

TRACEBACK = "Traceback (most recent call last)"
ERROR_BODY = re.compile(r'"error"\s*:\s*\{')
_SSE_MESSAGE = re.compile(r"^data:[^\n]*\n(?:[^\n]+\n)*\n", re.MULTILINE)
_CLIENT_MESSAGE = re.compile(
    r"^(?:Snapshot|StreamUpdate|Point|AlertChange|Message|Gap)\(", re.MULTILINE
)
# A Python block that loops over a subscription: a loop, and a call that opens a stream (the
# loop may take the stream from a name: `stream = client.messages(…)`, `for m in stream:`).
_PYTHON_LOOP = re.compile(r"^\s*(?:async\s+)?for\s+\w+\s+in\s+", re.MULTILINE)
_PYTHON_STREAM = re.compile(r"\.(?:subscribe|messages)\(")
_AGGREGATOR_READY = re.compile(r"pushsvc aggregator sharing \d+ partitions")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_OWN = frozenset({"_", "SHLVL", "PWD", "OLDPWD"})
# A port of the examples' left in a block after substitution: it would reach the machine's own
# server (or another test's), e.g. `0.0.0.0:8000`.
_FIXED_PORT = re.compile(rf":(?:{EXAMPLE_HTTP_PORT}|{EXAMPLE_REDIS_PORT})\b")


class Kind(Enum):
    PLAIN = "runs to completion"
    SERVER = "a server: kept running"
    FOLLOW = "a stream: until it prints"


@dataclass(frozen=True)
class Command:
    text: str
    """What is given to bash (`&` and continuations included)."""
    file: str
    """The page it is on (`README.md`, `docs/api.md`)."""
    line: int
    """Its line on that page."""
    kind: Kind
    background: bool
    words: tuple[str, ...]
    """The words of its last pipeline stage, with no variable assignments and no `&`."""

    @property
    def where(self) -> str:
        """`file:line`, as problems name it."""
        return f"{self.file}:{self.line}"

    @property
    def program(self) -> str:
        if not self.words:
            return ""
        name = Path(self.words[0]).name
        return f"pushsvc {self.words[1]}" if name == "pushsvc" and len(self.words) > 1 else name


def shell_commands(block: Block, text: str) -> list[Command]:
    """The commands of an `sh` block's (port-substituted) text, one per logical line."""
    out: list[Command] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        first = index
        logical = lines[index]
        while logical.endswith("\\") and index + 1 < len(lines):
            index += 1
            logical += "\n" + lines[index]  # bash joins them itself
        index += 1
        joined = logical.replace("\\\n", " ")
        lexer = shlex.shlex(joined, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        if not tokens:
            continue  # a comment or a blank line
        background = tokens[-1] == "&"
        if background:
            tokens.pop()
        stage = tokens
        while "|" in stage:
            stage = stage[stage.index("|") + 1 :]
        words = tuple(w for i, w in enumerate(stage) if i > 0 or not _ASSIGNMENT.match(w))
        while words and _ASSIGNMENT.match(words[0]):
            words = words[1:]
        out.append(
            Command(
                text=logical,
                file=block.file,
                line=block.line + 1 + first,
                kind=_kind(words),
                background=background,
                words=words,
            )
        )
    return out


def _kind(words: Sequence[str]) -> Kind:
    if not words:
        return Kind.PLAIN
    name = Path(words[0]).name
    rest = set(words[1:])
    if name == "curl" and rest & {"-N", "--no-buffer"}:
        return Kind.FOLLOW
    if name != "pushsvc" or len(words) < 2:
        return Kind.PLAIN
    command = words[1]
    if command in {"serve", "web", "aggregate"}:
        return Kind.SERVER
    stops_by_itself = {
        "subscribe": {"--count"},
        "alerts": {"--once"},
        "demo": {"--count", "--duration"},
    }
    if command in stops_by_itself and not _has_option(words, stops_by_itself[command]):
        return Kind.FOLLOW
    return Kind.PLAIN


def _has_option(words: Sequence[str], names: set[str]) -> bool:
    return any(w in names or w.split("=", 1)[0] in names for w in words)


def _option(words: Sequence[str], name: str) -> str | None:
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


class Running:
    """One command in a process group of its own, its output in two files."""

    def __init__(self, command: Command, argv: Sequence[str], cwd: Path, env: dict[str, str],
                 logs: Path) -> None:  # fmt: skip
        self.command = command
        stem = f"{Path(command.file).stem}-line{command.line}-{time.monotonic_ns()}"
        self._out_path = logs / f"{stem}.out"
        self._err_path = logs / f"{stem}.err"
        with self._out_path.open("wb") as out, self._err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, preexec_fn=_as_in_a_terminal,
            )  # fmt: skip
        self.checked = 0  # how much of output() has been searched for tracebacks

    def stdout(self) -> str:
        return self._out_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        err = self._err_path.read_text(encoding="utf-8", errors="replace")
        return self.stdout() + err

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """What a person does: Ctrl-C (SIGINT to the process group) for a command in the
        foreground, `kill %1` (SIGTERM to the job's group) for one started with `&`; SIGKILL
        after STOP_TIMEOUT. Reaped either way."""
        if self.proc.poll() is None:
            signum = signal.SIGTERM if self.command.background else signal.SIGINT
            _signal_group(self.proc.pid, signum)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Whatever it started in its group (a pipeline's other side) goes with it.
        _signal_group(self.proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Watch:
    """A stream under way and what counts as its first message."""

    running: Running
    printed: Callable[[Running], bool]


def _as_in_a_terminal() -> None:
    """In the child before exec: Ctrl-C and Ctrl-\\ do what they do to a command typed in a
    terminal, whatever this process was given. A suite started in the background of a
    non-interactive shell ignores SIGINT and SIGQUIT (CI's durations show it), every child
    inherits that, and a shell cannot undo it for its commands: curl, a Python script or
    `pushsvc subscribe` then ignored the Ctrl-C that stops them here, and each waited
    STOP_TIMEOUT for its SIGKILL (15 s a stream; the examples took four times as long)."""
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    die_with_parent()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _tail(text: str, limit: int = 1500) -> str:
    text = text.rstrip()
    return text if len(text) <= limit else "…" + text[-limit:]


class Newcomer:
    """The shell state shared by the pages' blocks: `run(block)` answers its problems, if any."""

    def __init__(self, home: Path, logs: Path, redis_port: Callable[[], int]) -> None:
        self.home = home
        self.cwd = home
        self.logs = logs
        self._redis_port = redis_port
        self.http_port = free_port()
        self.ports: dict[int, int] = {EXAMPLE_HTTP_PORT: self.http_port}
        self.env = newcomer_env()
        self.env["PUSHSVC_PORT"] = str(self.http_port)
        self.env["PUSHSVC_URL"] = f"http://127.0.0.1:{self.http_port}"
        self.servers: list[Running] = []
        self._env_file = logs / "env"
        self.transcript = logs / "transcript.txt"
        """Every command and what it printed (a server's or a `&` stream's: its own file)."""

    # ------------------------------------------------------------------ the blocks

    def start_install(self, block: Block) -> None:
        """The README's first command, which installs and starts a server: run it as it
        stands (its port from PUSHSVC_PORT) and wait for the server, longer than for others."""
        commands = shell_commands(block, self._text(block))
        if len(commands) != 1 or not commands[0].text.rstrip().endswith("pushsvc serve"):
            raise AssertionError(
                f"{block.name}: the first command installs and starts the server, one line "
                f"ending in `pushsvc serve`; it is {block.text!r}"
            )
        command = commands[0]
        running = self._start(command)
        self.servers.append(running)
        problem = self._wait_http(running, self.http_port, INSTALL_TIMEOUT)
        if problem:
            raise AssertionError(f"{command.where}: {problem}")

    def run(self, block: Block) -> list[str]:
        """Run one block; what went wrong, one line (and an output tail) each."""
        text = self._text(block)
        left = _FIXED_PORT.search(text)
        if left is not None:
            return [f"{block.name}: names {left[0]!r}, which the test cannot move to a free port"]
        problems: list[str] = []
        if block.lang == "python":
            problems += self._python(block, text)
        else:
            started_server = False
            watching: list[Watch] = []
            for command in shell_commands(block, text):
                if command.kind is Kind.SERVER and not started_server:
                    problems += self._stop_servers()
                    started_server = True
                problems += self._command(block, command, watching)
            for watch in watching:
                problems += self._finish(block, watch)
        problems += self._server_logs()
        return problems

    def close(self) -> list[str]:
        return self._stop_servers()

    # ------------------------------------------------------------------ commands

    def _command(self, block: Block, command: Command, watching: list[Watch]) -> list[str]:
        where = f"{command.where}: `{command.text}`"
        if "redis-cli" in command.words and not {"-u", "-p", "-h"} & set(command.words):
            return [f"{where}: redis-cli without -u would reach the machine's own Redis"]
        if command.kind is Kind.SERVER:
            running = self._start(command)
            self.servers.append(running)
            problem = self._wait_server(running)
            return [f"{where}: {problem}"] if problem else []
        if command.kind is Kind.FOLLOW:
            watch = self._watch(command)
            if command.background:
                watching.append(watch)
                return self._wait_started(watch)
            return self._finish(block, watch)
        if command.background:
            return [f"{where}: runs in the background, and nothing here knows when it is done"]
        return self._complete(block, command)

    def _complete(self, block: Block, command: Command) -> list[str]:
        where = f"{command.where}: `{command.text}`"
        script = (
            f"{command.text}\n__status=$?\nenv -0 > {shlex.quote(str(self._env_file))}\n"
            "exit $__status\n"
        )
        proc = subprocess.Popen(
            ["bash", "-c", script], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            start_new_session=True, preexec_fn=_as_in_a_terminal,
        )  # fmt: skip
        try:
            output, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return [f"{where}: still running after {COMMAND_TIMEOUT:.0f} s:\n{_tail(output)}"]
        finally:
            _signal_group(proc.pid, signal.SIGKILL)  # nothing it left behind outlives it
        self._take_env()
        problems = self._read(block, where, output)
        if proc.returncode != 0:
            problems.append(f"{where}: exit status {proc.returncode}:\n{_tail(output)}")
        return problems

    def _python(self, block: Block, text: str) -> list[str]:
        path = self.logs / f"{Path(block.file).stem}_line{block.line}.py"
        path.write_text(text, encoding="utf-8")
        command = Command(
            text=f"python3 {shlex.quote(str(path))}",
            file=block.file,
            line=block.line + 1,
            kind=Kind.FOLLOW
            if _PYTHON_LOOP.search(text) and _PYTHON_STREAM.search(text)
            else Kind.PLAIN,
            background=False,
            words=("python3", str(path)),
        )
        if command.kind is Kind.FOLLOW:
            return self._finish(block, self._watch(command))
        return self._complete(block, command)

    def _watch(self, command: Command) -> Watch:
        printed = self._message_check(command)  # before it starts: it may look at the server
        return Watch(self._start(command), printed)

    def _finish(self, block: Block, watch: Watch) -> list[str]:
        """Wait until the stream printed a message (or ended, or took too long); stop it."""
        running, printed = watch.running, watch.printed
        command = running.command
        where = f"{command.where}: `{command.text}`"
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while not printed(running) and running.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        ok = printed(running)
        alive = running.alive()
        output = running.output()  # what it printed up to here: stopping it may print more
        running.stop()
        problems = self._read(block, where, output)
        if not ok and alive:
            problems.append(
                f"{where}: printed no message in {MESSAGE_TIMEOUT:.0f} s:\n{_tail(output)}"
            )
        elif not ok:
            problems.append(
                f"{where}: ended (status {running.proc.returncode}) before printing a message:"
                f"\n{_tail(output)}"
            )
        return problems

    def _wait_started(self, watch: Watch) -> list[str]:
        """A `curl -N … &`: until it printed its first line (or ended, or took too long)."""
        running = watch.running
        if running.command.program != "curl":
            return []
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while not running.stdout() and running.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if running.stdout() or not running.alive():
            return []  # an ended one is reported when its block is done
        return [
            f"{running.command.where}: `{running.command.text}` printed nothing in "
            f"{MESSAGE_TIMEOUT:.0f} s:\n{_tail(running.output())}"
        ]

    def _message_check(self, command: Command) -> Callable[[Running], bool]:
        """What counts as the stream's first message, by program."""
        program = command.program
        if program == "curl":
            return lambda r: _SSE_MESSAGE.search(r.stdout()) is not None
        if program == "python3":
            return lambda r: _CLIENT_MESSAGE.search(r.stdout()) is not None
        if program == "pushsvc subscribe":
            return lambda r: any(_json_line(line) for line in r.stdout().splitlines())
        if program == "pushsvc demo":
            return lambda r: bool(r.output().strip())  # its first log line
        if program == "pushsvc alerts":
            # The active instances, then each change: with none active it prints nothing and
            # waits, so its stream opening on the server is its message.
            base = _option(command.words, "--url") or self.env.get("PUSHSVC_URL", "")
            before = _stream_connects(base)
            return lambda r: (
                any(_json_line(line) for line in r.stdout().splitlines())
                or _stream_connects(base) > before
            )
        raise AssertionError(f"no idea what a message of {program!r} looks like")

    def _read(self, block: Block, where: str, output: str) -> list[str]:
        with self.transcript.open("a", encoding="utf-8") as transcript:
            transcript.write(f"$ {where}\n{output.rstrip()}\n\n")
        if TRACEBACK in output:
            return [f"{where}: printed a traceback:\n{_tail(output)}"]
        if block.error_expected is None and ERROR_BODY.search(output):
            return [f"{where}: answered an error:\n{_tail(output)}"]
        return []

    # ------------------------------------------------------------------ servers

    def _start(self, command: Command) -> Running:
        # A `&` job is started as typed, and its shell waits for it: it ends when the job does.
        script = f"{command.text}\nwait $!" if command.background else command.text
        return Running(command, ["bash", "-c", script], self.cwd, dict(self.env), self.logs)

    def _wait_server(self, running: Running) -> str | None:
        words = running.command.words
        if words[1] == "aggregate":
            return self._wait_log(running, _AGGREGATOR_READY, READY_TIMEOUT)
        port = _option(words, "--port") or self.env.get("PUSHSVC_PORT", str(EXAMPLE_HTTP_PORT))
        return self._wait_http(running, int(port), READY_TIMEOUT)

    def _wait_http(self, running: Running, port: int, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not running.alive():
                return f"exited with status {running.proc.returncode}:\n{_tail(running.output())}"
            if _status(port, "/healthz") == 200:
                return None
            time.sleep(0.1)
        return f"did not answer on port {port} in {timeout:.0f} s:\n{_tail(running.output())}"

    def _wait_log(self, running: Running, pattern: re.Pattern[str], timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern.search(running.output()):
                return None
            if not running.alive():
                return f"exited with status {running.proc.returncode}:\n{_tail(running.output())}"
            time.sleep(0.1)
        return f"logged no {pattern.pattern!r} in {timeout:.0f} s:\n{_tail(running.output())}"

    def _stop_servers(self) -> list[str]:
        servers, self.servers = self.servers, []
        for running in servers:
            running.stop()
        return self._server_logs(servers)

    def _server_logs(self, servers: list[Running] | None = None) -> list[str]:
        problems = []
        for running in self.servers if servers is None else servers:
            output = running.output()
            new, running.checked = output[running.checked :], len(output)
            if TRACEBACK in new:
                problems.append(
                    f"{running.command.where}: `{running.command.text}` logged a "
                    f"traceback:\n{_tail(new, 3000)}"
                )
        return problems

    # ------------------------------------------------------------------ shell state

    def _text(self, block: Block) -> str:
        """The block's text with the ports it names moved to free ones of the test's own."""
        for port in ports_named(block.text):
            if port not in self.ports:
                self.ports[port] = self._redis_port() if port == EXAMPLE_REDIS_PORT else free_port()
        return substitute_ports(block.text, self.ports)

    def _take_env(self) -> None:
        """What the command left in its shell's environment becomes the next command's."""
        if not self._env_file.exists():
            return
        raw = self._env_file.read_bytes()
        self._env_file.unlink()
        env = {}
        for item in raw.split(b"\0"):
            name, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                env[name] = value
        self.cwd = Path(env.get("PWD", str(self.cwd)))
        self.env = {name: value for name, value in env.items() if name not in _SHELL_OWN}


def newcomer_env() -> dict[str, str]:
    """This machine's environment as a person's shell has it: no PUSHSVC_* setting, no virtual
    environment active, and no directory on PATH that holds the test suite's own pushsvc."""
    ours = {str(Path(sys.executable).parent), str(Path(sys.prefix) / "bin")}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in ours]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PUSHSVC_", "PYTEST_"))
        and name not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"  # a terminal shows each print at once
    return env


def _json_line(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _stream_connects(base: str) -> float:
    """The server's count of streams opened so far (`pushsvc_stream_connects_total`)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return 0.0
    finally:
        conn.close()
    found = re.search(r"^pushsvc_stream_connects_total (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0
