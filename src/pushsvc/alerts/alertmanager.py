"""Firing and resolved alert instances posted to Prometheus Alertmanagers (`POST /api/v2/alerts`),
as Prometheus's notifier does, off the aggregator's path.

One sender runs beside each active aggregator and posts that aggregator's instances (the
topics of its shard). Every second it reads the instances active now (what `GET /alerts`
answers, kept by the publish step) and posts, to every Alertmanager given (an HA pair gets
both), the instances that started firing and those that stopped (with `endsAt` now); every
`resend` it posts all that fire again. A firing alert's `endsAt` is four resends ahead, so
if the sender goes away Alertmanager resolves it by itself, as with Prometheus. An unreachable
Alertmanager is retried with a growing wait (up to 30 s), logged once per outage and counted in
`/metrics`; updates never wait for it: the sender runs in its own greenlet, reading state the
aggregator already wrote.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import gevent.event
import orjson

from pushsvc.errors import BrokerUnavailable

log = logging.getLogger(__name__)

__all__ = ["AlertmanagerSender"]

RESEND_S = 60.0
"""How often every firing instance is posted again. Fixed, not a setting: it is Prometheus's
own default (`--rules.alert.resend-delay`), which Alertmanager's grouping and `endsAt` (four
resends ahead) are tuned for; deduplication happens in Alertmanager, not here."""

_MAX_WAIT_S = 30.0


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerSender:
    """Posts `active()`'s firing instances (JSON changes, as `_alerts` carries them) whose topic
    is `mine`, while `holding()` (this aggregator is the active one)."""

    def __init__(
        self,
        urls: Sequence[str],
        active: Callable[[], list[bytes]],
        *,
        holding: Callable[[], bool] = lambda: True,
        mine: Callable[[str], bool] = lambda topic: True,
        resend_s: float = RESEND_S,
        poll_s: float = 1.0,
        timeout_s: float = 5.0,
        on_post: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._urls = [url.rstrip("/") + "/api/v2/alerts" for url in urls]
        self._active = active
        self._holding = holding
        self._mine = mine
        self._resend_s = resend_s
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._on_post = on_post
        self._sent: dict[str, dict[str, Any]] = {}  # instance -> the firing change posted
        self._next_resend = 0.0
        self._retry_at = 0.0
        self._failures = 0

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.wait(self._poll_s):
            try:
                self.round(time.time())
            except Exception:  # a failing round must not end the rounds for good
                log.exception("alertmanager round failed")

    def round(self, now: float) -> None:
        """Post what changed (and everything, when a resend is due)."""
        if not self._holding():
            self._sent.clear()  # the next holder posts them; Alertmanager dedupes repeats
            return
        try:
            firing = {
                _instance(change): change
                for change in map(orjson.loads, self._active())
                if change["state"] == "firing" and self._mine(change["topic"])
            }
        except BrokerUnavailable:
            return
        started = [c for key, c in firing.items() if key not in self._sent]
        stopped = [c for key, c in self._sent.items() if key not in firing]
        resend = now >= self._next_resend and bool(firing)
        if not (started or stopped or resend) or now < self._retry_at:
            return
        alerts = [
            _alert(change, ends_s=now + 4 * self._resend_s)
            for change in (firing.values() if resend else started)
        ]
        alerts += [_alert(change, ends_s=now) for change in stopped]
        if self._post(alerts):
            self._sent = firing
            if resend:
                self._next_resend = now + self._resend_s
            self._failures = 0
            self._retry_at = 0.0
        else:
            self._failures += 1
            self._retry_at = now + min(_MAX_WAIT_S, 2.0 ** (self._failures - 1))

    def _post(self, alerts: list[dict[str, Any]]) -> bool:
        body = orjson.dumps(alerts)
        ok = True
        for url in self._urls:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    response.read()
                self._on_post("ok")
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                ok = False
                self._on_post("error")
                if self._failures == 0:  # once per outage, not once per retry
                    log.warning("alertmanager %s unreachable: %s (retrying)", url, exc)
        return ok


def _instance(change: dict[str, Any]) -> str:
    return orjson.dumps([change["alert"], change["topic"], change["group"]]).decode()


def _alert(change: dict[str, Any], *, ends_s: float) -> dict[str, Any]:
    """Alertmanager's form: labels alertname, topic, the group's tags and the rule's labels."""
    labels = {"alertname": change["alert"], "topic": change["topic"]}
    for tag, value in (change["group"] or {}).items():
        if value is not None:
            labels[tag] = value
    labels.update(change["labels"])
    return {
        "labels": labels,
        "annotations": change["annotations"],
        "startsAt": _rfc3339(change["since"]),
        "endsAt": _rfc3339(max(ends_s, change["since"] + 0.001)),
    }
