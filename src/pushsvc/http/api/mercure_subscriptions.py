"""GET /.well-known/mercure/subscriptions[/{match_type}/{match}[/{subscriber}]] — the Mercure
subscriptions API, on with `--mercure-subscriptions` (`pushsvc.deliver.mercure_active`).

The variables are percent-encoded, `/` included, so the path is read from the request target
as sent (`RAW_URI`, which pushsvc's server and gunicorn give; the decoded `PATH_INFO` cannot
tell an encoded `/` from a separator), each part decoded and encoded again canonically
(`mercure_subscriptions.encode`): the path authorized and looked up is the one subscription
events carry as their topic, however the client encoded it.

Authorized as the specification says: the token must grant `subscribe` on the requested path
taken as a topic (exact matchers compared with it byte for byte, URL patterns resolved
against the hub's URL), else 403 `insufficient_scope`; no token is a 401. A listing carries at
most `MAX_LISTING_BYTES` of documents (then `"truncated": true`); the documents are serialized
once, when their subscription starts, so an answer is a join, and reads across web processes
are scans bounded per call (`pushsvc.broker.redis.mercure_subscriptions`).

Every answer carries the reconciliation cursor: the id of the newest subscription event kept
(`earliest` when there is none), read before the subscriptions are, as the `last-event-id` of
its `Link: <hub>; rel="mercure"` and, as the drafts had it, `lastEventID` in a listing's body.
A subscriber that subscribes to the events with `last_event_id` set to it misses no change.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from flask import Blueprint, Response, request

from pushsvc.deliver.mercure_subscriptions import (
    MAX_LISTING_BYTES,
    SUBSCRIPTIONS_TOPIC,
    collection_path,
    listing,
    subscription_path,
)
from pushsvc.errors import BadRequest
from pushsvc.http.api import mercure
from pushsvc.http.api.context import runtime
from pushsvc.security.mercure_auth import MercureAuthError, bearer_challenge

bp = Blueprint("mercure_subscriptions", __name__)

COLLECTION = mercure.PATH + "/subscriptions"
_MATCH_TYPES = ("exact", "urlpattern")


@bp.get(COLLECTION)
@bp.get(COLLECTION + "/<path:rest>", merge_slashes=False)
def subscriptions(rest: str = "") -> Response:
    rt = runtime()
    active = rt.mercure_subscriptions
    assert active is not None, "registered with --mercure-subscriptions"
    path, single = _canonical_path()
    try:
        grant = mercure._grant(method="GET")
        if grant is None:
            return mercure._unauthorized(bearer_challenge(), "the subscriptions API needs a token")
        if not grant.subscribe_set.matches_any((path,)):
            raise MercureAuthError.insufficient_scope(
                f"the token does not allow subscribing to {path[:200]}"
            )
    except MercureAuthError as exc:
        return mercure._refused(exc)
    last_event_id = mercure.newest_id(SUBSCRIPTIONS_TOPIC)
    if single:
        body = active.store.get(path)
        if body is None:
            return mercure._json("not_found", "no such active subscription", 404)
    else:
        bodies = active.store.bodies(None if path == COLLECTION else path)
        body = listing(path, bodies, MAX_LISTING_BYTES, last_event_id=last_event_id)
    answer = Response(body, 200, mimetype="application/json")
    answer.headers["Link"] = (
        f'<{mercure.hub_url()}>; rel="mercure"; '
        f"{mercure.id_attribute('last-event-id', last_event_id)}; "
        'type="mercure"; content-type="application/json"'
    )
    answer.headers["Cache-Control"] = "no-cache"
    return answer


def _canonical_path() -> tuple[str, bool]:
    """The requested path, its parts encoded canonically, and whether it names one
    subscription. BadRequest for a path of no subscription resource."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not isinstance(raw, str):
        raise BadRequest(
            "the subscriptions API reads the request target as sent; this server gives none"
        )
    target = urlsplit(raw).path if "://" in raw else raw.partition("?")[0]
    rest = target[len(COLLECTION) :] if target.startswith(COLLECTION) else None
    if rest is None or rest in ("", "/"):
        if rest is None:
            raise BadRequest(f"not a subscriptions resource: {target[:200]!r}")
        return COLLECTION, False
    parts = [unquote(p) for p in rest[1:].split("/")]
    if len(parts) not in (2, 3) or not all(parts) or parts[0] not in _MATCH_TYPES:
        raise BadRequest(
            f"a subscriptions resource is {COLLECTION}/{{match_type}}/{{match}}[/{{subscriber}}], "
            f"each part percent-encoded whole ({'/'.join(_MATCH_TYPES)} as match_type)"
        )
    if len(parts) == 3:
        return subscription_path(mercure.PATH, *parts), True
    return collection_path(mercure.PATH, parts[0], parts[1]), False
