"""The hash tag of each partition: the text inside `{…}` that every Redis key of the partition
carries, so that all of them hash to one Cluster slot and every script touches one slot.

The rule, fixed for the life of the data (changing it moves every key):

* Partition `i` of `count` is placed at the slot `(2i + 1) * 16384 // (2 * count)`: the centre
  of the i-th of `count` equal slices of [0, 16384).
* Its tag is the smallest non-negative integer, written in decimal, whose key slot is that
  slot (CRC16 as Redis Cluster defines it, computed by redis-py's `key_slot`).

Why the centre of the slice, not any slot in it: `redis-cli --cluster create` gives each primary
a run of consecutive slots of nearly equal length, so a primary owns the partitions whose
centres fall in its run, and those counts differ by at most one (checked on a real 3-primary
cluster by tests/integration/test_redis_cluster.py). A slot picked anywhere in its slice
can fall on either side of a primary's boundary, and then one primary can hold two partitions
more than another (20 partitions over 3 primaries, for one).

Why the smallest integer: it is short, needs no table in the code, and finding it is cheap:
every slot has one below 110,000, so the tags of 1024 partitions take one pass over at most
that many candidates, once per process and count (measured: docs/performance.md, 'Small
costs behind the code's shape').
"""

from __future__ import annotations

import itertools
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from pushsvc.core.partitions import check_partitions


def partition_slot(index: int, count: int) -> int:
    """The slot partition `index` of `count` is placed at: the centre of its slice."""
    return (2 * index + 1) * REDIS_CLUSTER_HASH_SLOTS // (2 * count)


@cache
def partition_tags(count: int) -> tuple[str, ...]:
    """The hash tag of each of `count` partitions, in partition order (see the module)."""
    check_partitions(count)
    # Slots are distinct: slices are at least 16 slots wide (count <= 1024).
    wanted = {partition_slot(i, count): i for i in range(count)}
    tags: list[str] = [""] * count
    for candidate in itertools.count():
        tag = str(candidate)
        index = wanted.pop(key_slot(tag.encode()), None)
        if index is not None:
            tags[index] = tag
            if not wanted:
                return tuple(tags)
    raise AssertionError("unreachable: itertools.count() never ends")
