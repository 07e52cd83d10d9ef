"""Settings: flags win over variables, bad values fail at start-up, secrets stay out of logs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness.live import SRC

from pushsvc.alerts.alertmanager import RESEND_S
from pushsvc.broker.redis.guard import CHECK_EVERY_S
from pushsvc.broker.redis.presence import EXPIRY_US as PRESENCE_EXPIRY_US
from pushsvc.config import RETIRED, Settings, redact_url
from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.core.idempotency import IDEMPOTENCY_WINDOW_US
from pushsvc.core.sizes import parse_size_bytes, size_label
from pushsvc.deliver import priming
from pushsvc.deliver.hub import QUEUE_RUNS
from pushsvc.errors import ConfigError
from pushsvc.ingest.input_limits import MAX_BATCH
from pushsvc.ingest.outbox import POLL_S
from pushsvc.security.backend_auth import ASK_TIMEOUT_S, CACHE_SIZE, MAX_ASKS


def test_defaults_match_the_design() -> None:
    s = Settings.load({}, {})
    assert (s.host, s.port, s.redis_url) == ("127.0.0.1", 8000, None)
    assert s.window_labels == ("10s", "1m", "5m")
    assert (s.tick_us, s.grace_us, s.heartbeat_us) == (1_000_000, 5_000_000, 15_000_000)
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
    ("text", "size"),
    [
        ("1048576", 1 << 20),
        ("512KiB", 512 << 10),
        ("8MiB", 8 << 20),
        (" 256 MiB ", 256 << 20),
        ("2GiB", 2 << 30),
        ("100B", 100),
        ("0", 0),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("text", ["8M", "8MB", "8mib", "1.5MiB", "-1", "", "MiB", "8 MiB of it"])
def test_a_size_in_another_unit_or_none_is_refused(text: str) -> None:
    # `8M` and `8MB` are a megabyte to nginx and a million bytes to Redis: never guessed.
    with pytest.raises(ValueError, match="is not a size"):
        parse_size_bytes(text)


@pytest.mark.parametrize(
    ("size", "label"), [(8 << 20, "8MiB"), (256 << 20, "256MiB"), (1 << 30, "1GiB"), (1536, "1536"),
                        (1 << 10, "1KiB"), (3 << 19, "1536KiB")],
)  # fmt: skip
def test_size_labels_are_exact(size: int, label: str) -> None:
    assert size_label(size) == label
    assert parse_size_bytes(label) == size


def test_byte_bounds_are_given_in_units_and_shown_as_given() -> None:
    defaults = Settings.load({}, {})
    assert (defaults.max_body_bytes, defaults.max_stream_buffer) == (1 << 20, 8 << 20)
    given = Settings.load({"max_stream_buffer": "64MiB"}, {"PUSHSVC_MAX_BODY": "4194304"})
    assert (given.max_stream_buffer, given.max_body_bytes) == (64 << 20, 4 << 20)
    shown = given.redacted()
    assert (shown["max_stream_buffer"], shown["max_body"]) == ("64MiB", "4MiB")


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("windows", "10x", "--windows / PUSHSVC_WINDOWS"),
        ("windows", "10s,10s", "--windows"),
        ("windows", "0s", "--windows"),
        ("port", "http", "--port / PUSHSVC_PORT"),
        ("port", "70000", "--port"),
        ("metrics_port", "70000", "--metrics-port / PUSHSVC_METRICS_PORT"),
        ("history", "0", "--history"),
        ("heartbeat", "0", "--heartbeat"),
        ("redis_url", "http://x", "--redis-url"),
        ("partitions", "0", "--partitions / PUSHSVC_PARTITIONS"),
        ("partitions", "1025", "--partitions"),
        ("max_topics", "0", "--max-topics / PUSHSVC_MAX_TOPICS"),
        ("topic_ttl", "1 hour", "--topic-ttl / PUSHSVC_TOPIC_TTL"),
        ("max_stream_buffer", "8MB", "--max-stream-buffer / PUSHSVC_MAX_STREAM_BUFFER"),
        ("max_body", "1.5MiB", "--max-body / PUSHSVC_MAX_BODY"),
    ],
)
def test_bad_values_raise_naming_the_setting(setting: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.load({setting: value}, {})


@pytest.mark.parametrize(
    ("setting", "value", "takes"),
    [
        ("port", "abc", "is not a TCP port (0 to 65535)"),
        ("history", "many", "must be a positive integer"),
        ("trusted_proxies", "one", "must be a whole number, 0 or more"),
        ("partitions", "lots", "is not a whole number of partitions"),
        ("publish_rate", "fast", "must be a positive number of events per second"),
    ],
)
def test_a_number_setting_given_words_says_what_it_takes(
    setting: str, value: str, takes: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.load({setting: value}, {})
    assert str(raised.value).endswith(f"{value!r} {takes}")
    assert "literal" not in str(raised.value) and "convert" not in str(raised.value)


def test_the_cli_names_a_port_that_is_no_number_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushsvc", "serve"],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "PUSHSVC_PORT": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "pushsvc: invalid --port / PUSHSVC_PORT: 'abc' is not a TCP port (0 to 65535)\n"
    )


def test_the_settings_line_shows_durations_and_tiers_as_they_are_written() -> None:
    shown = Settings.load({"topic_ttl": "0", "tick": "500ms"}, {}).redacted()
    assert shown["windows"] == "10s,1m,5m"
    assert shown["series"] == "1s:15m,1m:24h"
    assert (shown["tick"], shown["heartbeat"], shown["topic_ttl"]) == ("500ms", "15s", "0")


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
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "PUSHSVC_GRACE": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "PUSHSVC_GRACE" in result.stderr


def test_a_topic_no_rule_matches_has_every_statistic_but_rate() -> None:
    stats = Settings.load({}, {}).rules.default.stats
    assert stats[:3] == ("count", "sum", "mean") and stats[-3:] == ("p50", "p90", "p99")
    assert "rate" not in stats


def test_topic_limits_are_settings_and_a_ttl_of_0_never_forgets() -> None:
    env = {"PUSHSVC_MAX_TOPICS": "500", "PUSHSVC_TOPIC_TTL": "10m"}
    settings = Settings.load({}, env)
    assert (settings.max_topics, settings.topic_ttl_us) == (500, 600_000_000)
    assert Settings.load({"topic_ttl": "0"}, env).topic_ttl_us == 0


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
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"pushsvc: cannot listen on 127.0.0.1:{port}: address already in use; another server "
        "listens there; choose another port with --port or PUSHSVC_PORT"
    ]


def test_alert_changes_are_kept_as_long_as_the_longest_series() -> None:
    day = 86_400 * 1_000_000
    assert Settings.load({}, {}).alert_keep_us == day  # 1s:15m,1m:24h
    assert Settings.load({"series": "1m:2d"}, {}).alert_keep_us == 2 * day
    assert Settings.load({"series": "none"}, {}).alert_keep_us == day


def _data_dir_cases(root: Path) -> dict[str, tuple[str, str]]:
    """(the --data-dir given, what its one line says) by case; `root` is world-readable."""
    (root / "a-file").write_text("not a directory")
    read_only = root / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    return {
        "a file": (str(root / "a-file"), "is a file, not a directory"),
        "under a file": (str(root / "a-file" / "data"), "Not a directory"),
        "under /proc": ("/proc/pushsvc-data", "No such file or directory"),
        "a read-only parent": (str(read_only / "data"), "Permission denied"),
    }


@pytest.mark.parametrize("case", ["a file", "under a file", "under /proc", "a read-only parent"])
def test_a_data_dir_that_cannot_be_made_stops_the_server_with_one_line(case: str) -> None:
    with tempfile.TemporaryDirectory() as made:
        root = Path(made)
        root.chmod(0o755)
        given, says = _data_dir_cases(root)[case]
        command = [sys.executable, "-m", "pushsvc", "serve", "--port", "0", "--data-dir", given]
        if os.geteuid() == 0 and case == "a read-only parent":
            # root writes anywhere: run it without its capabilities, as a service would be.
            if shutil.which("setpriv") is None:
                pytest.skip("as root, needs setpriv (util-linux) to drop capabilities")
            command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *command]
        result = subprocess.run(
            command,
            env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pushsvc: invalid --data-dir / PUSHSVC_DATA_DIR: ")
    assert repr(given) in lines[0] and says in lines[0], lines[0]
    assert not os.path.exists(given) or case == "a file"  # nothing made on the way


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PUSHSVC_ANONYMOUS": "public.*"}, "--anonymous (PUSHSVC_ANONYMOUS) only applies"),
        ({"PUSHSVC_TOKEN_QUERY": "true"}, "--token-query (PUSHSVC_TOKEN_QUERY) only applies"),
        (
            {"PUSHSVC_ANONYMOUS": "public.*", "PUSHSVC_TOKEN_QUERY": "1"},
            "--anonymous (PUSHSVC_ANONYMOUS) and --token-query (PUSHSVC_TOKEN_QUERY) only apply",
        ),
    ],
)
def test_auth_only_settings_with_auth_off_stop_the_server_with_one_line(
    env: dict[str, str], named: str
) -> None:
    """With auth off every topic is anyone's: an operator who names public topics (or allows
    tokens in URLs) believes the others closed, so the server refuses to start open."""
    result = subprocess.run(
        [sys.executable, "-m", "pushsvc", "serve", "--port", "0"],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pushsvc: {named} with auth on: without --jwt-key"), lines[0]
    # With the key, or with the settings at their defaults, the same settings load.
    Settings.load({"jwt_key": "k" * 32}, env)
    Settings.load({"anonymous": "", "token_query": "false"}, {})


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"auth_url": "ftp://app/auth"}, "--auth-url / PUSHSVC_AUTH_URL: 'ftp://app/auth' is not"),
        ({"auth_url": "http://app/auth", "auth_cookies": "a b"}, "'a b' is not a cookie name"),
        ({"auth_url": "http://app/auth", "token_query": "true"}, "needs --jwt-key"),
    ],
)
def test_bad_auth_proxy_settings_stop_the_server_naming_them(
    given: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        Settings.load(given, {})


def test_the_auth_proxy_turns_auth_on_alone() -> None:
    """--anonymous applies with the proxy and no key; the URL's password is redacted."""
    settings = Settings.load(
        {"auth_url": "http://pushsvc:s3cret@app:5000/auth", "anonymous": "public.*"}, {}
    )
    assert settings.auth_cookies == ()
    assert "s3cret" not in str(settings.redacted())


FIXED = sorted(set(RETIRED) - {"shard"})


@pytest.mark.parametrize("name", FIXED)
def test_a_setting_that_is_no_longer_one_stops_the_server_saying_what_it_is_now(name: str) -> None:
    flag, variable = "--" + name.replace("_", "-"), f"PUSHSVC_{name.upper()}"
    for overrides, environ in (({name: "1"}, {}), ({}, {variable: "1"})):
        with pytest.raises(ConfigError) as raised:
            Settings.load(overrides, environ)
        said = str(raised.value)
        assert f"{flag} / {variable} is no longer a setting: " in said
        assert "\n" not in said


def test_what_a_fixed_setting_says_it_is_now_is_what_the_product_uses() -> None:
    """Each line names the value the code holds (a constant changed must change its line)."""
    said = {
        "redis_check": duration_label(int(CHECK_EVERY_S * 1_000_000)),
        "presence_expiry": duration_label(PRESENCE_EXPIRY_US),
        "max_priming": str(priming.DEFAULT_LIMIT),
        "alertmanager_resend": duration_label(int(RESEND_S * 1_000_000)),
        "auth_cache_size": str(CACHE_SIZE),
        "queue_size": str(QUEUE_RUNS),
        "auth_timeout": duration_label(int(ASK_TIMEOUT_S * 1_000_000)),
        "auth_max_asks": str(MAX_ASKS),
        "idempotency_window": duration_label(IDEMPOTENCY_WINDOW_US),
        "outbox_poll": duration_label(int(POLL_S * 1_000_000)),
        "max_batch": str(MAX_BATCH),
    }
    for name, value in said.items():
        assert re.search(rf"\b{re.escape(value)}\b", RETIRED[name]), (name, value)


def test_derived_bounds_follow_the_setting_they_come_from() -> None:
    defaults = Settings.load({}, {})
    # As the settings they replace were by default.
    assert defaults.body_read_timeout_us == 10_000_000
    assert (defaults.max_waiting_per_ip, defaults.shed_rate) == (256, 256)
    given = Settings.load({"body_timeout": "3s", "max_waiting": "160"}, {})
    assert given.body_read_timeout_us == 1_000_000
    assert (given.max_waiting_per_ip, given.shed_rate) == (10, 10)
    least = Settings.load({"max_waiting": "1"}, {})
    assert (least.max_waiting_per_ip, least.shed_rate) == (1, 1)


def test_the_bounds_derived_since_keep_their_defaults_and_follow_their_setting() -> None:
    defaults = Settings.load({}, {})
    assert defaults.checkpoint_interval_us == defaults.lease_us == 5_000_000
    assert defaults.header_timeout_us == 10_000_000
    assert defaults.slow_client_timeout_us == 30_000_000
    assert defaults.max_message_bytes == 64 << 10
    assert defaults.stream_buffer_budget == 256 << 20
    given = Settings.load(
        {"lease": "2s", "body_timeout": "600ms", "max_body": "64KiB", "max_stream_buffer": "1MiB"},
        {},
    )
    assert given.checkpoint_interval_us == 2_000_000
    assert (given.header_timeout_us, given.slow_client_timeout_us) == (200_000, 600_000)
    assert given.max_message_bytes == 4 << 10
    assert given.stream_buffer_budget == 32 << 20
    # A body too small for a sixteenth still takes the smallest message (data null).
    assert Settings.load({"max_body": "16"}, {}).max_message_bytes == 4


def test_a_publishers_share_of_topics_is_a_quarter_of_the_table_unless_set() -> None:
    assert Settings.load({}, {}).topic_share == 26_214  # a quarter of what 1 GiB holds
    assert Settings.load({"max_topics": "3"}, {}).topic_share == 1
    given = Settings.load({"max_topics": "100", "max_topics_per_publisher": "60"}, {})
    assert given.topic_share == 60
    # At most the table: a share past it would be the table.
    least = Settings.load({"max_topics": "10", "max_topics_per_publisher": "60"}, {})
    assert least.topic_share == 10
    with pytest.raises(ConfigError, match="--max-topics-per-publisher"):
        Settings.load({"max_topics_per_publisher": "0"}, {})


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--queue-size", "8"], {}, "--queue-size / PUSHSVC_QUEUE_SIZE"),
        (
            [],
            {"PUSHSVC_BODY_READ_TIMEOUT": "5s"},
            "--body-read-timeout / PUSHSVC_BODY_READ_TIMEOUT",
        ),
    ],
)
def test_the_cli_refuses_a_fixed_setting_in_one_line(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushsvc", "serve", *args],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
