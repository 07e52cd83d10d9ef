"""Settings: flags win over variables, bad values fail at start-up, secrets stay out of logs."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from pushsvc.config import Settings, redact_url
from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.errors import ConfigError
from support.live import SRC


def test_defaults_match_the_design() -> None:
    s = Settings.load({}, {})
    assert (s.host, s.port, s.redis_url) == ("127.0.0.1", 8000, None)
    assert s.window_labels == ("10s", "1m", "5m")
    assert (s.tick_us, s.allowed_lateness_us, s.heartbeat_us) == (1_000_000, 5_000_000, 15_000_000)
    assert s.history == 10_000


def test_flag_wins_over_variable_which_wins_over_default() -> None:
    env = {"PUSHSVC_PORT": "9000", "PUSHSVC_WINDOWS": "1s,2s"}
    assert Settings.load({}, env).port == 9000
    assert Settings.load({"port": "9100"}, env).port == 9100
    assert Settings.load({"port": None}, env).window_labels == ("1s", "2s")


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("500ms", 500_000),
        ("10s", 10_000_000),
        ("1m", 60_000_000),
        ("1h", 3_600_000_000),
        ("2", 2_000_000),
        ("0", 0),
        ("1.5s", 1_500_000),
        ("250us", 250),
    ],
)
def test_durations(text: str, us: int) -> None:
    assert parse_duration_us(text) == us


@pytest.mark.parametrize(
    ("us", "label"),
    [(10_000_000, "10s"), (60_000_000, "1m"), (90_000_000, "90s"), (1_500, "1500us")],
)
def test_duration_labels(us: int, label: str) -> None:
    assert duration_label(us) == label


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("windows", "10x", "--windows / PUSHSVC_WINDOWS"),
        ("windows", "10s,10s", "--windows"),
        ("windows", "0s", "--windows"),
        ("port", "http", "--port / PUSHSVC_PORT"),
        ("port", "70000", "--port"),
        ("history", "0", "--history"),
        ("heartbeat", "0", "--heartbeat"),
        ("redis_url", "http://x", "--redis-url"),
        ("partitions", "0", "--partitions / PUSHSVC_PARTITIONS"),
        ("partitions", "1025", "--partitions"),
        ("max_topics", "0", "--max-topics / PUSHSVC_MAX_TOPICS"),
        ("topic_ttl", "1 hour", "--topic-ttl / PUSHSVC_TOPIC_TTL"),
        ("idempotency_window", "0", "--idempotency-window / PUSHSVC_IDEMPOTENCY_WINDOW"),
        ("idempotency_window", "10 min", "--idempotency-window"),
        ("alert_retention", "0", "--alert-retention / PUSHSVC_ALERT_RETENTION"),
        ("alert_retention", "a day", "--alert-retention"),
    ],
)
def test_bad_values_raise_naming_the_setting(setting: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.load({setting: value}, {})


def test_passwords_are_redacted() -> None:
    url = "redis://user:s3cret@cache:6379/0"
    assert redact_url(url) == "redis://user:***@cache:6379/0"
    assert "s3cret" not in repr(Settings.load({"redis_url": url}, {}).redacted())


def test_cli_rejects_a_bad_window_with_one_line_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushsvc", "serve", "--windows", "10x"],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--windows" in lines[0] and "10x" in lines[0]


def test_cli_reads_variables_and_reports_them_the_same_way() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushsvc", "serve"],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "PUSHSVC_ALLOWED_LATENESS": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "PUSHSVC_ALLOWED_LATENESS" in result.stderr


def test_statistic_selection() -> None:
    assert Settings.load({}, {}).stats[-3:] == ("p50", "p90", "p99")
    assert Settings.load({"stats": "p99, count"}, {}).stats == ("count", "p99")
    with pytest.raises(ConfigError, match="--stats / PUSHSVC_STATS"):
        Settings.load({"stats": "median"}, {})


def test_topic_limits_are_settings_and_a_ttl_of_0_never_forgets() -> None:
    env = {"PUSHSVC_MAX_TOPICS": "500", "PUSHSVC_TOPIC_TTL": "10m"}
    settings = Settings.load({}, env)
    assert (settings.max_topics, settings.topic_ttl_us) == (500, 600_000_000)
    assert Settings.load({"topic_ttl": "0"}, env).topic_ttl_us == 0


def test_the_idempotency_window_is_10_minutes_unless_set() -> None:
    assert Settings.load({}, {}).idempotency_window_us == 600_000_000
    env = {"PUSHSVC_IDEMPOTENCY_WINDOW": "1h"}
    assert Settings.load({}, env).idempotency_window_us == 3_600_000_000
    assert Settings.load({"idempotency_window": "1500ms"}, env).idempotency_window_us == 1_500_000


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_stops_the_server_with_one_line(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "pushsvc", "serve", "--port", str(port), "--workers", workers],
            env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"pushsvc: cannot listen on 127.0.0.1:{port}: address already in use; another server "
        "listens there; choose another port with --port or PUSHSVC_PORT"
    ]


def test_alert_changes_are_kept_as_long_as_the_longest_series_unless_told() -> None:
    hour, day = 3600 * 1_000_000, 86_400 * 1_000_000
    assert Settings.load({}, {}).alert_keep_us == day  # 1s:15m,1m:24h
    assert Settings.load({"series": "1m:2d"}, {}).alert_keep_us == 2 * day
    assert Settings.load({"series": "none"}, {}).alert_keep_us == day
    told = Settings.load({"series": "1m:2d"}, {"PUSHSVC_ALERT_RETENTION": "6h"})
    assert told.alert_keep_us == 6 * hour
