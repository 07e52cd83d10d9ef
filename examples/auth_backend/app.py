"""A Flask-Login application that decides who may read and publish what on pushsvc
(docs/security.md, "Access by your application's sign-in").

Its users sign in with a form as usual (`POST /login`) and get Flask's session cookie. pushsvc,
started with

    pushsvc serve --auth-url http://127.0.0.1:5000/pushsvc/auth --auth-cookies session

forwards that cookie to `POST /pushsvc/auth` when a browser opens a stream with no token;
the view answers with what the signed-in user may do, for `GRANT_TTL_S` seconds, or 401.
Nothing else in the application changes: `current_user` reads the forwarded cookie as it
reads a browser's.

Signing out must end the user's streams once their grant expires. Flask's session cookie is
signed, not stored: a copy of it stays valid after `logout_user`. So each sign-in gets a
random id, kept server-side while signed in, and `get_id` returns it (Flask-Login's
"alternative tokens"): after a sign-out the old cookie names an id that no longer loads a
user, and the next ask answers 401.

Run it: `python examples/auth_backend/app.py --port 5000` (users alice / wonderland, bob /
builder). In production, serve `app` with your WSGI server and keep `/pushsvc/auth` on the
network between pushsvc and the application only.
"""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass, field

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

# How long pushsvc may keep a grant before it asks again: the longest a signed-out user's
# open stream runs on.
GRANT_TTL_S = int(os.environ.get("GRANT_TTL_S", "60"))


@dataclass
class Account:
    name: str
    password_hash: str
    subscribe: list[str]
    publish: list[str] = field(default_factory=list)


ACCOUNTS = {
    account.name: account
    for account in (
        Account(
            "alice",
            generate_password_hash("wonderland"),
            subscribe=["orders", "public.*"],
            publish=["orders"],
        ),
        Account("bob", generate_password_hash("builder"), subscribe=["public.*"]),
    )
}
SIGNED_IN: dict[str, str] = {}
"""Sign-in id -> account name, while signed in: what a session cookie's id must name."""


class User(UserMixin):  # type: ignore[misc]
    def __init__(self, sign_in: str, account: Account) -> None:
        self.sign_in = sign_in
        self.account = account

    def get_id(self) -> str:
        return self.sign_in  # the sign-in, not the account: a sign-out revokes it


app = Flask(__name__)
# The session cookie's signing key: from your secret store, the same on every process.
app.secret_key = os.environ.get("APP_SECRET_KEY") or secrets.token_hex(32)
app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
login_manager = LoginManager(app)


@login_manager.user_loader
def load_user(sign_in: str) -> User | None:
    name = SIGNED_IN.get(sign_in)
    return None if name is None else User(sign_in, ACCOUNTS[name])


@app.post("/login")
def login() -> ResponseReturnValue:
    account = ACCOUNTS.get(request.form.get("username", ""))
    if account is None or not check_password_hash(
        account.password_hash, request.form.get("password", "")
    ):
        abort(401)
    sign_in = secrets.token_urlsafe(16)
    SIGNED_IN[sign_in] = account.name
    login_user(User(sign_in, account))
    return jsonify(signed_in=account.name)


@app.post("/logout")
def logout() -> ResponseReturnValue:
    if current_user.is_authenticated:
        SIGNED_IN.pop(current_user.sign_in, None)
        logout_user()
    return jsonify(signed_in=None)


@app.post("/pushsvc/auth")
def grant_for_pushsvc() -> ResponseReturnValue:
    """pushsvc asks here for a request with no token. The body names the client's address,
    the action and the topics it asked for; the answer is cached per session cookie for
    `ttl` seconds and used for any topic, so it says everything the user may do."""
    if not current_user.is_authenticated:
        return jsonify(error="not signed in"), 401
    account = current_user.account
    return jsonify(
        sub=account.name,
        ttl=GRANT_TTL_S,
        pushsvc={"subscribe": account.subscribe, "publish": account.publish},
    )


def main() -> None:
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
