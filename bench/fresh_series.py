"""Real sub-daily series from outside NAB, for a forecast report set nothing was tuned on.

Five public series that ship inside PyPI packages (installed into the bench's own venv with
`pip install pmdarima vega_datasets bokeh_sampledata`, never copied here), each with a daily
pattern and none of them NAB's:

* `taylor`: electricity demand in England and Wales, half-hourly, 12 weeks of 2000 (Taylor
  2003; `pmdarima.datasets.load_taylor`, as R's `forecast::taylor`);
* `seattle_temps`, `sf_temps`: hourly air temperature in Seattle and San Francisco, 2010
  (`vega_datasets.local_data`);
* `sea_surface_temperature`: a buoy's water temperature, half-hourly, 2016 to 2017
  (`bokeh_sampledata`);
* `glucose`: a continuous glucose monitor's readings, five-minutely, 2010 (`bokeh_sampledata`).

Each is returned as its values at its spacing (means where two readings share a bucket, a
missing one interpolated linearly), as a rule's tier gives them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = ["SERIES", "load_fresh"]


def _taylor() -> pd.Series:
    from pmdarima.datasets import load_taylor

    values = load_taylor(as_series=False)
    # Monday 5 June 2000, every half hour (the dataset has no timestamps of its own).
    return pd.Series(values, index=pd.date_range("2000-06-05", periods=len(values), freq="30min"))


def _vega(name: str) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        from vega_datasets import local_data

        frame = getattr(local_data, name)()
        return frame.set_index("date")["temp"]

    return load


def _sea() -> pd.Series:
    from bokeh_sampledata.sea_surface_temperature import sea_surface_temperature

    return sea_surface_temperature["temperature"].tz_localize(None)


def _glucose() -> pd.Series:
    from bokeh_sampledata.glucose import data

    return data["glucose"]


SERIES: dict[str, tuple[Callable[[], pd.Series], pd.Timedelta]] = {
    "taylor": (_taylor, pd.Timedelta(minutes=30)),
    "seattle_temps": (_vega("seattle_temps"), pd.Timedelta(hours=1)),
    "sf_temps": (_vega("sf_temps"), pd.Timedelta(hours=1)),
    "sea_surface_temperature": (_sea, pd.Timedelta(minutes=30)),
    "glucose": (_glucose, pd.Timedelta(minutes=5)),
}


def load_fresh(only: list[str]) -> dict[str, tuple[np.ndarray, pd.Timedelta]]:
    """name -> (values at the spacing, the spacing), for the series whose name has one of
    `only` (all when empty)."""
    out = {}
    for name, (load, spacing) in SERIES.items():
        if only and not any(o in name for o in only):
            continue
        series = load().astype(float).sort_index()
        values = series.resample(spacing).mean().interpolate().to_numpy(dtype=float)
        out[name] = (values, spacing)
    return out
