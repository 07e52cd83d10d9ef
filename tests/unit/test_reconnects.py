"""The pub/sub readers' waits before they connect again (pushsvc.broker.redis.reconnects):
doubling from the first step to the cap, each between half its step and the whole, apart
from one reader to the next, and from the first step again once a connection worked."""

from __future__ import annotations

from pushsvc.broker.redis.reconnects import Reconnects


def test_each_wait_is_between_half_its_step_and_the_whole_doubling_to_the_cap() -> None:
    reconnects = Reconnects(0.1, 5.0)
    for step in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0):
        assert step / 2 <= reconnects.next_wait_s() <= step


def test_a_connection_that_worked_starts_the_waits_again_from_the_first_step() -> None:
    reconnects = Reconnects(0.1, 5.0)
    for _ in range(6):
        reconnects.next_wait_s()
    reconnects.connected()
    assert 0.05 <= reconnects.next_wait_s() <= 0.1


def test_readers_dropped_together_do_not_come_back_together() -> None:
    """Every web process loses its connection when Redis restarts: their waits differ."""
    first_waits = {Reconnects(0.1, 5.0).next_wait_s() for _ in range(50)}
    assert len(first_waits) > 40


def test_an_outage_of_thousands_of_failures_stays_at_the_cap() -> None:
    reconnects = Reconnects(0.1, 5.0)
    for _ in range(5_000):
        wait = reconnects.next_wait_s()
    assert 2.5 <= wait <= 5.0
