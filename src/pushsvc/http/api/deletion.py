"""DELETE /topics/{topic} — forget a topic: its windows, history, series, groups, alert
instances and clock (`Broker.delete_topic`), so that its next event starts it afresh.

Why it exists: one event with a wrong clock (or any mistake) could otherwise lock a topic for
good. The deletion is a state change through the event log like any other, applied once by
every aggregator in order with the events; the topic's streams get a `"gap": true` snapshot.

With auth on, it takes the publish scope on the topic (as a POST to it). Each deletion is one
INFO line in the log naming the topic, the token's subject and the client address (an audit
trail). A topic the deployment does not keep is a 404, so a retried DELETE is harmless. A
derived topic (`[[derive]]`) is refused (400 derived_topic): its deriver writes it from its
sources, and would go on from where it stood; so is a session topic (`[[session]]`, 400
session_topic), for the same reason: its sessionizer would go on appending from its saved state.
"""

from __future__ import annotations

import logging

from flask import Blueprint, request

from pushsvc.core.topics import validate_topic
from pushsvc.errors import DerivedTopic, NotFound, SessionTopic
from pushsvc.http.api.context import runtime

log = logging.getLogger(__name__)

bp = Blueprint("deletion", __name__)


# One path segment, unlike the other topic routes' `anytext`: that would also match
# `/topics/t/events` and the like, so that their 405s advertised DELETE in `Allow`. A name with
# no slash still reaches `validate_topic` (a 400); one with a slash names no topic anyway.
@bp.delete("/topics/<topic>")
def delete_topic(topic: str) -> dict[str, object]:
    rt = runtime()
    validate_topic(topic)
    grant = rt.gate.publisher(request, topic)
    if topic in rt.settings.rules.derived_topics:
        raise DerivedTopic(
            f"{topic} is a derived metric ([[derive]] in the rules file): pushsvc writes it "
            "from its sources, it cannot be deleted (delete a source instead)"
        )
    if topic in rt.settings.rules.session_topics:
        raise SessionTopic(
            f"{topic} is a session topic ([[session]] in the rules file): pushsvc writes it "
            "from its sources, it cannot be deleted"
        )
    if not rt.broker.delete_topic(topic):
        raise NotFound(f"topic {topic!r} does not exist (never posted to, or deleted)")
    log.info(
        "topic %r deleted by %s from %s",
        topic,
        "subject " + repr(grant.subject) if grant is not None and grant.subject else "anonymous",
        request.remote_addr,
    )
    return {"topic": topic, "deleted": True}
