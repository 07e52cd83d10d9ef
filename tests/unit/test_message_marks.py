"""Whether an update holds a message is told once per update and kept on it
(`Projection.holds_message`): many streams replaying the last messages of one history
(`?replay=`) parse each message once between them, not once each."""

from __future__ import annotations

from harness.fenced_publish import publish as publish_fenced

from pushsvc.broker.memory import MemoryBroker
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId
from pushsvc.deliver.message_replay import cursor_before_last
from pushsvc.deliver.projection import Projection

MESSAGES = Projection(None, None, messages=True)


def _update(n: int, event: bytes) -> Update:
    body = b'{"ts":%d,"event":%s,"windows":{}}' % (n, event)
    return Update.numbered("t", UpdateId("e", 0, n), n, body)


def test_it_is_told_once_and_kept() -> None:
    message = _update(1, b'{"value":null,"ts":1,"type":"m","data":{"k":1}}')
    plain = _update(2, b'{"value":3,"ts":2}')
    tagged = _update(3, b'{"value":3,"ts":3,"tags":{"a":"1","type":"x"}}')  # holds the mark
    assert [MESSAGES.holds_message(u) for u in (message, plain, tagged)] == [True, False, False]
    assert (message.holds_message, plain.holds_message, tagged.holds_message) == (
        True,
        False,
        False,
    )
    assert MESSAGES.message_of(message) == ("m", b'{"k":1}')
    # Once told it holds none, it is not parsed again.
    message.holds_message = False
    assert MESSAGES.holds_message(message) is False and MESSAGES.message_of(message) is None


def test_replays_of_the_last_messages_tell_each_update_once() -> None:
    broker = MemoryBroker.serving()
    try:
        drafts = [
            UpdateDraft(
                "t",
                n,
                b'{"ts":%d,"event":{"value":null,"ts":%d,"type":"m","data":%d},'
                b'"windows":{}}' % (n, n, n),
            )
            for n in range(1, 6)
        ]
        publish_fenced(broker, drafts)
        first = cursor_before_last(broker, TopicMatcher(["t"]), 3)
        kept = broker.history("t", limit=10).updates
        assert all(u.holds_message for u in kept)
        assert cursor_before_last(broker, TopicMatcher(["t"]), 3) == first
    finally:
        broker.close()
