"""The floor under a POST to pushsvc: gevent's pywsgi answering a POST with 202 once it has
read the body, bare (`pywsgi`) or through a one-route Flask app (`flask`), and nothing else:
what `bench.post_cost --floors` measures beside `pushsvc serve`, to tell the server's own cost
from its framework's.

    python -m bench.peers.post_floor pywsgi   # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after the patching, as pushsvc serve does it)
import socket  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

ACCEPTED = b'{"accepted":1}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(ACCEPTED)))]


def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the body, answer 202."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("202 Accepted", HEADERS)
    return [ACCEPTED]


def flask_app() -> Callable[..., Iterable[bytes]]:
    """The same on Flask: one route, the body read, 202."""
    from flask import Flask, request

    app = Flask(__name__)

    @app.post("/topics/<topic>/events")
    def publish(topic: str) -> tuple[bytes, int, dict[str, str]]:
        request.get_data()
        return ACCEPTED, 202, {"Content-Type": "application/json"}

    return app.wsgi_app


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("app", choices=["pywsgi", "flask"])
    app = bare if cli.parse_args().app == "pywsgi" else flask_app()
    listener = socket.socket()
    # As `pushsvc serve` listens: without it, Nagle's algorithm holds back a response's
    # second write by ~40 ms (the client's delayed ACK).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    server = WSGIServer(listener, app, log=None)
    server.start()
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
