"""Private everywhere with the auth proxy in place of tokens: the cases of
test_private_everywhere.py, against a server with no JWT key whose every credential is judged
by the application's backend (tests/support/auth_backend.py, a real process). The callers send
the same `Authorization` headers; pushsvc forwards them to the backend, which grants what they
say. Nothing any caller gets back may differ from what tokens give: the private topic answers
as an unknown one, and no answer names it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness.app_process import AppProcess
from harness.live import PushsvcProcess, request
from test_private_everywhere import (
    serve_private,
    test_a_private_topic_answers_every_query_as_an_unknown_one,
    test_a_reader_of_every_topic_sees_the_private_ones,
    test_a_reader_of_the_private_rule_is_told_its_names,
    test_no_answer_names_what_the_caller_may_not_read,
    test_public_answers_name_no_statistic_or_tag_of_a_private_rule,
    test_rules_show_a_pattern_rule_to_a_reader_of_a_topic_it_covers,
)

__all__ = [
    "test_a_private_topic_answers_every_query_as_an_unknown_one",
    "test_a_reader_of_every_topic_sees_the_private_ones",
    "test_a_reader_of_the_private_rule_is_told_its_names",
    "test_no_answer_names_what_the_caller_may_not_read",
    "test_public_answers_name_no_statistic_or_tag_of_a_private_rule",
    "test_rules_show_a_pattern_rule_to_a_reader_of_a_topic_it_covers",
]


@pytest.fixture(scope="module")
def backend() -> Iterator[AppProcess]:
    with AppProcess("-m", "support.auth_backend") as app:
        yield app


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, backend: AppProcess
) -> Iterator[PushsvcProcess]:
    proc = serve_private(tmp_path_factory, {"PUSHSVC_AUTH_URL": f"{backend.url}/auth"})
    # The setup's posts were judged by the backend: pushsvc has no key to judge tokens by.
    assert "'jwt_key': None" in proc.output[0], proc.output[0]
    assert b'"action":"publish"' in request(backend.port, "GET", "/asks")[2]
    yield proc
    proc.stop()
