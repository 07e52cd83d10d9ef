"""A stream's queue alone: bounded in runs, latest-wins per topic once full, and the floor."""

from __future__ import annotations

from pushsvc.core.cursor import Cursor
from pushsvc.core.updates import Kind, Run, Update, UpdateId
from pushsvc.deliver.conflating_queue import ConflatingQueue, PendingBytes
from pushsvc.deliver.rendering import run_of

UNBOUNDED = PendingBytes(per_stream=1 << 62, budget=1 << 62)
"""A ledger that bounds nothing: these tests are about the count of runs."""


def _run(topic: str, *numbers: int) -> Run:
    return run_of(
        [Update.numbered(topic, UpdateId("e", 0, n), n, b'{"n":%d}' % n) for n in numbers]
    )


def _drained(queue: ConflatingQueue) -> list[tuple[str, list[int]]]:
    return [(run.topic, [u.id.seq for u in run.updates]) for run in queue.drain()]


def test_runs_are_kept_as_they_came_up_to_the_capacity() -> None:
    queue = ConflatingQueue(capacity=2, ledger=UNBOUNDED)
    first, second = _run("a", 1, 2), _run("b", 3)
    assert queue.put(first) is False and queue.put(second) is False
    assert len(queue) == 2
    drained = queue.drain()
    assert drained[0] is first and drained[1] is second  # the shared runs, not copies
    assert len(queue) == 0 and queue.drain() == []


def test_once_full_each_topic_keeps_only_its_latest_update_in_arrival_order() -> None:
    queue = ConflatingQueue(capacity=1, ledger=UNBOUNDED)
    assert queue.put(_run("a", 1)) is False
    conflated = [queue.put(run) for run in (_run("a", 2, 3), _run("b", 4), _run("a", 5))]
    assert conflated == [True, True, True]
    assert len(queue) == 3  # one run, two conflated topics
    # a's latest (5) arrived after b's (4): id order.
    assert _drained(queue) == [("a", [1]), ("b", [4]), ("a", [5])]


def test_a_conflating_queue_conflates_until_drained_even_with_room() -> None:
    queue = ConflatingQueue(capacity=2, ledger=UNBOUNDED)
    queue.put(_run("a", 1))
    queue.put(_run("a", 2))
    assert queue.put(_run("b", 3)) is True  # full: b conflates
    assert _drained(queue) == [("a", [1]), ("a", [2]), ("b", [3])]
    assert queue.put(_run("b", 4)) is False  # drained: queued again
    assert _drained(queue) == [("b", [4])]


def test_the_floor_drops_what_it_covers_once_then_is_forgotten() -> None:
    queue = ConflatingQueue(capacity=10, ledger=UNBOUNDED, floor=Cursor([UpdateId("e", 0, 3)]))
    queue.put(_run("a", 1, 2))
    queue.put(_run("a", 3, 4, 5))
    assert _drained(queue) == [("a", [4, 5])]
    assert queue.floor is None
    queue.put(_run("a", 1))  # only an old floor would drop it; none is left
    assert _drained(queue) == [("a", [1])]


def test_a_floor_past_everything_queued_keeps_dropping() -> None:
    queue = ConflatingQueue(capacity=10, ledger=UNBOUNDED, floor=Cursor([UpdateId("e", 0, 9)]))
    queue.put(_run("a", 1, 2))
    assert queue.drain() == []
    assert queue.floor == Cursor([UpdateId("e", 0, 9)])


def test_the_floor_is_per_partition_and_forgets_each_partition_once_passed() -> None:
    # Partition 1's ids are numbered on their own: its 2 is not behind partition 0's 5.
    def run(topic: str, epoch: str, *numbers: int) -> Run:
        return run_of(
            [Update.numbered(topic, UpdateId(epoch, 0, n), n, b'{"n":%d}' % n) for n in numbers]
        )

    floor = Cursor([UpdateId("e0000000", 0, 5), UpdateId("1e0000000", 0, 2)])
    queue = ConflatingQueue(capacity=10, ledger=UNBOUNDED, floor=floor)
    queue.put(run("a", "e0000000", 4, 5, 6))
    queue.put(run("b", "1e0000000", 1, 2))
    queue.put(run("c", "2e0000000", 1))  # a partition the floor has nothing of
    assert [[u.id.text for u in r.updates] for r in queue.drain()] == [
        ["e0000000:0-6"],
        ["2e0000000:0-1"],
    ]
    assert queue.floor == Cursor([UpdateId("1e0000000", 0, 2)])  # partition 0 passed
    queue.put(run("b", "1e0000000", 3))
    assert [r.last_id.text for r in queue.drain()] == ["1e0000000:0-3"]
    assert queue.floor is None


def _deletion(topic: str, n: int) -> Run:
    body = b'{"gap":true,"topics":{},"deleted":["%s"]}' % topic.encode()
    return run_of([Update.numbered(topic, UpdateId("e", 0, n), n, body, Kind.DELETION)])


def test_a_conflating_stream_still_gets_a_deletion_and_the_updates_after_it() -> None:
    # A slow stream gets the latest statistics, but never misses that a topic was deleted:
    # the deletion replaces the deleted topic's latest update and is not replaced by the new
    # topic's.
    queue = ConflatingQueue(capacity=1, ledger=UNBOUNDED)
    queue.put(_run("b", 1))
    for run in (_run("a", 2), _deletion("a", 3), _run("b", 4), _run("a", 5), _run("a", 6)):
        assert queue.put(run) is True
    drained = queue.drain()
    assert [(r.topic, [u.id.seq for u in r.updates]) for r in drained] == [
        ("b", [1]),
        ("a", [3]),
        ("b", [4]),
        ("a", [6]),
    ]
    assert drained[1].updates[0].is_deletion


def test_a_deletion_inside_a_conflated_run_is_kept_before_the_runs_newest_update() -> None:
    queue = ConflatingQueue(capacity=0, ledger=UNBOUNDED)
    deleted_then_new = run_of(
        _run("a", 1).updates + _deletion("a", 2).updates + _run("a", 3).updates
    )
    assert queue.put(deleted_then_new) is True
    assert [[u.id.seq for u in r.updates] for r in queue.drain()] == [[2], [3]]
