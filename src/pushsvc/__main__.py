"""`pushsvc` and `python -m pushsvc`.

The commands that serve (serve, web, aggregate) run on gevent, which must patch the standard
library before anything imports it; the tools (publish, subscribe, replay) are plain blocking
programs and are left unpatched.
"""

from __future__ import annotations

import functools
import importlib.metadata
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

SERVING = frozenset({"serve", "web", "aggregate"})


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand in `argv` (without the program name): its first non-option argument.

    Safe because the group itself takes no option with a value (only --version and --help).
    """
    return next((arg for arg in argv if not arg.startswith("-")), None)


@contextmanager
def entry_points_read_once() -> Iterator[None]:
    """Meanwhile, `importlib.metadata.entry_points` reads each group's entry points once.

    gevent's `patch_all` looks up its plugins' entry points before and after patching each
    module, 25 lookups of 6 groups, and each lookup reads every installed distribution's
    metadata anew: a tenth of a second of every server's start in an environment of a
    hundred packages.
    """
    read = importlib.metadata.entry_points
    importlib.metadata.entry_points = functools.cache(read)  # type: ignore[assignment]
    try:
        yield
    finally:
        importlib.metadata.entry_points = read


def main() -> None:
    try:
        if command_of(sys.argv[1:]) in SERVING:
            from gevent import monkey

            with entry_points_read_once():
                monkey.patch_all()
        from pushsvc.cli import main as cli
    except KeyboardInterrupt:
        # Stopped while still starting (Ctrl-C, or `serve --workers` stopping a worker it
        # just started): one line, as click says once running, not an import's traceback.
        print("Aborted!", file=sys.stderr)
        sys.exit(130)
    cli(prog_name="pushsvc")


if __name__ == "__main__":
    main()
