"""Partitions: the topic → partition hash (`core.partitions`) and each partition's hash tag
(`broker.redis.slots`). Expected values are computed here independently: zlib's crc32 for the
partition, binascii's CRC16 (XMODEM, Redis Cluster's) for the slot, and pinned literals for
what must never change under existing data."""

from __future__ import annotations

import binascii
import zlib
from bisect import bisect_left

import pytest
from harness.redis_cluster import SLOTS, redis_cli_slot_ranges
from redis.crc import key_slot

from pushsvc.broker.redis.slots import partition_slot, partition_tags
from pushsvc.core.partitions import (
    DEFAULT_PARTITIONS,
    MAX_PARTITIONS,
    check_partitions,
    partition_of,
    partitions_matching,
)
from pushsvc.core.topics import TopicMatcher

NAMES = ["orders", "checkout.eu", "", "sensor/42", "é-topic", "a" * 300]
COUNTS = [1, 2, 3, 16, 100, 1024]


def _slot(tag: str) -> int:
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


def _slice(index: int, count: int) -> range:
    return range(index * SLOTS // count, (index + 1) * SLOTS // count)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("count", [1, 3, 16, 1024])
def test_a_topic_s_partition_is_crc32_of_its_name_modulo_the_count(name: str, count: int) -> None:
    expected = zlib.crc32(name.encode("utf-8")) % count
    assert partition_of(name, count) == expected


def test_partitions_of_known_names_never_change() -> None:
    """Existing deployments hold topics where these put them."""
    assert [partition_of("orders", c) for c in (1, 3, 16, 1024)] == [0, 2, 14, 494]
    assert [partition_of("é-topic", c) for c in (1, 3, 16, 1024)] == [0, 1, 14, 750]


def test_the_partition_count_is_between_1_and_1024() -> None:
    assert (DEFAULT_PARTITIONS, MAX_PARTITIONS) == (16, 1024)
    assert check_partitions(1) == 1 and check_partitions(1024) == 1024
    for bad in (0, -1, 1025, 10**6):
        with pytest.raises(ValueError, match=r"between 1 and 1024") as raised:
            check_partitions(bad)
        assert "\n" not in str(raised.value) and str(bad) in str(raised.value)
        with pytest.raises(ValueError, match=r"between 1 and 1024"):
            partition_tags(bad)


@pytest.mark.parametrize("count", COUNTS)
def test_each_partition_s_tag_hashes_to_the_centre_of_its_slice(count: int) -> None:
    tags = partition_tags(count)
    assert len(tags) == count and len(set(tags)) == count
    for index, tag in enumerate(tags):
        slot = _slot(tag)
        assert slot in _slice(index, count), (index, tag, slot)
        assert slot == partition_slot(index, count) == (2 * index + 1) * SLOTS // (2 * count)
        # The tag inside braces is what a key hashes by (redis-py agrees with the server's rule).
        assert key_slot(f"pushsvc:{{{tag}}}:log".encode()) == slot


def test_a_tag_is_the_smallest_decimal_number_with_its_slot() -> None:
    for index, tag in enumerate(partition_tags(3)):
        assert tag == str(int(tag))  # decimal, no leading zeros
        slot = partition_slot(index, 3)
        assert all(_slot(str(n)) != slot for n in range(int(tag)))


def test_tags_never_change() -> None:
    """Tags name where a deployment's data is: a change here strands it."""
    assert partition_tags(1) == ("8209",)
    assert partition_tags(3) == ("21418", "8209", "16418")
    assert partition_tags(16) == (
        "1768", "20261", "18360", "41271", "3453", "11199", "29098", "8591",
        "265", "45842", "13409", "17891", "46093", "3635", "2912", "48623",
    )  # fmt: skip
    assert partition_tags(16) is partition_tags(16)  # computed once per count


@pytest.mark.parametrize("primaries", range(1, 13))
def test_redis_cli_s_primaries_get_partition_counts_that_differ_by_at_most_one(
    primaries: int,
) -> None:
    """Every count from `primaries` to 1024, on the slot ranges `redis-cli --cluster create`
    gives (modelled; the model is checked against a real cluster in
    tests/integration/test_redis_cluster.py, and so is this property for a few counts)."""
    lasts = [last for _, last in redis_cli_slot_ranges(primaries)]
    for count in range(primaries, MAX_PARTITIONS + 1):
        per_primary = [0] * primaries
        for index in range(count):
            per_primary[bisect_left(lasts, partition_slot(index, count))] += 1
        assert max(per_primary) - min(per_primary) <= 1, (count, per_primary)


def test_the_mercure_hubs_topics_are_placed_together_and_read_from_their_one_partition() -> None:
    from pushsvc.core.partitions import HUB_PREFIX, HUB_TOPICS, is_hub_topic
    from pushsvc.deliver.mercure_subscriptions import SUBSCRIPTIONS_TOPIC
    from pushsvc.deliver.mercure_updates import PREFIX, topic_name

    assert PREFIX == HUB_PREFIX and SUBSCRIPTIONS_TOPIC in HUB_TOPICS
    hub = [topic_name(f"https://example.com/books/{n}") for n in range(200)]
    hub += [SUBSCRIPTIONS_TOPIC, "mercure.x.late"]
    for count in (1, 4, 16, 1024):
        (only,) = {partition_of(t, count) for t in hub}
        assert partitions_matching(TopicMatcher(["mercure.*"]), count) == [only]
        both = TopicMatcher(["mercure.*", SUBSCRIPTIONS_TOPIC])
        assert partitions_matching(both, count) == [only]
        assert partitions_matching(TopicMatcher(["mercure.a.*"]), count) == [only]
    # Other topics keep their places; a matcher beyond the hub's reads every partition.
    assert not is_hub_topic("mercurex.a") and not is_hub_topic("mercure")
    assert partition_of("mercurex.a", 16) == zlib.crc32(b"mercurex.a") % 16
    assert len(partitions_matching(TopicMatcher(["mercure.*", "orders.*"]), 16)) == 16
    assert len(partitions_matching(TopicMatcher(["mercure.*", "orders"]), 16)) == 16
    assert len(partitions_matching(TopicMatcher(["*"]), 16)) == 16
