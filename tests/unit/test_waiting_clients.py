"""The connections waiting on their client: the oldest shed first, past the cap, past the
per-address cap, or on demand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pushsvc.http.waiting_clients import WaitingClients


class Connection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.shed_count = 0

    def shed(self) -> None:
        self.shed_count += 1


def test_past_the_cap_the_connection_that_waited_longest_is_shed() -> None:
    clients = WaitingClients(cap=2)
    a, b, c = Connection("a"), Connection("b"), Connection("c")
    clients.started(a, "10.0.0.1")
    clients.started(b, "10.0.0.2")
    clients.started(a, "10.0.0.1")  # waits anew: now younger than b
    clients.started(c, "10.0.0.3")
    assert (a.shed_count, b.shed_count, c.shed_count) == (0, 1, 0)
    assert len(clients) == 2


def test_past_the_per_address_cap_that_address_loses_its_oldest() -> None:
    told: list[int] = []
    clients = WaitingClients(cap=100, per_address=2, on_shed=told.append)
    a, b, c, other = (Connection(n) for n in "abco")
    clients.started(a, "10.0.0.1")
    clients.started(other, "10.0.0.9")  # older than b and c, from elsewhere: kept
    clients.started(b, "10.0.0.1")
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
        st.tuples(st.sampled_from(["start", "end", "shed"]), st.integers(0, 5), st.integers(0, 1))
    )
)
def test_against_a_list_of_the_waiting_in_the_order_they_began(
    steps: list[tuple[str, int, int]],
) -> None:
    cap, per_address = 4, 2
    clients = WaitingClients(cap=cap, per_address=per_address)
    connections = [Connection(str(i)) for i in range(6)]
    model: list[tuple[Connection, int]] = []  # (connection, address), oldest first
    expected_shed = [0] * 6

    def shed_in_model(entry: tuple[Connection, int]) -> None:
        model.remove(entry)
        expected_shed[connections.index(entry[0])] += 1

    for action, index, address in steps:
        conn = connections[index]
        model[:] = [e for e in model if e[0] is not conn] if action != "shed" else model
        if action == "start":
            mine = [e for e in model if e[1] == address]
            if len(mine) >= per_address:
                shed_in_model(mine[0])
            if len(model) >= cap:
                shed_in_model(model[0])
            model.append((conn, address))
            clients.started(conn, f"10.0.0.{address}")
        elif action == "end":
            clients.ended(conn)
        else:
            count = index % 3
            for entry in model[:count]:
                shed_in_model(entry)
            clients.shed(count)
        assert len(clients) == len(model) <= cap
    assert [c.shed_count for c in connections] == expected_shed
