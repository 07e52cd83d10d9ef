"""The outbox's SQL in the docs is the SQL the reader and the tests use (`outbox_sql`): the
DDL and the one-line insert that tests/system/test_outbox.py runs, as they are printed."""

from __future__ import annotations

from pathlib import Path

from pushsvc.ingest.outbox_sql import ddl, insert_example

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_deploy_md_shows_the_ddl_and_the_insert_the_tests_run() -> None:
    text = (DOCS / "deploy.md").read_text(encoding="utf-8")
    assert f"```sql\n{ddl()}```" in text
    assert f"```sql\n{insert_example()}\n```" in text


def test_api_md_shows_the_ddl_and_the_insert_the_tests_run() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    assert f"```sql\n{ddl()}```" in text
    assert insert_example() in text
