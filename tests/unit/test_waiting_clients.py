"""The connections waiting on their client: the oldest shed first, past the cap, past the
per-address cap (only once they have waited `min_age_s`), or on demand (whatever their age)."""

from __future__ import annotations

from itertools import islice, takewhile

from hypothesis import given
from hypothesis import strategies as st

from pushsvc.http.waiting_clients import WaitingClients


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


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["start", "end", "shed"]),
            st.integers(0, 5),
            st.integers(0, 1),
            st.sampled_from([0.0, 0.5, 1.0]),
        )
    )
)
def test_against_a_list_of_the_waiting_in_the_order_they_began(
    steps: list[tuple[str, int, int, float]],
) -> None:
    cap, per_address, min_age = 4, 2, 1.0
    clock = Clock()
    clients = WaitingClients(cap=cap, per_address=per_address, min_age_s=min_age, clock=clock)
    connections = [Connection(str(i)) for i in range(6)]
    model: list[tuple[Connection, int, float]] = []  # (connection, address, since), oldest first
    expected_shed = [0] * 6

    def shed_in_model(entries: list[tuple[Connection, int, float]]) -> None:
        for entry in entries:
            model.remove(entry)
            expected_shed[connections.index(entry[0])] += 1

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
            if len(mine) >= per_address:
                shed_in_model(old_enough(mine, len(mine) - per_address + 1))
            if len(model) >= cap:
                shed_in_model(old_enough(model, len(model) - cap + 1))
            model.append((conn, address, clock.now))
            clients.started(conn, f"10.0.0.{address}")
        elif action == "end":
            model[:] = [e for e in model if e[0] is not conn]
            clients.ended(conn)
        else:
            count = index % 3
            shed_in_model(model[:count])
            clients.shed(count)
        assert len(clients) == len(model)
    assert [c.shed_count for c in connections] == expected_shed
