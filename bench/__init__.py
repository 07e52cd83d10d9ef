"""The benchmarks, a package run from the repository root: `python -m bench.fanout`, ...
(bench/README.md). Tests import its modules the same way (`from bench import common`).

They share the test suite's real parts (`support`, in tests/support: never in the wheel).
pytest puts tests/ on the path (its `pythonpath` setting); a benchmark started from the
root gets it here, so both import `support` under one name.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
