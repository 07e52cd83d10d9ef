"""gunicorn settings for pushsvc's app with several workers: `gunicorn -c
python:pushsvc.ops.gunicorn_config -k gevent -w 4 'pushsvc.app:create_app()'`, or import
`child_exit` into a gunicorn.conf.py of your own.

With `PROMETHEUS_MULTIPROC_DIR` set, every worker answers `/metrics` for all of them
(`multiprocess_metrics`); gunicorn's master, which reaps a worker that died or was replaced,
removes that worker's gauges, as prometheus_client's gunicorn recipe does. Its counters stay.
"""

from __future__ import annotations

import os

from prometheus_client.multiprocess import mark_process_dead


class _Worker:  # what gunicorn passes (gunicorn.workers.base.Worker), as far as read here
    pid: int


def child_exit(server: object, worker: _Worker) -> None:
    # Not imported from multiprocess_metrics: gunicorn's master should not import gevent.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
