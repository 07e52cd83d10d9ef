"""`FileMirror`: what it copies into prometheus_client's multiprocess files, and how often.
The slow collectors (the process's open files: a listing of /proc/self/fd) are read every
`SLOW_MIRROR_EVERY` intervals, and by every flush before a scrape."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import gevent
import gevent.event
import pytest
from prometheus_client import values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pushsvc.ops import multiprocess_metrics
from pushsvc.ops.multiprocess_metrics import SLOW_MIRROR_EVERY, FileMirror, SharedFiles


class Reading(Collector):
    """A gauge whose value is how many times it was read."""

    def __init__(self, name: str, stop_at: int = 0, stop: gevent.event.Event | None = None):
        self.name, self.reads, self._stop_at, self._stop = name, 0, stop_at, stop

    def collect(self) -> Iterable[Metric]:
        self.reads += 1
        if self._stop is not None and self.reads == self._stop_at:
            self._stop.set()
        return [GaugeMetricFamily(self.name, "reads so far", value=self.reads)]


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    return str(tmp_path)


def _shared_values(path: str) -> dict[str, float]:
    return {s.name: s.value for family in SharedFiles(path).collect() for s in family.samples}


def test_a_flush_before_a_scrape_copies_every_collector(shared: str) -> None:
    fast, slow = Reading("fast_reads"), Reading("slow_reads")
    mirror = FileMirror(shared, [fast], {}, slow=[slow])
    mirror.flush()
    mirror.flush(slow=False)
    assert (fast.reads, slow.reads) == (2, 1)
    assert _shared_values(shared) == {"fast_reads": 2.0, "slow_reads": 1.0}


def test_the_periodic_copy_reads_the_slow_collectors_every_tenth_interval(
    shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multiprocess_metrics, "MIRROR_INTERVAL_S", 0.001)
    stop = gevent.event.Event()
    intervals = 3 * SLOW_MIRROR_EVERY
    fast, slow = Reading("fast_reads", intervals, stop), Reading("slow_reads")
    gevent.spawn(FileMirror(shared, [fast], {}, slow=[slow]).run, stop).join(timeout=10)
    assert fast.reads == intervals
    assert slow.reads == 3
    assert _shared_values(shared)["slow_reads"] == 3.0
