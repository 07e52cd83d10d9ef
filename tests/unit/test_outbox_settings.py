"""The outbox's settings and names, pure: the DSN never prints its password, a table name is
one plain identifier, and the keys the reader derives are valid idempotency keys."""

from __future__ import annotations

import pytest

from pushsvc.config import Settings
from pushsvc.core.idempotency import check_key
from pushsvc.errors import ConfigError
from pushsvc.ingest.outbox_dsn import PostgresDsn, redact_dsn
from pushsvc.ingest.outbox_sql import check_table, ddl, derived_key, lease_key


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/shop", "postgresql://app:***@db:5432/shop"),
        ("postgres://app:s3cret@db/shop?sslmode=require", "postgres://app:***@db/shop?sslmode=require"),
        ("postgresql://app@db/shop?password=s3cret&sslmode=require",
         "postgresql://app@db/shop?password=***&sslmode=require"),
        ("host=db user=app password=s3cret dbname=shop",
         "host=db user=app password=*** dbname=shop"),
        ("host=db password = 's3 cret' dbname=shop", "host=db password = *** dbname=shop"),
        ("postgresql://app@db/shop", "postgresql://app@db/shop"),
    ],
)  # fmt: skip
def test_a_dsn_shows_no_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert "s3" not in repr(PostgresDsn(dsn)) and "s3" not in str(PostgresDsn(dsn))


def test_the_settings_keep_the_dsn_and_show_it_redacted() -> None:
    settings = Settings.load({"outbox_dsn": "postgresql://app:s3cret@db/shop"}, {})
    assert settings.outbox_dsn is not None
    assert settings.outbox_dsn.value == "postgresql://app:s3cret@db/shop"
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(settings.redacted())
    assert settings.outbox_table == "pushsvc_outbox"
    assert Settings.load({}, {}).outbox_dsn is None


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("outbox_dsn", "db.example.com", "--outbox-dsn / PUSHSVC_OUTBOX_DSN"),
        ("outbox_table", "Outbox", "--outbox-table / PUSHSVC_OUTBOX_TABLE"),
        ("outbox_table", "app.outbox", "--outbox-table"),
        ("outbox_table", "x" * 60, "--outbox-table"),
    ],
)
def test_bad_outbox_settings_stop_the_process_naming_them(
    setting: str, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.load({setting: value}, {})


@pytest.mark.parametrize(
    "dsn", ["db:5432 s3cret", "mysql://app:s3cret@db/shop", "host=db s3cret", "host=db x=s3cret"]
)
def test_a_bad_dsn_is_refused_without_echoing_it(dsn: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.load({"outbox_dsn": dsn}, {})
    assert "s3cret" not in str(raised.value)


def test_derived_keys_are_valid_idempotency_keys_and_the_lease_key_is_stable() -> None:
    table = check_table("o" * 58)
    assert check_key([derived_key(table, 2**63 - 1)]) == derived_key(table, 2**63 - 1)
    assert derived_key("a", 1) != derived_key("b", 1) != derived_key("a", 2)
    assert lease_key("pushsvc_outbox") == lease_key("pushsvc_outbox") != lease_key("other")
    assert -(2**63) <= lease_key("pushsvc_outbox") < 2**63
    assert "CREATE TABLE pushsvc_outbox_dead" in ddl()
