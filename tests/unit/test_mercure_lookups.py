"""Mercure resume lookups: one pass of the history for every id asked meanwhile, bounded in all
and per client address (`pushsvc.deliver.mercure_lookups`), and the one-pass search of the
history for many ids (`mercure_search.find_many`)."""

from __future__ import annotations

from collections.abc import Sequence

import gevent
import orjson
import pytest

from pushsvc.core.cursor import EARLIEST, Cursor
from pushsvc.core.updates import Update, UpdateId
from pushsvc.deliver.mercure_lookups import Lookups, LookupsBusy
from pushsvc.deliver.mercure_resume import Resume
from pushsvc.deliver.mercure_search import find_many
from pushsvc.deliver.mercure_updates import envelope


def mercure_update(
    n: int, update_id: str, data: str = "d", topics: Sequence[str] = ("t",)
) -> Update:
    """An update as the hub keeps it: a message whose data is the envelope."""
    kept = envelope(list(topics), data, private=False, update_id=update_id, retry=None)
    body = b'{"time":1,"event":{"value":null,"type":"message","data":' + orjson.dumps(kept) + b"}}"
    return Update.numbered("mercure.t", UpdateId("e", n, 0), n, body)


def test_find_many_finds_every_id_asked_in_one_pass() -> None:
    odd = 'quo"te \\ back é'
    updates = [
        mercure_update(1, "a"),
        mercure_update(2, "b", data='{"id":"c"}', topics=['{"id":"c"}']),  # c only as text
        mercure_update(3, odd),
        mercure_update(4, "a"),  # reused: the first is the one
        Update.numbered("other", UpdateId("e", 5, 0), 5, b'{"id":"c","value":1}'),
        mercure_update(6, "c"),
    ]
    found = find_many(updates, ["a", "c", odd, "missing"])
    assert found == {
        "a": UpdateId("e", 1, 0),
        "c": UpdateId("e", 6, 0),
        odd: UpdateId("e", 3, 0),
    }


def test_find_many_pauses_between_slices() -> None:
    from pushsvc.deliver import mercure_search

    updates = [mercure_update(n, f"id-{n}") for n in range(1, 2 * mercure_search.SLICE + 2)]
    pauses: list[int] = []
    assert find_many(updates, ["nowhere"], lambda: pauses.append(1)) == {}
    assert len(pauses) == 2


class Resolver:
    """A stand-in for `mercure_resume.resolve_many`: counts its calls, yields as a read does."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: Exception | None = None

    def __call__(self, asked: Sequence[str]) -> list[Resume]:
        self.calls.append(list(asked))
        gevent.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return [
            Resume(None, EARLIEST) if i != EARLIEST else Resume(Cursor(), EARLIEST) for i in asked
        ]


def test_lookups_asked_together_share_one_pass_and_release_their_places() -> None:
    resolver = Resolver()
    lookups = Lookups(resolver, max_waiting=64, per_address=64)
    jobs = [gevent.spawn(lookups.resolve, f"10.0.0.{n % 4}", f"id-{n}") for n in range(40)]
    gevent.joinall(jobs, raise_error=True)
    assert [job.value.answer for job in jobs] == [EARLIEST] * 40
    assert len(resolver.calls) == 1 and sorted(resolver.calls[0]) == sorted(
        f"id-{n}" for n in range(40)
    )
    assert lookups.held == 0


def test_lookups_past_an_address_share_or_the_process_bound_are_refused_at_once() -> None:
    resolver = Resolver()
    lookups = Lookups(resolver, max_waiting=6, per_address=2)
    waiting = [gevent.spawn(lookups.resolve, "attacker", f"x-{n}") for n in range(2)]
    gevent.sleep(0)
    with pytest.raises(LookupsBusy, match="per client address"):
        lookups.resolve("attacker", "x-3")
    others = [gevent.spawn(lookups.resolve, f"user-{n}", f"u-{n}") for n in range(4)]
    gevent.sleep(0)
    assert lookups.held == 6
    with pytest.raises(LookupsBusy, match="looking up 6"):
        lookups.resolve("someone", "u-9")
    # `earliest` and pushsvc's own cursors need no lookup: never refused.
    assert lookups.resolve("attacker", EARLIEST).answer == EARLIEST
    gevent.joinall([*waiting, *others], raise_error=True)
    assert lookups.held == 0
    assert lookups.resolve("attacker", "x-4").answer == EARLIEST


def test_a_failed_pass_fails_every_lookup_in_it_and_the_next_pass_runs() -> None:
    resolver = Resolver()
    resolver.fail = RuntimeError("redis is away")
    lookups = Lookups(resolver)
    jobs = [gevent.spawn(lookups.resolve, "a", f"id-{n}") for n in range(3)]
    gevent.joinall(jobs)
    assert all(isinstance(job.exception, RuntimeError) for job in jobs)
    resolver.fail = None
    assert lookups.resolve("a", "id-9").answer == EARLIEST
    assert lookups.held == 0
