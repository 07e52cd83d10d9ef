"""Real sub-daily series from outside NAB, for a forecast report set nothing was tuned on.

Six public series of readings that ship inside PyPI packages (installed into the bench's own
venv with `pip install pmdarima bokeh_sampledata pvlib`, never copied here), each with a daily
pattern and none of them NAB's:

* `taylor`: electricity demand in England and Wales, half-hourly, 12 weeks of 2000 (Taylor
  2003; `pmdarima.datasets.load_taylor`, as R's `forecast::taylor`);
* `sea_surface_temperature`: a buoy's water temperature, half-hourly, 2016 to 2017
  (`bokeh_sampledata`);
* `glucose`: a continuous glucose monitor's readings, five-minutely, 2010 (`bokeh_sampledata`);
* `humidity_greensboro`, `humidity_sand_point`, `humidity_miami`: hourly relative humidity
  over a year at three US weather stations, from the typical meteorological year files pvlib
  ships (TMY3 and TMY2: each month a real month's readings, of the year most typical for it).

Not `vega_datasets`' hourly Seattle and San Francisco temperatures: they are climate normals
(each hour an average over years, the days a smooth curve), not readings.

Each is returned as its values at its spacing (means where two readings share a bucket, a
missing one interpolated linearly), as a rule's tier gives them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SERIES", "load_fresh"]


def _taylor() -> pd.Series:
    from pmdarima.datasets import load_taylor

    values = load_taylor(as_series=False)
    # Monday 5 June 2000, every half hour (the dataset has no timestamps of its own).
    return pd.Series(values, index=pd.date_range("2000-06-05", periods=len(values), freq="30min"))


def _humidity(file: str) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        import pvlib
        from pvlib import iotools

        path = Path(pvlib.__file__).parent / "data" / file
        if file.endswith(".tm2"):
            values = iotools.read_tmy2(str(path))[0]["RHum"]
        else:
            values = iotools.read_tmy3(str(path), map_variables=True)[0]["relative_humidity"]
        # The file's order, a year of hours (its months come from different years).
        return pd.Series(
            values.to_numpy(), index=pd.date_range("1990-01-01", periods=len(values), freq="h")
        )

    return load


def _sea() -> pd.Series:
    from bokeh_sampledata.sea_surface_temperature import sea_surface_temperature

    return sea_surface_temperature["temperature"].tz_localize(None)


def _glucose() -> pd.Series:
    from bokeh_sampledata.glucose import data

    return data["glucose"]


SERIES: dict[str, tuple[Callable[[], pd.Series], pd.Timedelta]] = {
    "taylor": (_taylor, pd.Timedelta(minutes=30)),
    "sea_surface_temperature": (_sea, pd.Timedelta(minutes=30)),
    "glucose": (_glucose, pd.Timedelta(minutes=5)),
    "humidity_greensboro": (_humidity("723170TYA.CSV"), pd.Timedelta(hours=1)),
    "humidity_sand_point": (_humidity("703165TY.csv"), pd.Timedelta(hours=1)),
    "humidity_miami": (_humidity("12839.tm2"), pd.Timedelta(hours=1)),
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
