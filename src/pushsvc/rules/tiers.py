"""Series tiers: `resolution:retention` pairs, as `PUSHSVC_SERIES` and a rule's `series` give
them, checked once (pure).

Tiers are Netdata's: each resolution a whole multiple of the next finer one's, so a coarser
tier's bucket is exactly a run of finer buckets and is built by merging them as they close
(`pushsvc.series.buckets`): only the finest tier costs anything per event.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from pushsvc.core.durations import duration_label, parse_duration_us

__all__ = ["DEFAULT_SERIES", "MAX_TIERS", "SeriesTier", "check_tiers", "parse_tiers"]

DEFAULT_SERIES = "1s:15m,1m:24h"
MAX_TIERS = 6
MIN_RESOLUTION_US = 1_000_000
"""Buckets are named by their start in whole milliseconds (a Redis stream id); a second is
the finest resolution that keeps a point per bucket affordable at any rate."""


@dataclass(frozen=True, slots=True)
class SeriesTier:
    """One tier of long-range series: closed buckets of `resolution_us`, kept `retention_us`."""

    resolution_us: int
    retention_us: int

    @property
    def label(self) -> str:
        """`1m:24h`"""
        return f"{duration_label(self.resolution_us)}:{duration_label(self.retention_us)}"

    @property
    def resolution_label(self) -> str:
        """`1m`: how streams (`?series=`) and `/series` name the tier."""
        return duration_label(self.resolution_us)


def parse_tiers(text: str) -> tuple[SeriesTier, ...]:
    """`1s:15m,1m:24h` (`none`: no tiers); ValueError with one line saying what is wrong."""
    text = text.strip()
    if text == "none":
        return ()
    items = [item.strip() for item in text.split(",")]
    if not text or not all(items):
        raise ValueError('series are resolution:retention pairs, e.g. "1s:15m,1m:24h", or none')
    return check_tiers([parse_tier(item) for item in items])


def parse_tier(item: str) -> SeriesTier:
    resolution, colon, retention = item.partition(":")
    if not colon:
        raise ValueError(f'{item!r} is not resolution:retention, e.g. "1m:24h"')
    try:
        return SeriesTier(parse_duration_us(resolution), parse_duration_us(retention))
    except ValueError as exc:
        raise ValueError(f"{item!r}: {exc}") from None


def check_tiers(tiers: Sequence[SeriesTier]) -> tuple[SeriesTier, ...]:
    """The tiers finest first; ValueError unless each resolution is at least 1 s and a whole
    multiple of the next finer one, each keeps at least one bucket, and there are at most
    `MAX_TIERS` of them."""
    if len(tiers) > MAX_TIERS:
        raise ValueError(f"at most {MAX_TIERS} series tiers, got {len(tiers)}")
    ordered = sorted(tiers, key=lambda tier: tier.resolution_us)
    for tier in ordered:
        if tier.resolution_us < MIN_RESOLUTION_US or tier.resolution_us % MIN_RESOLUTION_US:
            raise ValueError(f"{tier.label}: a resolution is a whole number of seconds, >= 1s")
        if tier.retention_us < tier.resolution_us:
            raise ValueError(f"{tier.label} keeps less than one bucket")
    for finer, coarser in itertools.pairwise(ordered):
        if coarser.resolution_us == finer.resolution_us:
            raise ValueError(f"resolution {finer.resolution_label} is given twice")
        if coarser.resolution_us % finer.resolution_us:
            raise ValueError(
                f"{coarser.label}: each resolution must be a whole multiple of the next finer "
                f"one ({finer.resolution_label})"
            )
    return tuple(ordered)
