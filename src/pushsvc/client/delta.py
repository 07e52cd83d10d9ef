"""A `?delta=positional` stream's patches made whole again, free of I/O: the updates of each
topic received on the current connection, and each patch applied to its topic's (the format:
`pushsvc.core.delta_patch`). The clients hand on the whole update, as an `event: stats`
message, never the patch.

The server sends a patch only against the last update of its topic it sent on the same
connection; the client keeps exactly that, and forgets everything when it connects again
(`reset`). A patch whose base this client does not hold is never guessed at: it raises
`MissingBase`, and the clients connect again from the last id they handed on (the patch's
own id is not taken), so the server starts that topic again with a whole update.
"""

from __future__ import annotations

from typing import Any

import orjson

from pushsvc.client.errors import MissingBase
from pushsvc.core import delta_patch

DELTA_EVENT = "stats-delta"
"""What a patch's SSE event is called (`pushsvc.deliver.delta.DELTA_EVENT`)."""
DELTA_FORMAT = "positional"
"""What the clients ask for (`?delta=`)."""


class Reconstruction:
    """The last update of each topic received on this connection, and patches applied."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        """A new connection: the server remembers nothing of the old one, nor does this."""
        self._latest.clear()

    def update(self, data: str) -> None:
        """A whole update (`event: stats`) arrived: the base of its topic's next patch."""
        fields = orjson.loads(data)
        if isinstance(fields, dict) and isinstance(fields.get("topic"), str):
            self._latest[fields["topic"]] = fields

    def snapshot(self, data: str) -> None:
        """A snapshot: a topic it names as deleted is forgotten (its next update is whole)."""
        fields = orjson.loads(data)
        for topic in fields.get("deleted", ()) if isinstance(fields, dict) else ():
            self._latest.pop(topic, None)

    def patch(self, data: str) -> str:
        """The whole update that the patch `data` makes, as JSON text; it is now its topic's
        base. MissingBase when it cannot be applied to what this connection received."""
        try:
            patch = orjson.loads(data)
            if not isinstance(patch, list):
                raise delta_patch.PatchError("a patch is a JSON array")
            topic = delta_patch.topic_of(patch)
            base = self._latest.get(topic)
            if base is None:
                raise MissingBase(f"a patch of {topic!r}, whose last update this stream lacks")
            whole = delta_patch.apply(base, patch)
        except (orjson.JSONDecodeError, delta_patch.PatchError) as exc:
            raise MissingBase(f"a patch that does not apply: {exc}") from None
        self._latest[topic] = whole
        return orjson.dumps(whole).decode()
