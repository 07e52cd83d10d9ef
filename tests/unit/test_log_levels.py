"""`--log-level`: a level for every logger, then levels for single loggers; what it refuses,
and what `logs.configure` makes of it. And how the partitions' summary lines write a set of
partitions."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pushsvc.config import Settings
from pushsvc.core.log_levels import LogLevels, parse_log_levels
from pushsvc.core.partition_log import counted, ranges
from pushsvc.errors import ConfigError
from pushsvc.ops import logs


def test_a_level_for_all_then_levels_for_single_loggers() -> None:
    assert parse_log_levels("info") == LogLevels(logging.INFO, ())
    levels = parse_log_levels("WARNING, pushsvc.partitions=debug,httpx=error")
    assert levels == LogLevels(
        logging.WARNING, (("pushsvc.partitions", logging.DEBUG), ("httpx", logging.ERROR))
    )
    assert str(levels) == "warning,pushsvc.partitions=debug,httpx=error"
    # Only loggers named: the rest logs INFO, the default.
    assert parse_log_levels("pushsvc.partitions=debug").root == logging.INFO


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("verbose", "'verbose' is not a level"),
        ("pushsvc.partitions=loud", "'loud' is not a level"),
        ("info,debug", "twice"),
        ("pushsvc partitions=debug", "not a logger name"),
        ("=debug", "not a logger name"),
    ],
)
def test_a_bad_level_stops_the_server_with_its_reason(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match="--log-level / PUSHSVC_LOG_LEVEL") as refused:
        Settings.load({"log_level": text}, environ={})
    assert says in str(refused.value)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {n: logging.getLogger(n).level for n in ("pushsvc.partitions", *logs.QUIET_LOGGERS)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in named.items():
        logging.getLogger(name).setLevel(was)


@pytest.mark.usefixtures("restored_logging")
def test_configure_logs_info_and_a_named_logger_at_its_own_level() -> None:
    logs.configure("text", parse_log_levels("info,pushsvc.partitions=debug"))
    assert logging.getLogger("pushsvc.partitions").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("pushsvc.server").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)  # quiet unless named


def test_partitions_are_written_as_runs() -> None:
    assert ranges([(i, 16) for i in range(16)]) == "0-15"
    assert (
        ranges([(9, 16), (0, 16), (1, 16), (3, 16), (4, 16), (5, 16), (15, 16)]) == "0-1,3-5,9,15"
    )
    assert ranges([]) == ""
    assert (counted(1), counted(16)) == ("1 partition", "16 partitions")
