"""Scrapes of /metrics one after another, as Prometheus takes them, each checked against the
one before: a counter (a histogram's buckets, sum and count too) that went backwards or
vanished is a reset to Prometheus, and `rate()` over it is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.live import request
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


@dataclass
class Scrapes:
    port: int
    answered_by: set[str] = field(default_factory=set)
    """The pids in `pushsvc_process_info` of the processes that answered."""
    taken: int = 0
    _counters: dict[Key, float] = field(default_factory=dict)

    def take(self) -> dict[Key, float]:
        """One scrape, on a fresh connection (so the kernel may hand it to any worker): every
        sample by (name, sorted labels). Fails if a counter went backwards or vanished."""
        status, _, body = request(self.port, "GET", "/metrics")
        assert status == 200, body
        now: dict[Key, float] = {}
        counters: dict[Key, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                sample_key = key(sample.name, **sample.labels)
                now[sample_key] = sample.value
                if family.type in ("counter", "histogram") and not sample.name.endswith("_created"):
                    counters[sample_key] = sample.value
        pid = next(dict(labels)["pid"] for name, labels in now if name == "pushsvc_process_info")
        self.taken += 1
        for sample_key, before in self._counters.items():
            after = counters.get(sample_key)
            assert after is not None and after >= before, (
                f"scrape {self.taken} (pid {pid}): {sample_key} went from {before} to {after}"
            )
        self._counters = counters
        self.answered_by.add(pid)
        return now

    def value(self, name: str, **labels: str) -> float:
        return self.take().get(key(name, **labels), 0.0)
