"""The Flask-SSE 1.0 peer: its README's app, plus a POST endpoint that publishes.

Runs in its own venv (.bench-venvs/flask-sse, built by bench/fanout.py) under
`gunicorn -k gevent flask_sse_app:app`; REDIS_URL names the Redis to use.
Subscribers: GET /stream. Producers: POST /publish with a JSON body, which every
subscriber receives as the `data:` of an unnamed event.
"""

from __future__ import annotations

import os

from flask import Flask, request
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")


@app.post("/publish")
def publish() -> tuple[dict[str, int], int]:
    receivers = sse.publish(request.get_json())
    return {"receivers": receivers}, 202
