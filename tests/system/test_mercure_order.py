"""One ordered sequence per hub, on the embedded server, on Redis and on a Redis Cluster: a
sequential publisher's updates over several topics reach a subscriber of all of them in the
order they were published (not awaited one by one: published back to back, as an application
publishes "book created" on `/books/1` and then "list changed" on `/books`), and a resume from
any of their ids, the publisher's own or the hub's `urn:uuid:`, sends exactly the updates
after it, in that order.

The hub's topics are kept in one partition (`pushsvc.core.partitions`): each topic here is a
pushsvc topic of its own, and all of them are in that partition whatever the count.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from harness.live import PushsvcProcess

from pushsvc.core.partitions import DEFAULT_PARTITIONS, partition_of
from pushsvc.deliver.mercure_updates import topic_name
from support.mercure_hub import BACKENDS, iri, publish, serving_hub, subscribe

UPDATES = 60


@pytest.fixture(params=BACKENDS, scope="module")
def hub(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_hub(request.param, request) as proc:
        yield proc


def test_a_sequential_publishers_updates_arrive_in_order_and_resume_exactly(
    hub: PushsvcProcess,
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = [iri(f"order-{run}-{k}") for k in range(6)]
    names = {topic_name(t) for t in topics}
    assert len(names) == len(topics)
    assert len({partition_of(n, DEFAULT_PARTITIONS) for n in names}) == 1  # the hub's one
    exact = [("match", t) for t in topics]
    pattern = [("match_urlpattern", "https://example.com/:name/:id")]
    every = subscribe(hub, *exact)
    by_pattern = subscribe(hub, *pattern)
    try:
        published = []
        for n in range(UPDATES):
            fields = {"id": f"{run}-{n}"} if n % 2 else {}  # the publisher's own, or the hub's
            published.append(publish(hub, [topics[n % len(topics)]], f"i={n}", **fields))
        assert any(i.startswith("urn:uuid:") for i in published)
        for stream in (every, by_pattern):
            received = [stream.next() for _ in range(UPDATES)]
            assert [m.id for m in received] == published
            assert [m.data for m in received] == [f"i={n}" for n in range(UPDATES)]
    finally:
        every.close()
        by_pattern.close()
    # From any id, the hub's or the publisher's: exactly what followed, in order.
    for n in (0, 1, 17, 30, 45, UPDATES - 2):
        with subscribe(hub, *exact, last_event_id=published[n]) as resumed:
            assert resumed.response_headers["mercure-last-event-id"] == published[n]
            got = [resumed.next().id for _ in range(len(published) - n - 1)]
            assert got == published[n + 1 :], n
            sentinel = publish(hub, [topics[0]], "sentinel", id=f"{run}-sentinel-{n}")
            assert resumed.next().id == sentinel  # nothing else was pending
            published.append(sentinel)  # after every update: the next resume's last
