"""Each publisher's share of the topic table (`pushsvc.security.topic_shares`), on a clock the
test moves: who holds a topic, when a holding lapses, and what a publisher at its share is
told."""

from __future__ import annotations

import pytest

from pushsvc.errors import TopicShareSpent
from pushsvc.http.api.error_replies import headers_of, status_of
from pushsvc.security.topic_shares import TopicShares

TTL_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _shares(share: int = 2, *, max_topics: int = 100) -> tuple[TopicShares, Clock]:
    clock = Clock()
    return TopicShares(share, ttl_s=TTL_S, max_topics=max_topics, clock=clock), clock


def _nothing_kept(topic: str) -> bool:
    return False


def _create(shares: TopicShares, publisher: str, topic: str) -> None:
    shares.admit(publisher, topic, _nothing_kept)
    shares.note(publisher, topic)


def test_a_publisher_at_its_share_is_refused_a_new_topic_with_retry_after() -> None:
    shares, clock = _shares()
    _create(shares, "a", "a.1")
    clock.now += 10
    _create(shares, "a", "a.2")
    with pytest.raises(TopicShareSpent) as refused:
        shares.admit("a", "a.3", _nothing_kept)
    # Until a.1, the oldest, lapses.
    assert refused.value.retry_after_s == TTL_S - 10
    assert status_of(refused.value) == 429
    assert headers_of(refused.value)["Retry-After"] == str(int(TTL_S - 10))
    assert refused.value.code == "topic_share_spent"
    # Its own topics, another's, and those the broker keeps are still open to it.
    shares.admit("a", "a.1", _nothing_kept)
    shares.admit("a", "kept", lambda topic: topic == "kept")
    # Another publisher has its own share.
    _create(shares, "b", "b.1")
    _create(shares, "b", "b.2")
    assert shares.holding("a") == shares.holding("b") == 2


def test_the_broker_is_asked_only_when_the_share_is_full() -> None:
    shares, _ = _shares()
    asked: list[str] = []

    def kept(topic: str) -> bool:
        asked.append(topic)
        return False

    shares.admit("a", "a.1", kept)
    shares.note("a", "a.1")
    shares.admit("a", "a.2", kept)
    shares.note("a", "a.2")
    shares.admit("a", "a.1", kept)
    assert asked == []
    with pytest.raises(TopicShareSpent):
        shares.admit("a", "a.3", kept)
    assert asked == ["a.3"]


def test_a_holding_lapses_a_ttl_after_its_holders_last_event() -> None:
    shares, clock = _shares()
    _create(shares, "a", "a.1")
    _create(shares, "a", "a.2")
    clock.now += TTL_S - 1
    shares.note("a", "a.1")  # renewed: a.2 is now the oldest
    with pytest.raises(TopicShareSpent) as refused:
        shares.admit("a", "a.3", _nothing_kept)
    assert refused.value.retry_after_s == 1
    clock.now += 1
    _create(shares, "a", "a.3")
    assert shares.holding("a") == 2
    with pytest.raises(TopicShareSpent) as refused:
        shares.admit("a", "a.4", _nothing_kept)
    assert refused.value.retry_after_s == TTL_S - 1  # a.1, renewed a second before a.3


def test_events_to_anothers_topic_neither_renew_nor_take_it() -> None:
    shares, clock = _shares(share=1)
    _create(shares, "a", "t")
    clock.now += TTL_S / 2
    shares.note("b", "t")
    assert (shares.holding("a"), shares.holding("b")) == (1, 0)
    clock.now += TTL_S / 2
    # a's holding lapsed: the topic, still kept thanks to b, is b's to hold now.
    shares.note("b", "t")
    assert (shares.holding("a"), shares.holding("b")) == (0, 1)


def test_a_publisher_with_no_room_holds_nothing_more_by_posting_to_kept_topics() -> None:
    shares, _ = _shares(share=1)
    _create(shares, "a", "a.1")
    shares.admit("a", "kept", lambda topic: True)
    shares.note("a", "kept")
    assert shares.holding("a") == 1
    with pytest.raises(TopicShareSpent):
        shares.admit("a", "a.2", _nothing_kept)


def test_the_ledger_holds_at_most_twice_the_table() -> None:
    shares, clock = _shares(share=5, max_topics=4)
    for n in range(40):
        clock.now += 1
        _create(shares, f"p{n % 10}", f"t{n}")
        assert sum(shares.holding(f"p{p}") for p in range(10)) <= 8


def test_with_topics_never_forgotten_a_refusal_has_no_retry_after() -> None:
    shares = TopicShares(1, ttl_s=0, max_topics=10)
    _create(shares, "a", "a.1")
    with pytest.raises(TopicShareSpent) as refused:
        shares.admit("a", "a.2", _nothing_kept)
    assert refused.value.retry_after_s is None
    assert "Retry-After" not in headers_of(refused.value)
