"""`?max_hz=` pacing alone, with the clock passed in: at most one update per topic per interval,
always the latest, in id order."""

from __future__ import annotations

import pytest

from pushsvc.core.updates import Kind, Update, UpdateId
from pushsvc.deliver.pacer import Pacer


def _update(topic: str, n: int) -> Update:
    return Update.numbered(topic, UpdateId("ab", 0, n), n, b'{"n":%d}' % n)


def _seqs(updates: list[Update]) -> list[int]:
    return [u.id.seq for u in updates]


def test_the_first_update_of_a_topic_goes_at_once() -> None:
    pacer = Pacer(0.5)
    assert _seqs(pacer.admit([_update("a", 1), _update("b", 2)], now=10.0)) == [1, 2]
    assert not pacer.pending


def test_updates_within_the_interval_are_held_and_only_the_latest_goes() -> None:
    pacer = Pacer(0.5)
    pacer.admit([_update("a", 1)], now=10.0)
    assert pacer.admit([_update("a", 2)], now=10.1) == []
    assert pacer.admit([_update("a", 3)], now=10.2) == []
    assert pacer.pending
    assert pacer.next_due() == pytest.approx(10.5)
    assert pacer.admit([], now=10.49) == []
    assert _seqs(pacer.admit([], now=10.5)) == [3]  # 2 was superseded by 3
    assert not pacer.pending


def test_each_topic_has_its_own_interval() -> None:
    pacer = Pacer(1.0)
    pacer.admit([_update("a", 1)], now=0.0)
    assert _seqs(pacer.admit([_update("a", 2), _update("b", 3)], now=0.5)) == [3]
    assert pacer.next_due() == pytest.approx(1.0)
    assert _seqs(pacer.admit([_update("b", 4)], now=1.0)) == [2]  # b's own interval runs


def test_a_new_update_behind_a_held_one_does_not_jump_the_queue() -> None:
    pacer = Pacer(1.0)
    pacer.admit([_update("a", 1)], now=0.0)
    pacer.admit([_update("a", 2)], now=0.2)
    # Due again: the held update is replaced by the newer one, which goes once.
    assert _seqs(pacer.admit([_update("a", 3)], now=1.5)) == [3]
    assert pacer.admit([], now=1.6) == []


def test_due_updates_of_several_topics_go_in_id_order() -> None:
    pacer = Pacer(1.0)
    pacer.admit([_update("a", 1), _update("b", 2)], now=0.0)
    pacer.admit([_update("b", 3), _update("a", 4)], now=0.5)
    assert _seqs(pacer.admit([], now=1.0)) == [3, 4]


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_the_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError):
        Pacer(interval)


def test_a_deletion_goes_at_once_and_drops_the_update_held_back_of_its_topic() -> None:
    # The held update belongs to the deleted topic: sent after the deletion, it would bring the
    # deleted statistics back.
    pacer = Pacer(0.5)
    pacer.admit([_update("a", 1)], now=10.0)
    assert pacer.admit([_update("a", 2)], now=10.1) == []
    body = b'{"gap":true,"topics":{}}'
    deletion = Update.numbered("a", UpdateId("ab", 0, 3), 3, body, Kind.DELETION)
    assert pacer.admit([deletion], now=10.2) == [deletion]
    assert not pacer.pending
    assert _seqs(pacer.admit([_update("a", 4)], now=10.3)) == []  # the interval still holds
    assert _seqs(pacer.admit([], now=10.5)) == [4]
