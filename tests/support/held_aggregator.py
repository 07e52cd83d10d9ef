"""`python held_aggregator.py -m pushsvc serve ...`: the real `pushsvc serve`, whose
aggregators start only once the process gets SIGUSR1.

What the hostile tests use to stop the embedded server's aggregator while producers go on
posting (it shares the process with the HTTP API, so no signal stops one without the other):
what its event log holds meanwhile, and what is refused past its bound. Every class is the
product's; only `PartitionPool.run` waits first, here and nowhere in the product.
"""

from __future__ import annotations

import signal
import sys

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from pushsvc.aggregate.partition_pool import PartitionPool  # noqa: E402

released = gevent.event.Event()
_run = PartitionPool.run


def _held_run(self: PartitionPool, stop: gevent.event.Event) -> None:
    gevent.wait([released, stop], count=1)
    _run(self, stop)


def main() -> None:
    if sys.argv[1:3] != ["-m", "pushsvc"]:
        raise SystemExit("usage: held_aggregator.py -m pushsvc serve [options]")
    PartitionPool.run = _held_run  # type: ignore[method-assign]
    gevent.signal_handler(signal.SIGUSR1, released.set)
    from pushsvc.cli import main as cli

    sys.argv = ["pushsvc", *sys.argv[3:]]
    cli(prog_name="pushsvc")


if __name__ == "__main__":
    main()
