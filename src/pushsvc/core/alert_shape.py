"""An alert instance's state, defined once: `AlertInstance` (an entry of `GET /alerts`) and
`AlertChangeMessage` (an `event: alert` message of the reserved topic `_alerts`, with its id).

`pushsvc.alerts` writes them with orjson; tests/integration/test_answer_shapes.py holds what
it writes to these classes. `/openapi.json`'s schemas are generated from them, and the Python
client decodes an `alert` message into `AlertChangeMessage` (`pushsvc.client.AlertChange`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct


class AlertInstance(Struct, frozen=True):
    """an alert instance (`alert`, `topic`, `group`) and its state since `since` (`inactive`: a
    pending instance that cleared before it fired), `value` the statistic that caused it"""

    alert: str
    topic: str
    group: Annotated[
        dict[str, str | None] | None, Meta(description="a group's key; null for the topic's own")
    ]
    state: Literal["pending", "firing", "resolved", "inactive"]
    value: float | None
    since: Annotated[float, Meta(description="topic-clock time of the change, epoch s")]
    labels: dict[str, str]
    annotations: dict[str, str]


class AlertChangeMessage(AlertInstance, frozen=True):
    """an alert instance's state change (`_alerts`, `event: alert`), with its id"""

    id: str
