"""`pushsvc replay FILE.csv`: read events from a CSV with pandas and POST them in batches.

Needs the tools extra (pandas, numpy, tqdm): import it after `extras.require`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pushsvc.client import Client, batches


class CsvError(ValueError):
    """The file cannot be read as events; the message names the column or row."""


def read_events(
    path: Path,
    *,
    value_column: str = "value",
    ts_column: str | None = "ts",
    tag_columns: Sequence[str] = (),
) -> list[dict[str, object]]:
    """Events from a CSV: a numeric value column, an optional time column (epoch seconds or
    any date-time pandas parses; naive times are UTC), optional tag columns."""
    frame = pd.read_csv(path, dtype={c: "string" for c in tag_columns})
    missing = [c for c in (value_column, *tag_columns) if c not in frame.columns]
    if missing:
        raise CsvError(
            f"{path}: no column {', '.join(missing)} (columns: {', '.join(frame.columns)})"
        )
    values = pd.to_numeric(frame[value_column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise CsvError(f"{path}: row {row + 2}: {value_column} is not a finite number")
    events: list[dict[str, object]] = [{"value": float(v)} for v in values]
    if ts_column is not None and ts_column in frame.columns:
        for event, ts in zip(events, _epoch_seconds(frame[ts_column], path), strict=True):
            event["ts"] = ts
    for column in tag_columns:
        for event, tag in zip(events, frame[column], strict=True):
            if pd.notna(tag):
                tags = event.setdefault("tags", {})
                assert isinstance(tags, dict)
                tags[column] = str(tag)
    return events


def _epoch_seconds(column: pd.Series, path: Path) -> list[float]:
    if pd.api.types.is_numeric_dtype(column):
        if column.isna().any():
            raise CsvError(f"{path}: {column.name} has empty cells")
        return [float(v) for v in column]
    try:
        times = pd.to_datetime(column, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise CsvError(f"{path}: {column.name}: {exc}") from None
    if times.isna().any():
        raise CsvError(f"{path}: {column.name} has empty cells")
    micros = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    return [int(us) / 1_000_000 for us in micros]


def replay(
    client: Client,
    topic: str,
    events: list[dict[str, object]],
    *,
    batch_size: int = 1000,
    rate: float = 0.0,
    progress: bool = True,
) -> int:
    """POST every event in order; `rate` > 0 paces to that many events per second. Each batch
    goes with its own Idempotency-Key, retried with it (`Client.publish`): a batch is logged
    once however often a lost connection makes it be sent."""
    sent = 0
    started = time.monotonic()
    # The bar is drawn once the first batch is taken: a refusal (a 401, a bad event in the
    # first batch) is then the one line printed, not a bar at 0% drawn again as it closes.
    bar: tqdm[Any] | None = None
    try:
        for batch in batches(events, batch_size):
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            sent += client.publish(topic, batch).result()
            if bar is None:
                bar = tqdm(total=len(events), unit="ev", disable=not progress)
            bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return sent
