"""The connections waiting on their client: the oldest shed first, past the cap, past the
per-address cap (only once they have waited `min_age_s`), or on demand (whatever their age);
and when accepting pauses: the shedding budget spent, or the cap reached with none to shed."""

from __future__ import annotations

from itertools import islice, takewhile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.http.waiting_clients import NEWCOMER_WAITING, WaitingClients


class Connection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.shed_count = 0

    def shed(self) -> None:
        self.shed_count += 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_past_the_cap_the_connection_that_waited_longest_is_shed() -> None:
    clock = Clock()
    clients = WaitingClients(cap=2, min_age_s=1.0, clock=clock)
    a, b, c = Connection("a"), Connection("b"), Connection("c")
    clients.started(a, "10.0.0.1")
    clients.started(b, "10.0.0.2")
    clock.now = 5.0
    clients.started(a, "10.0.0.1")  # waits anew: now younger than b
    clients.started(c, "10.0.0.3")
    assert (a.shed_count, b.shed_count, c.shed_count) == (0, 1, 0)
    assert len(clients) == 2


def test_past_the_cap_a_connection_that_has_not_waited_long_is_kept() -> None:
    """A burst of connections accepted before their requests came (a reconnect storm) is
    not shed for being many: only the connections that kept the server waiting are."""
    clock = Clock()
    clients = WaitingClients(cap=2, per_address=2, min_age_s=1.0, clock=clock)
    burst = [Connection(str(i)) for i in range(10)]
    for conn in burst:
        clients.started(conn, "10.0.0.1")
    assert [c.shed_count for c in burst] == [0] * 10
    assert len(clients) == 10
    clock.now = 1.0
    late = Connection("late")
    clients.started(late, "10.0.0.1")  # every one of the burst is old enough now
    assert [c.shed_count for c in burst] == [1] * 9 + [0]
    assert clients.shed(100) == 2  # out of descriptors: whatever their age
    assert late.shed_count == 1


def test_past_the_per_address_cap_that_address_loses_its_oldest() -> None:
    told: list[int] = []
    clock = Clock()
    clients = WaitingClients(cap=100, per_address=2, on_shed=told.append, clock=clock)
    a, b, c, other = (Connection(n) for n in "abco")
    clients.started(a, "10.0.0.1")
    clients.started(other, "10.0.0.9")  # older than b and c, from elsewhere: kept
    clients.started(b, "10.0.0.1")
    clock.now = 2.0
    clients.started(c, "10.0.0.1")
    assert (a.shed_count, b.shed_count, c.shed_count, other.shed_count) == (1, 0, 0, 0)
    assert told == [1]


def test_a_connection_that_stopped_waiting_is_never_shed() -> None:
    told: list[int] = []
    clients = WaitingClients(cap=10, on_shed=told.append)
    a, b = Connection("a"), Connection("b")
    clients.started(a, "10.0.0.1")
    clients.started(b, "10.0.0.1")
    clients.ended(a)
    clients.ended(a)  # twice: nothing happens
    assert clients.shed(5) == 1
    assert (a.shed_count, b.shed_count) == (0, 1)
    assert clients.shed(5) == 0
    assert told == [1]


def test_strained_only_newcomers_come_in_and_past_a_burst_of_debt_accepting_pauses() -> None:
    """Two sheds a second (a burst of two). Once they are spent, a connection from an address
    that keeps the server waiting is refused at once, one from an address new to it comes in
    and costs the budget; a burst deeper in debt and accepting pauses until it pays back."""
    clock = Clock()
    cap = NEWCOMER_WAITING
    clients = WaitingClients(cap=cap, per_address=256, min_age_s=0.0, shed_rate=2.0, clock=clock)
    held = [Connection(str(i)) for i in range(cap + 2)]
    for conn in held:
        clients.started(conn, "10.0.0.66")  # the last two shed one each: the budget spent
    assert sum(c.shed_count for c in held) == 2 and clients.strained()
    assert not clients.admits("10.0.0.66")  # refused at once, nothing charged
    assert clients.admits("10.0.0.4") and clients.accept_pause_s() == 0.0
    assert clients.admits("10.0.0.5")  # two tokens in debt: a burst
    assert clients.accept_pause_s() == pytest.approx(0.5)
    clock.now = 0.5
    assert clients.accept_pause_s() == 0.0 and clients.strained()
    clock.now = 1.5
    assert not clients.strained() and clients.admits("10.0.0.66")


def test_at_the_cap_with_none_old_enough_to_shed_only_newcomers_come_in() -> None:
    clock = Clock()
    clients = WaitingClients(cap=NEWCOMER_WAITING, per_address=256, min_age_s=1.0, clock=clock)
    clients.started(Connection("first"), "10.0.0.66")
    clock.now = 0.25
    assert not clients.strained()  # under the cap
    for n in range(NEWCOMER_WAITING - 1):
        clients.started(Connection(str(n)), "10.0.0.66")
    assert clients.strained()
    assert not clients.admits("10.0.0.66") and clients.admits("10.0.0.9")
    clock.now = 1.0
    assert not clients.strained()  # the first may be shed now


def test_behind_a_proxy_no_address_is_refused_each_costs_the_budget() -> None:
    """Without a per-address cap (`--trusted-proxies`) every client comes from the proxy's
    address: strained, none is refused, and past a burst of debt accepting pauses."""
    clock = Clock()
    clients = WaitingClients(cap=NEWCOMER_WAITING, per_address=None, shed_rate=1.0, clock=clock)
    for n in range(NEWCOMER_WAITING):
        clients.started(Connection(str(n)), "10.0.0.1")
    assert clients.strained()
    assert clients.admits("10.0.0.1") and clients.accept_pause_s() == 0.0
    assert clients.admits("10.0.0.1") and clients.accept_pause_s() == pytest.approx(1.0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["start", "end", "shed", "admit"]),
            st.integers(0, 5),
            st.integers(0, 1),
            st.sampled_from([0.0, 0.5, 1.0]),
        )
    )
)
def test_against_a_list_of_the_waiting_in_the_order_they_began(
    steps: list[tuple[str, int, int, float]],
) -> None:
    cap, per_address, min_age, rate = 4, 2, 1.0, 2.0
    clock = Clock()
    clients = WaitingClients(
        cap=cap,
        per_address=per_address,
        min_age_s=min_age,
        shed_rate=rate,
        newcomer_waiting=per_address,
        clock=clock,
    )
    connections = [Connection(str(i)) for i in range(6)]
    model: list[tuple[Connection, int, float]] = []  # (connection, address, since), oldest first
    expected_shed = [0] * 6
    budget = {"tokens": rate, "at": 0.0}  # sheds past a cap: `rate` a second, a burst of as many

    def shed_in_model(entries: list[tuple[Connection, int, float]]) -> int:
        for entry in entries:
            model.remove(entry)
            expected_shed[connections.index(entry[0])] += 1
        return len(entries)

    def tokens() -> float:
        budget["tokens"] = min(rate, budget["tokens"] + (clock.now - budget["at"]) * rate)
        budget["at"] = clock.now
        return budget["tokens"]

    def strained() -> bool:
        if tokens() < 1:
            return True
        return len(model) >= cap and model[0][2] + min_age > clock.now

    def pause() -> float:
        debt = rate + tokens()  # the burst is `rate`
        return 0.0 if debt > 0 else (1 - debt) / rate

    def old_enough(
        entries: list[tuple[Connection, int, float]], count: int
    ) -> list[tuple[Connection, int, float]]:
        return list(takewhile(lambda e: clock.now - e[2] >= min_age, islice(entries, count)))

    for action, index, address, elapsed in steps:
        clock.now += elapsed
        conn = connections[index]
        if action == "start":
            model[:] = [e for e in model if e[0] is not conn]
            mine = [e for e in model if e[1] == address]
            shed = 0
            if len(mine) >= per_address:
                shed += shed_in_model(old_enough(mine, len(mine) - per_address + 1))
            if len(model) >= cap:
                shed += shed_in_model(old_enough(model, len(model) - cap + 1))
            if shed:
                budget["tokens"] = tokens() - shed
            model.append((conn, address, clock.now))
            clients.started(conn, f"10.0.0.{address}")
        elif action == "end":
            model[:] = [e for e in model if e[0] is not conn]
            clients.ended(conn)
        elif action == "admit":
            mine = sum(e[1] == address for e in model)
            expected = not strained() or mine < per_address  # newcomer_waiting
            if strained() and expected:
                budget["tokens"] = tokens() - 1
            assert clients.admits(f"10.0.0.{address}") == expected
        else:
            count = index % 3
            shed_in_model(model[:count])
            clients.shed(count)
        assert len(clients) == len(model)
        assert clients.strained() == strained()
        assert clients.accept_pause_s() == pytest.approx(pause())
    assert [c.shed_count for c in connections] == expected_shed
