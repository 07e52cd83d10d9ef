"""Mercure's active subscriptions, the pure part: the paths, the reserved namespace, the
registry's bound and a listing's byte bound."""

from __future__ import annotations

import json

import pytest

from pushsvc.core.subscription_registry import SubscriptionRegistry, TooManySubscriptions, Tracked
from pushsvc.deliver.mercure_selectors import Selector, SelectorSet
from pushsvc.deliver.mercure_subscriptions import (
    addresses_hub,
    collection_path,
    listing,
    may_select_hub,
    subscription_path,
)

HUB = "https://hub.example/.well-known/mercure"


def test_a_path_encodes_each_variable_once_and_whole_as_the_specification_shows() -> None:
    path = subscription_path(
        "/.well-known/mercure",
        "urlpattern",
        "https://example.com/:selector",
        "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
    )
    assert path == (
        "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/"
        "urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
    )
    # Already encoded text is encoded again (its `%` too), never left as it is.
    assert collection_path("/h", "exact", "a%2Fb") == "/h/subscriptions/exact/a%252Fb"


@pytest.mark.parametrize(
    "topic",
    [
        "/.well-known/mercure",
        "/.well-known/mercure/subscriptions/exact/x/y",
        "https://elsewhere.example/.well-known/mercure/subscriptions",
        "/.well-known/%6Dercure/x",
        "/.well-known/mercure/../mercure/x",
        "/a/../.well-known/mercure",
        "mercure/subscriptions/x",  # relative: resolved against the hub's URL
        # The URL standard reads `\` as `/` in a special scheme's URL, `%2e` as a dot, and
        # drops tabs: a subscriber's URL pattern reads these topics so.
        "\\.well-known\\mercure\\subscriptions\\exact\\y\\urn:uuid:forged",
        "http://hub.example\\.well-known\\mercure\\subscriptions\\x",
        "/.well-known/mercure\\subscriptions/x",
        "\\\\elsewhere.example\\.well-known\\mercure",
        "ws:\\\\h\\.well-known\\mercure",
        "/x/%2e%2E/.well-known/mercure/x",
        "/.well-known/mer\tcure/x",
        " /.well-known/mercure",
    ],
)
def test_topics_in_the_hubs_namespace_are_told(topic: str) -> None:
    assert addresses_hub(topic, HUB)


@pytest.mark.parametrize(
    "topic",
    [
        "https://example.com/books/1",
        "/.well-known/mercurex",
        "/.well-known/%2Fmercure",
        "urn:uuid:1",
        "books",
        ".well-known/mercure/x",  # resolves to /.well-known/.well-known/…
        "http://[::1",
    ],
)
def test_other_topics_are_not(topic: str) -> None:
    assert not addresses_hub(topic, HUB)


def _tracked(i: int, collection: str = "/c") -> Tracked:
    return Tracked(f"{collection}/{i}", collection, json.dumps({"n": i}).encode())


def test_the_registry_takes_a_connection_whole_or_not_at_all() -> None:
    registry = SubscriptionRegistry(max_tracked=3)
    registry.add([_tracked(1), _tracked(2, "/d")])
    with pytest.raises(TooManySubscriptions):
        registry.add([_tracked(3), _tracked(4)])
    assert len(registry) == 2
    assert list(registry.bodies("/c")) == [b'{"n": 1}']
    registry.remove(["/c/1", "/c/unknown"])
    assert list(registry.bodies("/c")) == [] and registry.get("/d/2") == b'{"n": 2}'
    registry.add([_tracked(3), _tracked(4)])
    assert len(registry) == 3


def test_a_listing_is_cut_before_its_byte_bound_and_says_so() -> None:
    bodies = [b'{"n": %d}' % i for i in range(100)]
    whole = json.loads(listing("/c", bodies, 10_000, last_event_id="earliest"))
    assert len(whole["subscriptions"]) == 100 and "truncated" not in whole
    cut = listing("/c", bodies, 200, last_event_id="urn:uuid:x")
    parsed = json.loads(cut)
    assert parsed["truncated"] is True and 0 < len(parsed["subscriptions"]) < 100
    assert parsed["lastEventID"] == "urn:uuid:x" and parsed["type"] == "subscriptions"
    assert len(cut) < 200 + 128


@pytest.mark.parametrize(
    ("selectors", "may"),
    [
        ([Selector("match", "*")], True),
        ([Selector("urlpattern", "*")], True),
        ([Selector("match", "/.well-known/mercure/subscriptions")], True),
        ([Selector("match", "https://example.com/books/1")], False),
        ([Selector("urlpattern", "/.well-known/mercure/subscriptions/*")], True),
        ([Selector("urlpattern", "https://example.com/*")], True),
        ([Selector("urlpattern", "/:any/mercure/x")], True),
        ([Selector("urlpattern", "https://example.com/books/:id")], False),
        ([Selector("urlpattern", "/.well-known/other/*")], False),
        ([Selector("match", "a"), Selector("urlpattern", "/.well-known/*")], True),
    ],
)
def test_only_streams_whose_selectors_may_select_the_hubs_namespace_read_its_events(
    selectors: list[Selector], may: bool
) -> None:
    assert may_select_hub(SelectorSet(selectors, base_url=HUB), HUB) is may
