"""`pushsvc` and `python -m pushsvc`.

The commands that serve (serve, web, aggregate) run on gevent, which must patch the standard
library before anything imports it; the tools (publish, subscribe, replay) are plain blocking
programs and are left unpatched.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

SERVING = frozenset({"serve", "web", "aggregate"})


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand in `argv` (without the program name): its first non-option argument.

    Safe because the group itself takes no option with a value (only --version and --help).
    """
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main() -> None:
    if command_of(sys.argv[1:]) in SERVING:
        from gevent import monkey

        monkey.patch_all()
    from pushsvc.cli import main as cli

    cli(prog_name="pushsvc")


if __name__ == "__main__":
    main()
