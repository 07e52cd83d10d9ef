"""The `pushsvc.partitions` logger: what happens to each partition an aggregator process
holds (its lease taken or given up, its windows rebuilt, active from a log entry, handed over).

An aggregator takes its share of the partitions together (all 16 by default when it is the
only one), so a line per partition and phase is dozens of lines at every start and stop that
say one thing. Those lines are DEBUG here, and the process logs one INFO line per phase with
the partitions it concerns (`ranges`); what is wrong (a lease lost, a hand-over that could
not publish) stays a WARNING per partition. `--log-level info,pushsvc.partitions=debug` shows
the details: the fault tests read them to see the moment each lease changes hands.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pushsvc.core.partitions import Partition

log = logging.getLogger("pushsvc.partitions")


def ranges(partitions: Iterable[Partition]) -> str:
    """The partitions' indexes, runs written as ranges: `0-3,8,10-15`."""
    indexes = sorted({index for index, _ in partitions})
    runs: list[str] = []
    start = previous = None
    for index in [*indexes, None]:
        if index is not None and previous is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    return ",".join(runs)


def counted(count: int) -> str:
    """`1 partition`, `16 partitions`."""
    return f"{count} partition" + ("" if count == 1 else "s")
