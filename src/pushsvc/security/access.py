"""Who may publish and read what: the request side of authentication (docs/security.md).

A token comes from `Authorization: Bearer …`, else the `pushsvc_token` cookie (what browsers
use: `EventSource` cannot set headers), else — only when `PUSHSVC_TOKEN_QUERY` is on, and only
to subscribe — `?token=`. The first one present is the one judged: a bad header is a 401 even
when a good cookie is also sent. Without `PUSHSVC_JWT_KEY` everything is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from werkzeug import Request

from pushsvc.core.topics import TopicMatcher
from pushsvc.errors import Forbidden, Unauthorized
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import Grant, TokenError, Verifier

COOKIE = "pushsvc_token"
QUERY = "token"

Source = Literal["header", "cookie", "query"]

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
    ) -> None:
        self.verifier = verifier
        self.anonymous = anonymous
        self.token_query = token_query
        self._trusted_origins = frozenset(trusted_origins)

    @property
    def enabled(self) -> bool:
        return self.verifier is not None

    def publisher(self, request: Request, topic: str) -> Grant | None:
        """The grant allowing this request to publish to `topic` (None without auth);
        Unauthorized or Forbidden otherwise."""
        if self.verifier is None:
            return None
        found = _token(request, query=False)
        if found is None:
            if request.args.get(QUERY):
                raise Unauthorized(
                    "publishing never takes ?token= (URLs end up in logs): send the token in "
                    "Authorization: Bearer …"
                )
            raise Unauthorized("publishing needs a token (Authorization: Bearer …)")
        token, source = found
        grant = self._verify(token)
        if source == "cookie":
            self._check_origin(request)
        if not grant.publish.allows(topic):
            raise Forbidden(f"the token does not allow publishing to {topic!r}")
        return grant

    def reader(self, request: Request, wanted: TopicMatcher) -> ReadAccess:
        """What a stream (or a read) of `wanted` may receive; Unauthorized when it needs a
        token it lacks, Forbidden when its token does not cover an explicit topic name."""
        if self.verifier is None:
            return ReadAccess(wanted, None)
        scope, grant = self._reading_scope(request)
        refused = scope.refused(wanted)
        if refused:
            names = ", ".join(repr(name) for name in refused[:5])
            if grant is None:
                raise Unauthorized(f"reading {names} needs a token")
            raise Forbidden(f"the token does not allow reading {names}")
        if scope.empty:
            if grant is None:
                raise Unauthorized("subscribing needs a token")
            raise Forbidden("the token allows reading no topic")
        return ReadAccess(
            scope.restrict(wanted),
            None if grant is None else grant.expires_at,
            scope.alert_topics,
            ",".join(scope.selectors),
            scope,
        )

    def readable(self, request: Request) -> Scope | None:
        """The topics this request may read (None: all, auth being off); for listings."""
        if self.verifier is None:
            return None
        scope, grant = self._reading_scope(request)
        if scope.empty and grant is None:
            raise Unauthorized("reading topics needs a token")
        return scope

    def _reading_scope(self, request: Request) -> tuple[Scope, Grant | None]:
        found = _token(request, query=self.token_query)
        if found is None:
            if request.args.get(QUERY):
                # Judged as sent, not as if none had been: "needs a token" would send its
                # sender looking for a bad token rather than at the setting.
                raise Unauthorized(QUERY_DISABLED)
            return self.anonymous, None
        grant = self._verify(found[0])
        return Scope.union((grant.subscribe, self.anonymous)), grant

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
