"""Who may publish and read what: the request side of authentication (docs/security.md).

A token comes from `Authorization: Bearer …`, else the `pushsvc_token` cookie (what browsers
use: `EventSource` cannot set headers), else — only when `PUSHSVC_TOKEN_QUERY` is on, and only
to subscribe — `?token=`. The first one present is the one judged: a bad header is a 401 even
when a good cookie is also sent. Without `PUSHSVC_JWT_KEY` everything is allowed.

With `--auth-url`, a request with no valid token is judged by the application's backend
(`pushsvc.security.backend_auth`) when it carries the cookies or headers listed for it; a
denial answers as no token does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from werkzeug import Request

from pushsvc.core.topics import TopicMatcher
from pushsvc.errors import Forbidden, Unauthorized
from pushsvc.security.backend_auth import Action, BackendAuth, Renew
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import Grant, TokenError, Verifier

COOKIE = "pushsvc_token"
QUERY = "token"

Source = Literal["header", "cookie", "query"]
Renewer = Callable[[Scope], Renew]
"""Makes a stream's renewal hook, given the scope it was opened with."""

QUERY_DISABLED = (
    "?token= was sent, but query tokens are disabled on this server: send the token in "
    "Authorization: Bearer … or the pushsvc_token cookie, or enable ?token= for subscribing "
    "with PUSHSVC_TOKEN_QUERY=true (--token-query)"
)


@dataclass(frozen=True, slots=True)
class ReadAccess:
    """What a subscribing request may receive: `matcher` narrowed to its scope, until
    `expires_at` (epoch seconds; None: never, as without auth or anonymously)."""

    matcher: TopicMatcher
    expires_at: float | None
    alert_topics: Callable[[str], bool] | None = None
    """The topics whose alert instances it may see on `_alerts` (None: every one)."""
    scope_key: str = ""
    """Names that scope (for a rendering shared by readers of one scope)."""
    scope: Scope | None = None
    """Everything the caller may read (None: auth off): what its options may name
    (`pushsvc.security.visible_rules.visible_names`)."""
    subject: str | None = None
    """Its token's `sub` (None: no token, or one without)."""
    presence: Scope = Scope(None)  # noqa: RUF009 (frozen)
    """The topics whose watchers' subjects it may be told (its token's presence scope)."""
    renew: Renew | None = None
    """For a grant of the application's backend: asks again when it expires."""


class Gate:
    """The access policy of one app, built once from its settings (`Runtime.build`):
    `verifier` None turns auth off; `anonymous` is what a request without a token may read;
    `token_query` allows `?token=` to subscribe; `trusted_origins` may post with the cookie."""

    def __init__(
        self,
        verifier: Verifier | None,
        *,
        anonymous: Scope,
        token_query: bool,
        trusted_origins: Iterable[str],
        backend: BackendAuth | None = None,
    ) -> None:
        self.verifier = verifier
        self.backend = backend
        self.anonymous = anonymous
        self.token_query = token_query
        self._trusted_origins = frozenset(trusted_origins)

    @property
    def enabled(self) -> bool:
        return self.verifier is not None or self.backend is not None

    def publisher(self, request: Request, topic: str) -> Grant | None:
        """The grant allowing this request to publish to `topic` (None without auth);
        Unauthorized or Forbidden otherwise."""
        grant = self.many_publisher(request, [topic])
        check_publishing(grant, topic)
        return grant

    def many_publisher(self, request: Request, topics: Sequence[str]) -> Grant | None:
        """The grant of a request publishing to several `topics` (None without auth), or
        Unauthorized (or, for a cookie POST from a foreign origin, Forbidden); whether it
        covers each topic is judged topic by topic (`check_publishing`)."""
        if not self.enabled:
            return None
        grant, source, _ = self._grant(request, query=False, action="publish", topics=topics)
        if grant is None:
            if request.args.get(QUERY):
                raise Unauthorized(
                    "publishing never takes ?token= (URLs end up in logs): send the token in "
                    "Authorization: Bearer …"
                )
            raise self._sign_in_needed("publishing")
        if source == "cookie":
            self._check_origin(request)
        return grant

    def reader(self, request: Request, wanted: TopicMatcher) -> ReadAccess:
        """What a stream (or a read) of `wanted` may receive; Unauthorized when it needs a
        token it lacks, Forbidden when its token does not cover an explicit topic name."""
        if not self.enabled:
            return ReadAccess(wanted, None)
        scope, grant, renewer = self._reading_scope(request, "subscribe", wanted.selectors)
        refused = scope.refused(wanted)
        if refused:
            names = ", ".join(repr(name) for name in refused[:5])
            if grant is None:
                raise self._sign_in_needed(f"reading {names}")
            raise Forbidden(f"the token does not allow reading {names}")
        if scope.empty:
            if grant is None:
                raise self._sign_in_needed("subscribing")
            raise Forbidden("the token allows reading no topic")
        return ReadAccess(
            scope.restrict(wanted),
            None if grant is None else grant.expires_at,
            scope.alert_topics,
            ",".join(scope.selectors),
            scope,
            None if grant is None else grant.subject,
            Scope(None) if grant is None else grant.presence,
            None if renewer is None else renewer(scope),
        )

    def readable(self, request: Request) -> Scope | None:
        """The topics this request may read (None: all, auth being off); for listings."""
        if not self.enabled:
            return None
        scope, grant, _ = self._reading_scope(request, "read", ())
        if scope.empty and grant is None:
            raise self._sign_in_needed("reading topics")
        return scope

    def _sign_in_needed(self, what: str) -> Unauthorized:
        """The 401 of a request with no grant: what it needs, as this server takes it — a
        token, and with the application's backend its sign-in (named by the cookies and
        headers it takes: a browser user has a cookie, not a "token"). The same whether it
        sent nothing or a credential the backend denied (which must not be told apart)."""
        ways = []
        if self.verifier is not None:
            ways.append(
                f"a token (Authorization: Bearer …, or the {COOKIE} cookie the application "
                "sets when it signs its user in)"
            )
        if self.backend is not None:
            ways.append(
                f"a sign-in the application grants ({self.backend.credentials_taken()}, "
                "which pushsvc asks the application about)"
            )
        return Unauthorized(f"{what} needs {' or '.join(ways)}")

    def _reading_scope(
        self, request: Request, action: Action, topics: tuple[str, ...]
    ) -> tuple[Scope, Grant | None, Renewer | None]:
        grant, _, renewer = self._grant(
            request, query=self.token_query, action=action, topics=topics
        )
        if grant is None:
            if request.args.get(QUERY) and not self.token_query:
                # Judged as sent, not as if none had been: "needs a token" would send its
                # sender looking for a bad token rather than at the setting.
                raise Unauthorized(QUERY_DISABLED)
            return self.anonymous, None, None
        return Scope.union((grant.subscribe, self.anonymous)), grant, renewer

    def _grant(
        self, request: Request, *, query: bool, action: Action, topics: Sequence[str]
    ) -> tuple[Grant | None, Source | None, Renewer | None]:
        """The request's token's grant; else, with the application's backend, its answer for
        the request's credential (and how a stream of it is renewed); else None (no token:
        anonymous). A bad token with no credential for the backend (or one it denies) is its
        401."""
        refused: Unauthorized | None = None
        if self.verifier is not None:
            try:
                found = _token(request, query=query)
                if found is not None:
                    return self._verify(found[0]), found[1], None
            except Unauthorized as exc:
                if self.backend is None:
                    raise
                refused = exc
        if self.backend is not None:
            judged = self._judged(self.backend, request, action, topics)
            if judged is not None:
                return judged
        if refused is not None:
            raise refused
        return None, None, None

    def _judged(
        self, backend: BackendAuth, request: Request, action: Action, topics: Sequence[str]
    ) -> tuple[Grant, Source, Renewer] | None:
        """The application's grant for the request's credential (None: it sent none, or was
        denied), how the grant was carried, and how a stream of it is renewed."""
        credential = backend.credential(request)
        if credential is None:
            return None
        address = request.remote_addr or ""
        grant = backend.grant(credential, action=action, topics=topics, address=address)
        if grant is None:
            return None
        renewer = partial(
            backend.renewer, credential, topics=topics, address=address, anonymous=self.anonymous
        )
        return grant, "cookie" if credential.has_cookies else "header", renewer

    def _verify(self, token: str) -> Grant:
        assert self.verifier is not None
        try:
            return self.verifier.verify(token)
        except TokenError as exc:
            raise Unauthorized(str(exc), invalid_token=True) from None

    def _check_origin(self, request: Request) -> None:
        # A cookie rides along on cross-site requests too: without this, any page a holder
        # visits could publish with their cookie (CSRF). Headers and query tokens cannot be
        # added by another site, so only cookie-authenticated POSTs are checked.
        origin = request.headers.get("Origin")
        own = request.host_url.rstrip("/")
        if origin is None or (origin != own and origin not in self._trusted_origins):
            raise Forbidden(
                f"a cookie-authenticated POST must come from this server's origin or one in "
                f"PUSHSVC_CORS_ORIGINS, not {origin or 'an unknown origin'!r}"
            )


def check_publishing(grant: Grant | None, topic: str) -> None:
    """Forbidden unless `grant` allows publishing to `topic` (None, auth being off, allows
    every topic)."""
    if grant is not None and not grant.publish.allows(topic):
        raise Forbidden(f"the token does not allow publishing to {topic!r}")


def _token(request: Request, *, query: bool) -> tuple[str, Source] | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthorized("use Authorization: Bearer <token>", invalid_token=True)
        return credentials.strip(), "header"
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return cookie, "cookie"
    if query:
        value = request.args.get(QUERY)
        if value:
            return value, "query"
    return None
