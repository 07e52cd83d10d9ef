"""The Redis broker's Lua scripts, one file each, like centrifuge's `internal/redis_lua/`.

Each script runs atomically in Redis; its header comment names its KEYS and ARGV.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def source(name: str) -> str:
    """The text of `{name}.lua` beside this module."""
    return files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
