"""Each stream's `retry:` is drawn apart (a restart's reconnects spread out), through the view."""

from __future__ import annotations

import re

from conftest import MakeApp


def test_each_stream_is_sent_its_own_retry_between_the_setting_and_twice_it(
    make_app: MakeApp,
) -> None:
    client = make_app(retry="2s").test_client()
    sent = []
    for _ in range(40):
        answer = client.get("/topics/orders/stream")
        try:
            first = next(answer.iter_encoded())
        finally:
            answer.close()
        match = re.fullmatch(rb"retry: (\d+)\n\n", first)
        assert match, first
        sent.append(int(match[1]))
    assert all(2000 <= ms < 4000 for ms in sent), sent
    assert len(set(sent)) > 1, sent
