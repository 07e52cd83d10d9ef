"""One /metrics for several processes on one machine (`serve --workers N`, gunicorn's
workers, an aggregator beside them): prometheus_client's multiprocess mode.

Each process keeps its series in mmap'd files in `PROMETHEUS_MULTIPROC_DIR`; whichever process
answers a scrape sums every process's files (`MultiProcessCollector`). A counter's file outlives
its process, so a worker that died or was restarted keeps its counts in the sum and no counter
ever goes backwards. Gauges count live processes only: whoever reaps a dead one removes its
gauge files (`mark_process_dead`), a process that stops removes its own.

prometheus_client's own Counters and Gauges write their file on every change. What pushsvc
reads at scrape time (the hub's plain ints, the aggregator's state, the process's CPU) has no
change to hook: `FileMirror` copies it into the files every second and before this process
answers a scrape, so delivering an update still costs no metric call. A process killed with
SIGKILL loses at most the last second of those counts, never one already scraped. The
process's own CPU, memory and open files are copied every 10 s (and before its scrapes):
counting its open files lists /proc/self/fd, which for a web process holding 12,500 streams
took 13 ms, every second, in every worker.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from typing import Protocol

import gevent.event
from prometheus_client import values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from pushsvc.errors import ConfigError

DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
MIRROR_INTERVAL_S = 1.0
SLOW_MIRROR_EVERY = 10
"""The slow collectors are copied every this many mirror intervals (and before a scrape)."""


def shared_dir() -> str | None:
    """The directory this process shares its series in, or None (one process, as usual);
    ConfigError when the variable names no directory this process can write in."""
    if DIR_VARIABLE not in os.environ:
        return None
    path = os.environ[DIR_VARIABLE]
    if not path or not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{DIR_VARIABLE}={path!r} is not a directory this process can write in: "
            "create it empty before the processes start, or unset the variable"
        )
    if not getattr(values.ValueClass, "_multiprocess", False):
        # Chosen when prometheus_client was imported: set later, the Counters would not share.
        raise ConfigError(f"{DIR_VARIABLE} was set after the process started: set it before")
    return path


class SharedFiles(Collector):
    """Every process's series in `path`, summed: `MultiProcessCollector`, but a file another
    process is creating this instant (it opens it empty, then sizes it) is skipped instead of
    failing the scrape with a 500. Once sized, a file never shrinks."""

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self) -> Iterable[Metric]:
        files = []
        for name in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.stat(name).st_size > 0:
                    files.append(name)
            except FileNotFoundError:
                pass  # a dead process's gauges, removed meanwhile
        merged: Iterable[Metric] = MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
            files, accumulate=True
        )
        return merged


class _Value(Protocol):
    def set(self, value: float) -> None: ...

    def get(self) -> float: ...


def _file_value(
    typ: str, family: str, sample: str, labels: Mapping[str, str], help_text: str, mode: str
) -> _Value:
    value: _Value = values.ValueClass(
        typ,
        family,
        sample,
        list(labels),
        list(labels.values()),
        help_text,
        multiprocess_mode=mode,
    )
    return value


class FileMirror:
    """Copies what `collectors` read at scrape time into this process's files: counters and
    histograms summed over every process that ever ran, gauges over the live ones (`livesum`,
    or the mode `gauge_modes` gives a family)."""

    def __init__(
        self,
        path: str,
        collectors: Iterable[Collector],
        gauge_modes: Mapping[str, str],
        slow: Iterable[Collector] = (),
    ) -> None:
        """`slow`: collectors whose reading costs what grows with the process (its open
        files), copied every `SLOW_MIRROR_EVERY` intervals instead of every one."""
        self.path = path
        self._collectors = list(collectors)
        self._slow = list(slow)
        self._gauge_modes = dict(gauge_modes)
        self._values: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[_Value, float]] = {}

    def flush(self, *, slow: bool = True) -> None:
        """Copy what the collectors read now; with `slow`, the slow ones' too."""
        for collector in [*self._collectors, *self._slow] if slow else self._collectors:
            for family in collector.collect():
                if family.type == "counter":
                    for s in family.samples:
                        if s.name.endswith("_total"):  # not _created: a sum of times means nothing
                            self._set("counter", family.name, s.name, s.labels, s.value, family)
                elif family.type == "gauge":
                    mode = self._gauge_modes.get(family.name, "livesum")
                    for s in family.samples:
                        self._set("gauge", family.name, s.name, s.labels, s.value, family, mode)
                elif family.type == "histogram":
                    self._histogram(family)

    def _histogram(self, family: Metric) -> None:
        # The files hold each bucket's own count (the collector sums them over processes,
        # then makes them cumulative), and the sum; the count is the +Inf bucket.
        below: dict[tuple[tuple[str, str], ...], float] = {}  # by the labels but `le`
        for s in family.samples:
            if s.name.endswith("_bucket"):
                series = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                own = s.value - below.get(series, 0.0)
                self._set("histogram", family.name, s.name, s.labels, own, family)
                below[series] = s.value
            elif s.name.endswith("_sum"):
                self._set("histogram", family.name, s.name, s.labels, s.value, family)

    def _set(
        self,
        typ: str,
        family_name: str,
        name: str,
        labels: Mapping[str, str],
        value: float,
        family: Metric,
        mode: str = "",
    ) -> None:
        key = (name, mode, tuple(sorted(labels.items())))
        held = self._values.get(key)
        if held is None:
            file_value = _file_value(typ, family_name, name, labels, family.documentation, mode)
            # A counter a dead process of the same pid left in this file (pids are reused):
            # added to, never overwritten. Gauges of dead processes are gone already.
            held = self._values[key] = (file_value, 0.0 if typ == "gauge" else file_value.get())
        file_value, base = held
        file_value.set(base + value)

    def run(self, stop: gevent.event.Event) -> None:
        intervals = 0
        while not stop.wait(MIRROR_INTERVAL_S):
            intervals += 1
            self.flush(slow=intervals % SLOW_MIRROR_EVERY == 0)

    def close(self) -> None:
        """The last counts, then this process's gauges gone (it stops)."""
        self.flush()
        mark_process_dead(os.getpid(), self.path)  # type: ignore[no-untyped-call]
