"""`frames()`: a topic's history, then its live updates, as one DataFrame that grows — what a
notebook redraws a plot from. This part is free of I/O: the clients feed it the history's
updates and the stream's messages and ask it, every so often, for the frame so far. With a
forecast tier, the frame's `attrs["forecast"]` is the topic's latest forecast as
`Client.forecast()` gives it (None before one is made), replaced as its stream brings new
ones (of a horizon of more than 60 buckets, as its message carries it: every
`attrs["every"]`-th bucket's point, up to the horizon's last; `Client.forecast()` has them
all)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from pushsvc.client.models import forecast_dataframe, history_dataframe
from pushsvc.client.stream import RawMessage
from pushsvc.core.durations import parse_duration_us
from pushsvc.core.point_shape import Forecast

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MAX_ROWS = 100_000


def interval_seconds(every: str | float) -> float:
    """`every` as seconds: a number, or a duration such as "500ms", "1s", "1m"."""
    seconds = parse_duration_us(every) / 1_000_000 if isinstance(every, str) else float(every)
    if not seconds > 0:
        raise ValueError(f"every must be a positive duration, not {every!r}")
    return seconds


class LiveFrame:
    """The rows of one topic's updates, oldest first, at most `max_rows` (the oldest go);
    columns as `Client.history()`'s. `frame.attrs["resume_id"]` is the newest update's id and
    `frame.attrs["gap"]` says that updates were lost on the way (the history, or a stream
    that could not resume)."""

    def __init__(
        self,
        topic: str,
        updates: Sequence[Mapping[str, Any]],
        first_page: Mapping[str, Any],
        resume_id: str,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        forecast: pd.DataFrame | None = None,
        forecasts: bool = False,
    ) -> None:
        self.topic = topic
        self._forecasts = forecasts
        """Whether the frame carries the forecast (`frames(forecast=…)`)."""
        self._forecast = forecast
        self._forecast_new = False
        self._windows = first_page["windows"]
        self._stats = first_page["stats"]
        self._max_rows = max_rows
        self._pending: list[Mapping[str, Any]] = []
        self._gap = bool(first_page["gap"])
        self._cleared: str | None = None
        """The id of the topic's deletion, received since the last flush."""
        self.frame = self._rows(updates[-max_rows:])
        self.frame.attrs["resume_id"] = resume_id
        self._keep_forecast()

    def add(self, message: RawMessage) -> None:
        """A stream message: this topic's updates are kept for the next `flush`."""
        if message.event == "stats":
            update = message.json()
            if update["topic"] == self.topic:
                self._pending.append(update)
        elif message.event == "point" and self._forecasts:
            point = message.json()
            if "forecast" in point and point["topic"] == self.topic and "group" not in point:
                self._forecast = forecast_dataframe(msgspec.convert(point["forecast"], Forecast))
                self._forecast_new = True
        elif message.event == "snapshot":
            snapshot = message.json()
            if snapshot.get("gap"):
                self._gap = True
            if self.topic in snapshot.get("deleted", ()):
                # The topic was deleted: what the frame holds of it is gone.
                self._pending = []
                self._cleared = message.id

    def flush(self) -> pd.DataFrame | None:
        """The frame with the updates received since the last flush (emptied first when the
        topic was deleted meanwhile, and with a new forecast); None when nothing changed."""
        forecast_new, self._forecast_new = self._forecast_new, False
        if self._cleared is not None:
            self.frame = self.frame.iloc[0:0]
            self.frame.attrs.update(gap=self._gap, resume_id=self._cleared)
            self._cleared = None
        elif not self._pending:
            return self._keep_forecast() if forecast_new else None
        if not self._pending:
            return self._keep_forecast()
        import pandas as pd

        fresh = self._rows(self._pending)
        self._pending = []
        # A DataFrame in attrs would be compared when concat merges them: out, then back.
        self.frame.attrs.pop("forecast", None)
        joined = fresh if self.frame.empty else pd.concat([self.frame, fresh], ignore_index=True)
        self.frame = joined.iloc[-self._max_rows :].reset_index(drop=True)
        self.frame.attrs.update(fresh.attrs)
        return self._keep_forecast()

    def _keep_forecast(self) -> pd.DataFrame:
        if self._forecasts:
            self.frame.attrs["forecast"] = self._forecast
        return self.frame

    def _rows(self, updates: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        frame = history_dataframe(updates, self._windows, self._stats)
        frame.attrs["gap"] = self._gap
        if updates:
            frame.attrs["resume_id"] = updates[-1]["id"]
        return frame
