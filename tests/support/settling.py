"""The in-process app's test client that waits, after each request, until the core has
published what the request logged: POST accepts a batch once it is in the partition's log,
and the partition's aggregator (a greenlet of the app's runtime) applies and publishes it
when the test's greenlet yields. A test of the app reads what a user reads a moment later."""

from __future__ import annotations

import time
from typing import Any

import gevent
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pushsvc.runtime import Runtime

_WAIT_S = 10.0  # only reached when something is broken


def settled(runtime: Runtime) -> bool:
    """Every partition held by a ready aggregator, and every entry logged published."""
    pool = runtime.partitions
    if pool is None:
        return True  # a web process: nothing of this process's to wait for
    if len(pool.runners) < pool.partitions:
        return False
    return all(lag.entries == 0 for lag in runtime.broker.lag())


def settle(runtime: Runtime) -> None:
    deadline = time.monotonic() + _WAIT_S
    while not settled(runtime):
        if time.monotonic() > deadline:
            raise TimeoutError("the partitions did not publish what was logged")
        gevent.sleep(0.001)


class SettlingClient(FlaskClient):
    """`FlaskClient` that settles the app's runtime after every request (see the module)."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        runtime = self.application.extensions.get("pushsvc")
        if isinstance(runtime, Runtime) and not runtime.stop.is_set():
            settle(runtime)
        return response
