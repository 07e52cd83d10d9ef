"""Access to the app's runtime from views."""

from __future__ import annotations

from flask import current_app
from werkzeug.routing import BaseConverter

from pushsvc.runtime import Runtime


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["pushsvc"]
    return rt


class AnyText(BaseConverter):
    """Matches any text, newlines and slashes included, so that a bad topic name reaches
    `validate_topic` and gets its 400 instead of a 404 from the router."""

    regex = r"[\s\S]+?"
    part_isolating = False
