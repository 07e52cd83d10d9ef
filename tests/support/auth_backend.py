"""An application backend for the auth proxy's tests, run as a real process
(`python -m support.auth_backend`): a small Flask app that judges pushsvc's asks as an
application would, and misbehaves on request.

It grants what the forwarded `Authorization: Bearer <token>` says, the token verified with the
suite's secret (so tests written for tokens read the same callers through the proxy); no
valid token: 401. `POST /mode` makes it deny, answer slowly (every answer, or only its
denials), fail, answer garbage, gzip its grants or answer a gzip bomb; `GET /asks` tells what
it was asked (each ask's body, cookie names and header names), `GET /in-flight` the most asks
it held at once.
"""

from __future__ import annotations

import functools
import gzip
import sys
import threading
import time
import zlib
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from pushsvc.security.tokens import TokenError, Verifier, load_key
from support.auth_tokens import SECRET

app = Flask(__name__)
_verifier = Verifier(load_key(SECRET))
_lock = threading.Lock()
_state: dict[str, Any] = {
    "mode": "tokens",
    "delay_s": 0.0,
    "deny_delay_s": 0.0,
    "ttl": 60,
    "body": "",
    "bomb_mb": 0,
}
_asks: list[dict[str, Any]] = []
_in_flight = {"now": 0, "most": 0}


@app.post("/mode")
def mode() -> Response:
    """Set how it answers (`mode`, `delay_s`, `deny_delay_s`, `ttl`, `body`, `bomb_mb`);
    `"forget": true` clears the asks it recorded."""
    given = dict(request.get_json())
    with _lock:
        if given.pop("forget", False):
            _asks.clear()
            _in_flight["most"] = _in_flight["now"]
        _state.update(given)
        if _state["mode"] == "gzip_bomb":
            _bomb(_state["bomb_mb"])  # made before pushsvc asks, not in its time
        return jsonify(_state)


@app.get("/asks")
def asks() -> Response:
    with _lock:
        return jsonify(_asks)


@app.get("/in-flight")
def in_flight() -> Response:
    with _lock:
        return jsonify(_in_flight)


@app.post("/auth")
def auth() -> Any:
    with _lock:
        _in_flight["now"] += 1
        _in_flight["most"] = max(_in_flight["most"], _in_flight["now"])
    try:
        return _judge()
    finally:
        with _lock:
            _in_flight["now"] -= 1


def _judge() -> Any:
    with _lock:
        state = dict(_state)
        _asks.append(
            {
                "body": request.get_json(silent=True),
                "cookies": sorted(request.cookies),
                "headers": sorted(name.lower() for name, _ in request.headers.items()),
                "accept_encoding": request.headers.get("Accept-Encoding"),
            }
        )
    if state["delay_s"]:
        time.sleep(state["delay_s"])
    kind = state["mode"]
    if kind == "garbage":
        return Response(state["body"], 200, content_type="application/json")
    if kind == "gzip_bomb":
        # Whatever was asked for (pushsvc asks for no encoding): `bomb_mb` MiB of spaces, a
        # thousandth of that sent.
        return Response(
            _bomb(state["bomb_mb"]),
            200,
            content_type="application/json",
            headers={"Content-Encoding": "gzip"},
        )
    if kind == "error":
        return jsonify(error="the database is down"), 500
    if kind in ("401", "403"):
        return jsonify(error="denied"), int(kind)
    if kind == "empty":
        return jsonify(ttl=state["ttl"], pushsvc={"publish": [], "subscribe": []})
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise TokenError("no bearer token")
        grant = _verifier.verify(token.strip())
    except TokenError:
        if state["deny_delay_s"]:
            time.sleep(state["deny_delay_s"])
        return jsonify(error="no session"), 401
    answer = jsonify(
        sub=grant.subject,
        ttl=state["ttl"],
        pushsvc={
            "publish": list(grant.publish.selectors),
            "subscribe": list(grant.subscribe.selectors),
        },
    )
    if kind == "gzip":  # compressed though pushsvc asked for none: it reads it all the same
        answer.set_data(gzip.compress(answer.get_data()))
        answer.headers["Content-Encoding"] = "gzip"
    return answer


@functools.cache
@functools.cache
def _bomb(mebibytes: int) -> bytes:
    """Made once: compressing 256 MiB takes the backend seconds, which on a loaded machine
    ran past pushsvc's ask timeout, so pushsvc logged a timeout, not the bomb."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    spaces = b" " * (1 << 20)
    return b"".join(packer.compress(spaces) for _ in range(mebibytes)) + packer.flush()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
