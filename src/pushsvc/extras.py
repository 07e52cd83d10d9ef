"""Optional dependencies: the `tools` extra, and the one message when it is missing.

The server never imports pandas, numpy or tqdm; `pushsvc replay` (a CSV read with pandas, a
tqdm progress bar) and `Client.history()` (a pandas DataFrame) do, so they live in the
`tools` extra and a plain `pip install .` stays small and quick to start.
"""

from __future__ import annotations

import importlib.util

from pushsvc.errors import PushsvcError


class MissingExtra(PushsvcError, ImportError):
    """A feature needs a package of an extra that is not installed."""


def require(feature: str, *modules: str) -> None:
    """Raise MissingExtra naming what `feature` lacks and how to install it, when any of
    `modules` cannot be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"{feature} needs {_listed(missing)}, which the tools extra installs: "
            "pip install 'pushsvc[tools]' (from a checkout: pip install '.[tools]')"
        )


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
