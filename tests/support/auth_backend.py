"""An application backend for the auth proxy's tests, run as a real process
(`python -m support.auth_backend`): a small Flask app that judges pushsvc's asks as an
application would, and misbehaves on request.

It grants what the forwarded `Authorization: Bearer <token>` says, the token verified with the
suite's secret (so tests written for tokens read the same callers through the proxy); no
valid token: 401. `POST /mode` makes it deny, answer slowly, fail or answer garbage;
`GET /asks` tells what it was asked (each ask's body, cookie names and header names).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from pushsvc.security.tokens import TokenError, Verifier, load_key
from support.auth_tokens import SECRET

app = Flask(__name__)
_verifier = Verifier(load_key(SECRET))
_lock = threading.Lock()
_state: dict[str, Any] = {"mode": "tokens", "delay_s": 0.0, "ttl": 60, "body": ""}
_asks: list[dict[str, Any]] = []


@app.post("/mode")
def mode() -> Response:
    """Set how it answers (`mode`, `delay_s`, `ttl`, `body`); `"forget": true` clears the
    asks it recorded."""
    given = dict(request.get_json())
    with _lock:
        if given.pop("forget", False):
            _asks.clear()
        _state.update(given)
        return jsonify(_state)


@app.get("/asks")
def asks() -> Response:
    with _lock:
        return jsonify(_asks)


@app.post("/auth")
def auth() -> Any:
    with _lock:
        state = dict(_state)
        _asks.append(
            {
                "body": request.get_json(silent=True),
                "cookies": sorted(request.cookies),
                "headers": sorted(name.lower() for name, _ in request.headers.items()),
            }
        )
    if state["delay_s"]:
        time.sleep(state["delay_s"])
    kind = state["mode"]
    if kind == "garbage":
        return Response(state["body"], 200, content_type="application/json")
    if kind == "error":
        return jsonify(error="the database is down"), 500
    if kind in ("401", "403"):
        return jsonify(error="denied"), int(kind)
    if kind == "empty":
        return jsonify(ttl=state["ttl"], pushsvc={"publish": [], "subscribe": []})
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return jsonify(error="no session"), 401
    try:
        grant = _verifier.verify(token.strip())
    except TokenError:
        return jsonify(error="no session"), 401
    return jsonify(
        sub=grant.subject,
        ttl=state["ttl"],
        pushsvc={
            "publish": list(grant.publish.selectors),
            "subscribe": list(grant.subscribe.selectors),
        },
    )


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
