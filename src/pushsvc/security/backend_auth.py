"""Access decided by the application's backend (`--auth-url`, docs/security.md): an auth proxy,
as Centrifugo's connect and subscribe proxies are.

A request with no valid token whose listed cookies (`--auth-cookies`) or Authorization header
are present is judged by the application: pushsvc POSTs to its URL those cookies (one `Cookie`
header, so the application's own session code reads it as usual) and that header, and a JSON
body naming the client's address, the action and the topics asked for:

    {"action": "subscribe", "topics": ["orders"], "address": "203.0.113.7"}

It answers 200 with the claims a token would carry and a lifetime
(`pushsvc.security.backend_answer`), or 401/403 to deny. The grant is kept per credential (a
hash of the forwarded values) for its lifetime, never longer, in a bounded cache; concurrent
asks for one credential are one ask (the first asks, the others wait on its answer), so a
reconnect storm of one user's tabs asks once.

No anonymous client can spend the asks of others. A denial is kept too, for `DENIAL_TTL_S`,
in a cache of its own (so denials never push a grant out): a made-up credential sent again
costs the application nothing meanwhile. Fresh made-up credentials each cost an ask, so the
asks in flight are bounded per client address as well as per process
(`pushsvc.security.ask_slots`): one address flooding made-up cookies holds a quarter of the
asks at most, and the others' sign-ins and stream renewals take the rest. A credential that
cannot be forwarded (a byte outside printable ASCII, which no HTTP client may send) is a 401
that says so, the backend not asked. The answer is read within `MAX_ANSWER_BYTES` before and
after any decoding (`pushsvc.security.backend_body`).

Access fails closed: a backend that does not answer within `ASK_TIMEOUT_S`, answers
anything but 200, 401 or 403, or answers a malformed grant, is `AuthUnavailable` (503 with
`Retry-After`), as is an ask past `MAX_ASKS` in flight (past its address's share: 429
with `Retry-After`); each failure is a log line that names the backend, never a credential.

Outgoing HTTP is httpx on the process's gevent-patched sockets: an ask parks its greenlet,
never the process.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn

import gevent
import gevent.event
import httpx
import orjson
from werkzeug import Request

from pushsvc import __version__
from pushsvc.broker.redis.url import redact_url
from pushsvc.errors import AuthUnavailable, TooManyRequests, Unauthorized
from pushsvc.security.ask_slots import AskSlots
from pushsvc.security.backend_answer import MalformedAnswer, parse_answer
from pushsvc.security.backend_body import ACCEPT_ENCODING, UndecodableAnswer, read_bounded
from pushsvc.security.grant_cache import MISSING, GrantCache
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import Grant

log = logging.getLogger(__name__)

Action = Literal["subscribe", "read", "publish"]
Renew = Callable[[Callable[[float | None], None]], None]
"""A stream's renewal hook (`pushsvc.deliver.live_stream.Renew`): called when its grant
expires, it calls back, later and from a greenlet of its own, with the renewed expiry or
None."""

MAX_ANSWER_BYTES = 65_536
"""A grant is a few selectors: a longer answer (received or decoded) is malformed, not read to
its end."""
DENIAL_TTL_S = 5.0
"""How long a 401/403 is kept for its credential: long enough that a made-up credential sent
again and again costs one ask in that time, short enough that a user whose sign-in keeps its
credential (a header the application starts accepting) waits at most that long."""
CACHE_SIZE = 10_000
"""Credentials whose grants a process keeps (and as many denials), the least recently used let
go first, besides the cache's 64 MiB (`grant_cache.MAX_BYTES`). Fixed, not a setting: the
two bounds meet at grants of 6 KiB, and a credential let go costs one more ask of the
application when it comes back (a round trip: docs/performance.md#auth-proxy)."""
FORWARDED_HEADERS = ("Authorization",)
"""The one header forwarded besides the listed cookies. Fixed, not a setting: a browser's
EventSource sends no header of the page's choosing, so a header credential comes from a
program, which can send it as Authorization, the header proxies and caches treat as one."""
ASK_TIMEOUT_S = 2.0
"""The longest an ask may take, all of it; later is no answer (503 with `Retry-After`).
Fixed, not a setting: an application that judges a session in more than 2 s is down for
its users too, and a longer wait holds the asks (`MAX_ASKS`) of everyone else."""
MAX_ASKS = 64
"""Asks waiting on the application at once, per process (asks for one credential are one;
one client address may hold a quarter). Fixed, not a setting: at `ASK_TIMEOUT_S` it is 32
asks a second answered at the slowest, and each is an HTTP connection the application
serves; a storm of reconnects asks once per credential."""
_LOG_EVERY_S = 1.0
"""At most one line a second about a failing backend (a storm of asks fails together)."""


@dataclass(frozen=True, slots=True)
class Credential:
    """What identifies a caller to the application: the listed cookies and headers it sent."""

    key: bytes
    """A hash of the forwarded names and values: the cache's key (no credential is kept)."""
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # never in a log line
    has_cookies: bool = False
    """Whether a cookie is part of it: a POST authenticated so must pass the Origin check."""


class BackendAuth:
    """Asks `url` what a credential may do; keeps the answers (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        cookies: Sequence[str],
    ) -> None:
        self.url = url
        self._shown_url = redact_url(url)
        self._cookies = tuple(cookies)
        self._headers = FORWARDED_HEADERS
        self._timeout_s = ASK_TIMEOUT_S
        self._slots = AskSlots(MAX_ASKS)
        self._cache: GrantCache[Grant] = GrantCache(CACHE_SIZE)
        self._denied: GrantCache[Grant] = GrantCache(CACHE_SIZE)
        self._asking: dict[bytes, gevent.event.AsyncResult[Grant | None]] = {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(ASK_TIMEOUT_S),
            limits=httpx.Limits(max_connections=MAX_ASKS, max_keepalive_connections=MAX_ASKS),
            follow_redirects=False,  # a redirect (to a login page, say) is no answer
            trust_env=False,  # no proxy or .netrc credentials picked up from the environment
            headers={"User-Agent": f"pushsvc/{__version__}", "Accept-Encoding": ACCEPT_ENCODING},
        )
        self._logged_at = 0.0
        self._unlogged = 0
        self._last_failure = ""
        self.on_ask: Callable[[str], None] = lambda outcome: None
        """Called once per ask sent, with its outcome: granted, denied or failed (/metrics)."""

    def close(self) -> None:
        self._client.close()

    def credential(self, request: Request) -> Credential | None:
        """The request's listed cookies and headers, or None when it sent none of them (it
        is anonymous: the backend is not asked). Unauthorized when one of them holds a byte
        that cannot be forwarded."""
        sent: list[tuple[str, str]] = []
        cookies = self._listed_cookies(request.headers.get("Cookie", ""))
        if cookies:
            sent.append(("Cookie", "; ".join(cookies)))
        for name in self._headers:
            value = request.headers.get(name)
            if value:
                sent.append((name, value))
        if not sent:
            return None
        for name, value in sent:
            if not _forwardable(value):
                # httpx would refuse it inside the ask (a 500 and a traceback per request);
                # the backend could not have granted it anyway.
                what = "a cookie listed in --auth-cookies" if name == "Cookie" else name
                raise Unauthorized(
                    f"{what} holds a byte that is not printable ASCII: it cannot be sent to "
                    "the application to judge"
                )
        digest = hashlib.sha256(orjson.dumps(sent)).digest()
        return Credential(digest, tuple(sent), bool(cookies))

    def credentials_taken(self) -> str:
        """What a caller signs in with, in words: "the session cookie or the Authorization
        header"."""
        named = []
        if self._cookies:
            named.append(f"the {' or '.join(self._cookies)} cookie")
        if self._headers:
            named.append(f"the {' or '.join(self._headers)} header")
        return " or ".join(named)

    def _listed_cookies(self, header: str) -> list[str]:
        """The listed cookies of a `Cookie` header, as sent (`name=value`, not decoded and
        encoded again: the application reads exactly what its browser holds), the first of
        each name."""
        found: dict[str, str] = {}
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name in self._cookies and value and name not in found:
                found[name] = f"{name}={value}"
        return [found[name] for name in self._cookies if name in found]

    def grant(
        self, credential: Credential, *, action: Action, topics: Sequence[str], address: str
    ) -> Grant | None:
        """What `credential` may do (None: denied), from the caches or the backend.
        AuthUnavailable when the backend cannot say or the process has no ask left;
        TooManyRequests when `address` has as many asks in flight as one address may."""
        now = time.time()
        cached = self._cache.get(credential.key, now)
        if cached is not MISSING:
            return cached
        if self._denied.get(credential.key, now) is not MISSING:
            return None
        pending = self._asking.get(credential.key)
        if pending is not None:
            # Another request asks for the same credential now: its answer is this one's.
            try:
                return pending.get(timeout=self._timeout_s + 1)
            except gevent.Timeout:  # its ask is bounded by the timeout: not expected
                raise AuthUnavailable("the auth backend's answer did not come") from None
        with self._slots.held(address):
            return self._ask_once(credential, action=action, topics=topics, address=address)

    def _ask_once(
        self, credential: Credential, *, action: Action, topics: Sequence[str], address: str
    ) -> Grant | None:
        """Ask; the requests for the same credential that come meanwhile wait on its answer."""
        result: gevent.event.AsyncResult[Grant | None] = gevent.event.AsyncResult()
        self._asking[credential.key] = result
        try:
            granted = self._ask(credential, action, topics, address)
        except AuthUnavailable as exc:
            result.set_exception(exc)
            raise
        except BaseException:
            # Killed mid-ask (a shutdown): whoever waits on it must not wait for ever.
            result.set_exception(AuthUnavailable("the auth backend's ask was interrupted"))
            raise
        finally:
            del self._asking[credential.key]
        result.set(granted)
        return granted

    def renewer(
        self,
        credential: Credential,
        had: Scope,
        *,
        topics: Sequence[str],
        address: str,
        anonymous: Scope,
    ) -> Renew:
        """A stream's renewal hook: the renewed grant's expiry while it still allows all it
        had (`had`, with the `anonymous` selectors), else None (the stream ends; its client
        reconnects and is judged afresh)."""

        def renewed() -> float | None:
            try:
                grant = self.grant(credential, action="subscribe", topics=topics, address=address)
            except (AuthUnavailable, TooManyRequests):
                return None  # fails closed: the reconnect gets the 503 (or 429)
            if grant is None:
                return None
            now_allowed = Scope.union((grant.subscribe, anonymous)).selectors
            if not set(had.selectors) <= set(now_allowed):
                return None
            return grant.expires_at

        def renew(done: Callable[[float | None], None]) -> None:
            def run() -> None:
                try:
                    expires_at = renewed()
                except Exception:
                    log.exception("renewing a stream's grant failed")
                    expires_at = None
                done(expires_at)

            gevent.spawn(run)

        return renew

    def _ask(
        self, credential: Credential, action: Action, topics: Sequence[str], address: str
    ) -> Grant | None:
        try:
            grant = self._judged(credential, action, topics, address)
        except AuthUnavailable:
            self.on_ask("failed")
            raise
        self.on_ask("denied" if grant is None else "granted")
        return grant

    def _judged(
        self, credential: Credential, action: Action, topics: Sequence[str], address: str
    ) -> Grant | None:
        body = orjson.dumps({"action": action, "topics": list(topics), "address": address})
        headers = [*credential.headers, ("Content-Type", "application/json")]
        asked_at = time.time()
        try:
            # httpx's timeout bounds each phase; this one the whole ask, a trickle included.
            with gevent.Timeout(self._timeout_s, TimeoutError("the whole ask took too long")):
                status, answer = self._post(body, headers)
        except (httpx.TimeoutException, TimeoutError):
            self._fail(f"did not answer within {self._timeout_s:g}s")
        except UndecodableAnswer as exc:
            self._fail(f"answered {exc}")
        except (httpx.HTTPError, OSError) as exc:
            self._fail(f"could not be reached: {str(exc) or type(exc).__name__}")
        if status in (401, 403):
            # Kept briefly, apart from the grants: the same made-up credential sent again
            # costs no ask meanwhile, and a flood of them pushes out no grant.
            self._denied.put(credential.key, None, time.time() + DENIAL_TTL_S)
            return None
        if status != 200:
            self._fail(f"answered {status}, not 200, 401 or 403")
        if answer is None:
            self._fail(f"answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            grant = parse_answer(answer, asked_at)
        except MalformedAnswer as exc:
            self._fail(f"answered a malformed grant: {exc}")
        if grant.publish.empty and grant.subscribe.empty:
            # An empty grant is a denial the backend dates: kept, so it is not asked again.
            self._denied.put(credential.key, None, grant.expires_at)
            return None
        self._cache.put(credential.key, grant, grant.expires_at, len(answer))
        return grant

    def _post(self, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes | None]:
        """The status and the body (None: longer than MAX_ANSWER_BYTES, received or
        decoded); only a 200's body is read."""
        with self._client.stream("POST", self.url, content=body, headers=headers) as response:
            if response.status_code != 200:
                return response.status_code, b""
            return 200, read_bounded(response, MAX_ANSWER_BYTES)

    def _fail(self, what: str) -> NoReturn:
        # One line per failure, but a storm of the same one is a line a second.
        now = time.monotonic()
        if what != self._last_failure or now - self._logged_at >= _LOG_EVERY_S:
            more = f" (and {self._unlogged} more failed asks)" if self._unlogged else ""
            log.error(
                "the auth backend %s %s: requests it judges get 503 until it answers%s",
                self._shown_url,
                what,
                more,
            )
            self._logged_at, self._unlogged, self._last_failure = now, 0, what
        else:
            self._unlogged += 1
        raise AuthUnavailable(
            "the application's auth backend cannot judge this request now; retry later"
        )


def _forwardable(value: str) -> bool:
    """Whether an HTTP client may send `value` as a header's: printable ASCII and tabs."""
    return all(" " <= c <= "~" or c == "\t" for c in value)
