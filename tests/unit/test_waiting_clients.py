"""The connections waiting on their client: the oldest shed first, past the cap or on demand."""

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
    clients.started(a)
    clients.started(b)
    clients.started(a)  # waits anew: now younger than b
    clients.started(c)
    assert (a.shed_count, b.shed_count, c.shed_count) == (0, 1, 0)
    assert len(clients) == 2


def test_a_connection_that_stopped_waiting_is_never_shed() -> None:
    told: list[int] = []
    clients = WaitingClients(cap=10, on_shed=told.append)
    a, b = Connection("a"), Connection("b")
    clients.started(a)
    clients.started(b)
    clients.ended(a)
    assert clients.shed(5) == 1
    assert (a.shed_count, b.shed_count) == (0, 1)
    assert clients.shed(5) == 0
    assert told == [1]


@given(st.lists(st.tuples(st.sampled_from(["start", "end", "shed"]), st.integers(0, 5))))
def test_against_a_list_of_the_waiting_in_the_order_they_began(
    steps: list[tuple[str, int]],
) -> None:
    cap = 3
    clients = WaitingClients(cap=cap)
    connections = [Connection(str(i)) for i in range(6)]
    model: list[Connection] = []  # oldest first
    expected_shed = [0] * 6
    for action, index in steps:
        conn = connections[index]
        if action == "start":
            if conn in model:
                model.remove(conn)
            if len(model) >= cap:
                expected_shed[connections.index(model.pop(0))] += 1
            model.append(conn)
            clients.started(conn)
        elif action == "end":
            if conn in model:
                model.remove(conn)
            clients.ended(conn)
        else:
            count = index % 3
            for gone in model[:count]:
                expected_shed[connections.index(gone)] += 1
            del model[:count]
            clients.shed(count)
        assert len(clients) == len(model) <= cap
    assert [c.shed_count for c in connections] == expected_shed
