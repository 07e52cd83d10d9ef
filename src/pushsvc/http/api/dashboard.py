"""GET / — the live dashboard: one static page, its script and stylesheet, served by pushsvc.

No build step and nothing from a CDN, so the page works offline. Assets live under
`/dashboard/` rather than `/static/`, which the Flask app already claims for itself.
The page links them relatively and subscribes to `stream?topic=*`, so it also works
behind a proxy that mounts pushsvc under a path prefix.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).resolve().parents[2] / "static"

bp = Blueprint("dashboard", __name__, static_folder=STATIC, static_url_path="/dashboard")

# Tags are producer input and end up in the page: the script renders them as text, and the
# policy makes sure that even a mistake there cannot run markup-borne script or load anything
# from elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


@bp.get("/")
def index() -> Response:
    return send_from_directory(STATIC, "dashboard.html")


@bp.after_request
def _harden(response: Response) -> Response:
    # Runs for this blueprint's views only: the page and its assets, not the API.
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
