"""Many appends' scripts sent in one round trip per connection, each reply read as it comes.

A request that publishes to many topics appends to each with `lua/append_events.lua`, one
atomic script per topic. Sent one by one they cost a round trip each; here they go in one
pipeline (not a transaction: each script is its own atomic step and answers alone), on one
Redis (or Sentinel's primary) on one connection, on a Redis Cluster on one connection per
primary of their slots, the primaries at the same time. With `min_replicas`, a `WAIT` ends
each pipeline: it counts the replicas of every write made on its connection before it.

The replies are read one by one off the connection rather than by redis-py's pipeline, which
drops every reply when one is lost: a reply that arrived is its script's answer, and when
the connection fails the scripts whose replies did not arrive (sent, so perhaps run) are
answered with the error, never sent again (no silent retries: `connect.py`). Scripts go by
their SHA (EVALSHA, the script's text is kilobytes); a node that does not know it answers
NOSCRIPT, which ran nothing: those are sent again once after `SCRIPT LOAD` on the same
connection. A reply saying the slot moved (MOVED, ASK, TRYAGAIN) also ran nothing: the
caller sends that one alone, through `redirects.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import gevent
import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from pushsvc.broker.redis.redirects import learn_topology
from pushsvc.broker.redis.script_replies import AppendReply
from pushsvc.broker.redis.scripts import Script
from pushsvc.broker.redis.wire import unavailable
from pushsvc.errors import BrokerUnavailable, RequestError

log = logging.getLogger(__name__)

Arg = str | int | bytes
Call = tuple[list[str], list[Arg]]
"""A script's keys (the first names its slot) and arguments."""
Reply = tuple[Any, int | None]
"""A script's raw reply (or the error answering it), and the replicas its WAIT counted."""

ALONE_ERRORS = (MovedError, AskError, TryAgainError, NoScriptError)
"""Replies of scripts that ran nothing and that the one-script path handles itself."""

_LOST = (redis.ConnectionError, redis.TimeoutError)


def send_scripts(
    client: redis.Redis, script: Script, calls: Sequence[Call], *, wait: tuple[int, int] | None
) -> list[Reply]:
    """Each call's reply, in order: its script's raw reply, or the error that answers it (a
    `redis.RedisError`, or a `RedisClusterException` where no node serves its slot); with
    `wait` (replicas, timeout ms), how many replicas its connection's WAIT counted (None
    when the WAIT failed: the call's reply is then that error)."""
    replies: list[Reply] = [(None, None)] * len(calls)
    by_node: dict[str, tuple[redis.Redis, list[int]]] = {}
    cluster = cast(object, client)
    if isinstance(cluster, RedisCluster):
        for place, (keys, _) in enumerate(calls):
            try:
                node = cluster.get_node_from_key(keys[0])  # type: ignore[no-untyped-call]
                node_client = cluster.get_redis_connection(node)
            except RedisClusterException as exc:  # a slot no node serves
                replies[place] = (exc, None)
                continue
            by_node.setdefault(node.name, (node_client, []))[1].append(place)
    else:
        by_node[""] = (client, list(range(len(calls))))

    def send(node_client: redis.Redis, places: list[int]) -> None:
        got = _exchange(node_client, script, [calls[place] for place in places], wait)
        for place, reply in zip(places, got, strict=True):
            replies[place] = reply
        if any(isinstance(reply, _LOST) for reply, _ in got):
            learn_topology(client)  # a node gone (a failover?): the next call asks anew

    groups = list(by_node.values())
    if len(groups) == 1:
        send(*groups[0])
    elif groups:
        gevent.joinall([gevent.spawn(send, *group) for group in groups], raise_error=True)
    return replies


def append_failure(error: BaseException) -> RequestError:
    """The RequestError a script's error reply answers, as `wire.unavailable` maps it for a
    script sent alone; an error it does not know (a script's bug) refuses that append only."""
    try:
        with unavailable("append_events"):
            raise error
    except RequestError as mapped:
        return mapped
    except Exception as other:  # the one append's failure, logged
        log.error("append script failed: %s", other)
        return BrokerUnavailable("Redis refused the append (see the server's log)")
    raise AssertionError("unreachable")  # pragma: no cover


def _exchange(
    client: redis.Redis, script: Script, calls: Sequence[Call], wait: tuple[int, int] | None
) -> list[Reply]:
    """One pipeline of `calls` on one connection of `client` (then NOSCRIPT's again, once)."""
    pool = client.connection_pool
    try:
        connection = pool.get_connection()
    except _LOST as exc:
        log.warning("redis unavailable during append_events: %s", exc)
        return [(exc, None)] * len(calls)
    try:
        raws = _round(connection, script, calls, wait, load=False)
        again = [place for place, (raw, _) in enumerate(raws) if isinstance(raw, NoScriptError)]
        if again:
            retried = _round(connection, script, [calls[p] for p in again], wait, load=True)
            for place, reply in zip(again, retried, strict=True):
                raws[place] = reply
        return raws
    finally:
        pool.release(connection)


def _round(
    connection: Any,
    script: Script,
    calls: Sequence[Call],
    wait: tuple[int, int] | None,
    *,
    load: bool,
) -> list[Reply]:
    commands: list[tuple[Arg, ...]] = []
    if load:
        commands.append(("SCRIPT", "LOAD", script.text))
    commands += [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
    if wait is not None:
        commands.append(("WAIT", *wait))
    raws: list[Any] = []
    try:
        connection.send_packed_command(connection.pack_commands(commands))
        for _ in commands:
            try:
                raws.append(connection.read_response())
            except ResponseError as exc:
                raws.append(exc)
    except _LOST as exc:
        connection.disconnect()
        log.warning("redis unavailable during append_events: %s", exc)
        raws += [exc] * (len(commands) - len(raws))
    if load:
        raws = raws[1:]
    if wait is None:
        return [(raw, None) for raw in raws]
    waited = raws.pop()
    if isinstance(waited, BaseException):
        # The writes' confirmation was lost: each of them answers as if sent alone.
        return [(raw if isinstance(raw, BaseException) else waited, None) for raw in raws]
    return [(raw, int(waited)) for raw in raws]


def append_replies(
    client: redis.Redis, script: Script, calls: Sequence[Call], wait: tuple[int, int] | None
) -> list[tuple[AppendReply | BaseException, int | None]]:
    """`send_scripts` of the append script: each reply decoded (`AppendReply`), or its error."""
    return [
        (raw if isinstance(raw, BaseException) else AppendReply.decode(raw), replicas)
        for raw, replicas in send_scripts(client, script, calls, wait=wait)
    ]
