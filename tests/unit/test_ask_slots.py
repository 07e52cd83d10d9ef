"""Asks in flight, bounded per process and per client address (`pushsvc.security.ask_slots`):
one address holds its share at most, the process its bound, and a slot is given back however
its ask ends."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from pushsvc.errors import AuthUnavailable, TooManyRequests
from pushsvc.security.ask_slots import AskSlots, per_address


def test_one_address_holds_a_quarter_of_the_asks_and_the_others_the_rest() -> None:
    slots = AskSlots(64)
    assert slots.per_address == per_address(64) == 16
    with ExitStack() as held:
        for _ in range(16):
            held.enter_context(slots.held("203.0.113.7"))
        with pytest.raises(TooManyRequests) as refused:
            held.enter_context(slots.held("203.0.113.7"))
        assert refused.value.retry_after_s == AuthUnavailable.retry_after_s
        for n in range(48):
            held.enter_context(slots.held(f"198.51.100.{n}"))
        with pytest.raises(AuthUnavailable):  # the process's bound comes first
            held.enter_context(slots.held("192.0.2.1"))
        assert slots.in_flight() == 64 and slots.in_flight("203.0.113.7") == 16
    assert slots.in_flight() == 0 and slots.in_flight("203.0.113.7") == 0


def test_a_slot_is_given_back_when_its_ask_fails() -> None:
    slots = AskSlots(1)
    assert slots.per_address == 1
    with pytest.raises(RuntimeError), slots.held("a"):
        raise RuntimeError("the ask failed")
    with slots.held("a"):
        assert slots.in_flight("a") == 1
